// What a job costs before it runs (relora-worker --dry-run): parameters, FLOPs and the bytes one
// rank holds at its peak, from the resolved spec alone (torch-free: nothing is allocated).
//
// What is counted (docs/benchmarks.md compares it with measured peaks):
//   weights     every parameter the rank holds: fp32 masters of what trains; the frozen W of a
//               low-rank run in bf16 when training.dtype is bf16 (fp32 otherwise), 1/world of it
//               per rank with cluster.shard_frozen_weights
//   gradients   fp32, one per trainable parameter (ZeRO-1 shards the moments, not the gradients)
//   optimizer   AdamW's two fp32 moments per trainable parameter, 1/world with
//               cluster.shard_optimizer
//   activations what one micro-batch's forward keeps for its backward, per token and layer from
//               the tensors this implementation saves (activation_bytes_per_token_layer), or with
//               training.activation_checkpointing one fp32 layer input per layer plus one layer's
//               activations; plus bf16 autocast's cached casts of the trainable matrices
//   runtime     the process itself (libraries, allocator), a measured constant
// The peak: the sum of the above. The backward frees activations while it allocates gradients,
// but the allocator keeps freed memory (the worker's malloc settings, CUDA's caching allocator),
// so the resident peak carries both. The model is built in fp32
// first (W is narrowed at the low-rank start), which can be larger still: that counts too.
// The low-rank phase is what is estimated for lora/relora; a full-rank warm start costs what
// mode full costs (reported too).
#pragma once

#include <cstdint>
#include <string>

#include "relora/v1/job.pb.h"

namespace relora {

struct MemoryEstimate {
  int64_t parameters = 0;            // the model as exported (W, embeddings, norms, head)
  int64_t trainable_parameters = 0;  // in the phase estimated
  int64_t frozen_parameters = 0;     // the frozen W (0 in mode full)
  double flops_per_token = 0;        // executed, forward + backward
  double flops_per_step = 0;         // per optimizer step, all ranks
  int world = 1;
  int64_t weight_bytes = 0;  // per rank, as are the rest
  int64_t gradient_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t activation_bytes = 0;
  int64_t runtime_bytes = 0;
  int64_t construction_bytes = 0;  // the fp32 model before the low-rank start
  int64_t peak_bytes = 0;          // the estimate of the peak (see above)
  int64_t warm_start_peak_bytes = 0;  // a full-rank warm start's peak (0 without one)
};

// `spec` resolved and valid. `cuda`: the runtime term of a CUDA device instead of the host's.
MemoryEstimate estimate_memory(const relora::v1::JobSpec& spec, bool cuda = false);

// The bytes one micro-batch's forward keeps per token and decoder layer (no checkpointing).
double activation_bytes_per_token_layer(const relora::v1::JobSpec& spec);

// A human-readable table of the estimate, with `device_bytes` of memory on the device (0: not
// shown) and whether it fits.
std::string describe_memory_estimate(const MemoryEstimate& e, int64_t device_bytes, const std::string& device);

}  // namespace relora
