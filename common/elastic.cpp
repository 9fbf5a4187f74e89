#include "common/elastic.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace relora {
namespace {

int64_t micro_batches_per_step(const relora::v1::JobSpec& spec) {
  return static_cast<int64_t>(spec.training().grad_accum_steps()) * spec.cluster().workers();
}

}  // namespace

int elastic_world_size(const relora::v1::JobSpec& spec, int available) {
  const int most = std::min(available, spec.cluster().workers());
  const int least = std::max(1, spec.cluster().min_workers());
  for (int world = most; world >= least; --world)
    if (micro_batches_per_step(spec) % world == 0) return world;
  return 0;
}

relora::v1::JobSpec spec_for_world(relora::v1::JobSpec spec, int world) {
  const int64_t micro_batches = micro_batches_per_step(spec);
  if (world < 1 || micro_batches % world != 0)
    throw std::invalid_argument("a world of " + std::to_string(world) + " ranks cannot share " +
                                std::to_string(micro_batches) + " micro-batches per step evenly");
  spec.mutable_training()->set_grad_accum_steps(static_cast<int32_t>(micro_batches / world));
  spec.mutable_cluster()->set_workers(world);
  spec.mutable_cluster()->set_min_workers(std::min(spec.cluster().min_workers(), world));
  return spec;
}

}  // namespace relora
