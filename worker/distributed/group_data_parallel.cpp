#include "worker/distributed/group_data_parallel.h"

#include <stdexcept>

#include "worker/distributed/frozen_weight_shards.h"
#include "worker/distributed/replicated_optimizer.h"
#include "worker/distributed/sharded_optimizer.h"

namespace relora::distributed {

GroupDataParallel::GroupDataParallel(DataParallelGroup& group, int64_t bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ <= 0) throw std::invalid_argument("data parallel: bucket size must be positive");
}

std::unique_ptr<train::Optimizer> GroupDataParallel::make_optimizer(const train::AdamWOptions& options,
                                                                    bool shard_state) {
  if (shard_state) return std::make_unique<ShardedOptimizer>(group_, vote_, options, bucket_bytes_);
  return std::make_unique<ReplicatedOptimizer>(group_, vote_, options, bucket_bytes_);
}

std::shared_ptr<model::FrozenWeightShards> GroupDataParallel::frozen_weight_shards() {
  return std::make_shared<GroupFrozenWeightShards>(group_);
}

}  // namespace relora::distributed
