// ZeRO stage 1: the AdamW moments and the update sharded across the data-parallel ranks.
//
// The trainable parameters are laid flat and split into buckets, each bucket into one equal chunk
// per rank (FlatPartition: balanced by elements). Every step, bucket by bucket:
//   1. reduce-scatter: each rank packs its gradients into the bucket and receives the sum of every
//      rank's copy of its own chunk (divided by world: the mean gradient of what it owns);
//   2. one small all-reduce carries the loss, the gradients' sum of squares (for clipping: the
//      global norm) and the stop votes;
//   3. AdamW updates this rank's pieces of the parameters in place, from its chunk of gradients
//      and its own moments (about 1/world of them);
//   4. all-gather: every rank's updated chunk goes to every rank, bit for bit, so all ranks hold
//      identical parameters.
// A reduce-scatter plus an all-gather sends what one all-reduce sends (see CollectiveTraffic), so
// ZeRO costs plain data parallelism's traffic while it keeps 1/world of the moments.
//
// Checkpoints: each rank writes its own pieces (no gather); a resume on any world size fills its
// pieces from whichever saved pieces overlap them (optimizer_state.h). When the parameter list
// changes (the low-rank start), the moments of the parameters that stay are moved to their new
// owners through an all-gather, one bucket at a time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "worker/distributed/flat_partition.h"
#include "worker/distributed/process_group.h"
#include "worker/distributed/stop_vote.h"
#include "worker/train/adamw.h"
#include "worker/train/optimizer.h"

namespace relora::distributed {

class ShardedOptimizer final : public train::Optimizer {
 public:
  ShardedOptimizer(DataParallelGroup& group, StopVote& vote, train::AdamWOptions options, int64_t bucket_bytes);

  void set_parameters(const std::vector<train::TrainableParameter>& params) override;
  train::OptimizerStepResult step(double local_loss, double lr, double max_norm) override;
  train::ResetStats reset_low_rank_states(train::ResetMode mode, double ratio, uint64_t seed) override;
  void save_state(train::NamedTensors& common, train::NamedTensors& own) const override;
  void load_state(const train::Checkpoint& ckpt) override;
  int64_t moment_elements() const override;
  int64_t parameter_elements() const override { return partition_.total(); }

  const FlatPartition& partition() const { return partition_; }

 private:
  // A parameter's flat elements (a contiguous 1-D view of it).
  static torch::Tensor flat(const torch::Tensor& t) { return t.view({-1}); }
  // Everyone's chunks of bucket `b` of a flat vector laid out by `partition`, of which this rank
  // holds `pieces` (piece_values(i): the values of pieces[i]: parameters or moments), into `out`
  // (world * chunk elements, index = flat index - bucket begin).
  template <class PieceValues>
  void gather_bucket(const FlatPartition& partition, const std::vector<FlatPiece>& pieces, size_t b,
                     PieceValues piece_values, torch::Tensor& out);

  DataParallelGroup& group_;
  StopVote& vote_;
  const train::AdamWOptions options_;
  const int64_t bucket_bytes_;
  std::vector<train::TrainableParameter> params_;
  std::map<std::string, int64_t> steps_;  // AdamW step counter by parameter (equal on every rank)
  FlatPartition partition_;
  std::vector<FlatPiece> pieces_;  // this rank's; pieces_[i] is adamw_->entries()[i]
  std::unique_ptr<train::AdamW> adamw_;
  std::vector<torch::Tensor> grad_chunks_;  // by bucket: this rank's chunk of the mean gradient
  torch::Tensor scratch_;                   // world * (largest chunk) elements
};

}  // namespace relora::distributed
