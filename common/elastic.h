// Elastic world sizes: on how many ranks a job may run, and the spec each rank gets for that
// world. The global batch (micro_batch_size * grad_accum_steps * cluster.workers) never changes:
// a smaller world accumulates more micro-batches per rank, so the sample order (worker/data/
// batches.h) and the learning-rate schedule are those of the full-size run, and a restart on
// fewer ranks neither skips nor repeats samples.
#pragma once

#include "relora/v1/job.pb.h"

namespace relora {

// The largest world in [cluster.min_workers, cluster.workers] that is <= available and divides
// grad_accum_steps * cluster.workers; 0 when there is none.
int elastic_world_size(const relora::v1::JobSpec& spec, int available);

// `spec` for a run on `world` ranks: cluster.workers = world and grad_accum_steps scaled so the
// global batch is unchanged. Requires a world elastic_world_size could return.
relora::v1::JobSpec spec_for_world(relora::v1::JobSpec spec, int world);

}  // namespace relora
