#include "worker/distributed/sharded_optimizer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include <torch/torch.h>

#include "worker/train/optimizer_state.h"

namespace relora::distributed {

using train::AdamW;
using train::TrainableParameter;

ShardedOptimizer::ShardedOptimizer(DataParallelGroup& group, StopVote& vote, train::AdamWOptions options,
                                   int64_t bucket_bytes)
    : group_(group), vote_(vote), options_(options), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ <= 0) throw std::invalid_argument("sharded optimizer: bucket size must be positive");
  adamw_ = std::make_unique<AdamW>(options_);
}

template <class PieceValues>
void ShardedOptimizer::gather_bucket(const FlatPartition& partition, const std::vector<FlatPiece>& pieces, size_t b,
                                     PieceValues piece_values, torch::Tensor& out) {
  const FlatBucket& bucket = partition.buckets()[b];
  auto mine = torch::zeros({bucket.chunk}, scratch_.options());
  for (size_t i = 0; i < pieces.size(); ++i) {
    const FlatPiece& p = pieces[i];
    if (p.bucket == b) mine.slice(0, p.chunk_offset, p.chunk_offset + p.length).copy_(piece_values(i));
  }
  out = scratch_.slice(0, 0, bucket.chunk * partition.world());
  group_.all_gather(mine, out);
}

void ShardedOptimizer::set_parameters(const std::vector<TrainableParameter>& params) {
  torch::NoGradGuard no_grad;
  const auto same_list = [&] {
    if (params.size() != params_.size()) return false;
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].name != params_[i].name || !params[i].tensor.is_same(params_[i].tensor)) return false;
    return true;
  };
  if (same_list()) return;
  for (const auto& p : params) {
    if (!p.tensor.is_contiguous() || p.tensor.scalar_type() != params.front().tensor.scalar_type() ||
        p.tensor.device() != params.front().tensor.device())
      throw std::invalid_argument("sharded optimizer: parameter '" + p.name +
                                  "' is not contiguous or differs in dtype or device from the first");
  }
  // The old layout, kept until the moments of the parameters that stay have moved.
  const FlatPartition old_partition = partition_;
  const std::vector<FlatPiece> old_pieces = pieces_;
  const std::vector<TrainableParameter> old_params = params_;
  std::unique_ptr<AdamW> old_adamw = std::move(adamw_);

  std::vector<int64_t> numels;
  for (const auto& p : params) numels.push_back(p.tensor.numel());
  const auto options = params.empty() ? torch::TensorOptions(torch::kFloat) : params.front().tensor.options();
  const int64_t element = static_cast<int64_t>(torch::elementSize(c10::typeMetaToScalarType(options.dtype())));
  partition_ = FlatPartition(numels, group_.world(), std::max<int64_t>(1, bucket_bytes_ / element));
  pieces_ = partition_.pieces(group_.rank());
  params_ = params;
  std::map<std::string, int64_t> steps;
  for (const auto& p : params_) steps[p.name] = steps_.count(p.name) ? steps_[p.name] : 0;
  steps_ = std::move(steps);

  grad_chunks_.clear();
  int64_t largest = 0;
  for (const auto& b : partition_.buckets()) {
    grad_chunks_.push_back(torch::zeros({b.chunk}, options.requires_grad(false)));
    largest = std::max(largest, b.chunk);
  }
  for (const auto& b : old_partition.buckets()) largest = std::max(largest, b.chunk);
  scratch_ = torch::empty({largest * group_.world()}, options.requires_grad(false));

  adamw_ = std::make_unique<AdamW>(options_);
  for (const auto& piece : pieces_) {
    const auto& p = params_[piece.param];
    adamw_->add_piece(p.name, flat(p.tensor).slice(0, piece.offset, piece.offset + piece.length),
                      grad_chunks_[piece.bucket].slice(0, piece.chunk_offset, piece.chunk_offset + piece.length),
                      p.low_rank, p.tensor.dim() >= 2);
    adamw_->mutable_entries().back().step = steps_[p.name];
  }

  // Moments of the parameters that stay: every old bucket gathered whole (two moments, one bucket
  // at a time), each new piece of a kept parameter copying what overlaps it.
  std::map<std::string, int64_t> old_offset;
  for (size_t i = 0; i < old_params.size(); ++i) old_offset[old_params[i].name] = old_partition.param_offsets()[i];
  bool any_kept = false;
  for (const auto& p : params_) any_kept = any_kept || old_offset.count(p.name);
  if (!any_kept || !old_adamw) return;
  for (size_t b = 0; b < old_partition.buckets().size(); ++b) {
    const FlatBucket& bucket = old_partition.buckets()[b];
    for (const char* moment : {train::kExpAvg, train::kExpAvgSq}) {
      const bool first = moment == train::kExpAvg;
      torch::Tensor full;
      gather_bucket(old_partition, old_pieces, b, [&](size_t i) {
        const auto& e = old_adamw->entries()[i];
        return first ? e.exp_avg : e.exp_avg_sq;
      }, full);
      for (size_t i = 0; i < pieces_.size(); ++i) {
        const FlatPiece& piece = pieces_[i];
        const auto it = old_offset.find(params_[piece.param].name);
        if (it == old_offset.end()) continue;
        const int64_t s = std::max(bucket.begin, it->second + piece.offset);
        const int64_t e = std::min(bucket.end, it->second + piece.offset + piece.length);
        if (s >= e) continue;
        auto& entry = adamw_->mutable_entries()[i];
        auto& target = first ? entry.exp_avg : entry.exp_avg_sq;
        const int64_t at = s - it->second - piece.offset;
        target.slice(0, at, at + (e - s)).copy_(full.slice(0, s - bucket.begin, e - bucket.begin));
      }
    }
  }
}

train::OptimizerStepResult ShardedOptimizer::step(double local_loss, double lr, double max_norm) {
  torch::NoGradGuard no_grad;
  const int world = group_.world();
  const auto& offsets = partition_.param_offsets();
  using Clock = std::chrono::steady_clock;
  double communication = 0;
  const auto timed = [&](auto&& collective) {
    const auto start = Clock::now();
    collective();
    communication += std::chrono::duration<double>(Clock::now() - start).count();
  };
  // ---- 1. reduce-scatter the gradients, bucket by bucket --------------------------------------
  for (const auto& p : params_)
    if (!p.tensor.grad().defined())
      throw std::runtime_error("sharded optimizer: parameter '" + p.name + "' got no gradient this step");
  for (size_t b = 0; b < partition_.buckets().size(); ++b) {
    const FlatBucket& bucket = partition_.buckets()[b];
    auto input = scratch_.slice(0, 0, bucket.chunk * world);
    input.slice(0, bucket.size()).zero_();  // the last chunk's padding
    for (size_t i = 0; i < params_.size(); ++i) {
      const int64_t s = std::max(bucket.begin, offsets[i]);
      const int64_t e = std::min(bucket.end, offsets[i] + params_[i].tensor.numel());
      if (s >= e) continue;
      input.slice(0, s - bucket.begin, e - bucket.begin)
          .copy_(params_[i].tensor.grad().reshape({-1}).slice(0, s - offsets[i], e - offsets[i]));
    }
    timed([&] { group_.reduce_scatter_sum(input, grad_chunks_[b]); });
    grad_chunks_[b].div_(static_cast<double>(world));
  }
  for (auto& p : params_) p.tensor.mutable_grad().reset();
  // ---- 2. loss, squared norm and stop votes in one small all-reduce ---------------------------
  std::vector<torch::Tensor> control = {
      torch::tensor({local_loss, adamw_->grad_sum_of_squares(), vote_.local_vote()}, torch::kFloat64)
          .to(scratch_.device())};
  timed([&] { group_.all_reduce_sum(control); });
  const auto sums = control[0].cpu();
  train::OptimizerStepResult result;
  result.loss = sums[0].item<double>() / world;
  result.grad_norm = std::sqrt(sums[1].item<double>());
  vote_.record(sums[2].item<double>());
  // ---- 3. AdamW on this rank's pieces, clipping folded in (as AdamW::clip_and_step) ------------
  const double coef = max_norm / (result.grad_norm + 1e-6);
  adamw_->step(lr, coef < 1.0 ? coef : 1.0);
  for (auto& [name, steps] : steps_) ++steps;
  // ---- 4. all-gather the updated parameters --------------------------------------------------
  for (size_t b = 0; b < partition_.buckets().size(); ++b) {
    const FlatBucket& bucket = partition_.buckets()[b];
    torch::Tensor full;
    timed([&] { gather_bucket(partition_, pieces_, b, [&](size_t i) { return adamw_->entries()[i].param; }, full); });
    for (size_t i = 0; i < params_.size(); ++i) {
      const int64_t s = std::max(bucket.begin, offsets[i]);
      const int64_t e = std::min(bucket.end, offsets[i] + params_[i].tensor.numel());
      if (s >= e) continue;
      flat(params_[i].tensor).slice(0, s - offsets[i], e - offsets[i]).copy_(full.slice(0, s - bucket.begin, e - bucket.begin));
    }
  }
  result.communication_seconds = communication;
  return result;
}

train::ResetStats ShardedOptimizer::reset_low_rank_states(train::ResetMode mode, double ratio, uint64_t seed) {
  train::ResetStats stats;
  if (mode == train::ResetMode::kNone) return stats;
  torch::NoGradGuard no_grad;
  // A magnitude reset ranks each parameter's |exp_avg| whole: every rank gathers exp_avg (a full
  // copy for the moment; resets happen once per cycle).
  torch::Tensor full_exp_avg;
  const bool whole = mode == train::ResetMode::kMagnitude && ratio < 1.0;
  if (whole) {
    full_exp_avg = torch::empty({partition_.total()}, scratch_.options());
    for (size_t b = 0; b < partition_.buckets().size(); ++b) {
      const FlatBucket& bucket = partition_.buckets()[b];
      torch::Tensor gathered;
      gather_bucket(partition_, pieces_, b, [&](size_t i) { return adamw_->entries()[i].exp_avg; }, gathered);
      full_exp_avg.slice(0, bucket.begin, bucket.end).copy_(gathered.slice(0, 0, bucket.size()));
    }
  }
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto& offsets = partition_.param_offsets();
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    if (!p.low_rank || p.tensor.numel() == 0) continue;
    // Drawn (or ranked) whole on every rank, in parameter order, as an unsharded AdamW does: each
    // rank then applies its pieces of the same mask.
    torch::Tensor mask;
    if (mode != train::ResetMode::kZero && ratio < 1.0) {
      const auto like = whole ? full_exp_avg.slice(0, offsets[i], offsets[i] + p.tensor.numel()).view(p.tensor.sizes())
                              : p.tensor;
      mask = flat(train::reset_mask(mode, ratio, like, gen));
    }
    for (size_t j = 0; j < pieces_.size(); ++j) {
      if (pieces_[j].param != i) continue;
      auto& e = adamw_->mutable_entries()[j];
      stats.total += 2 * e.exp_avg.numel();
      if (!mask.defined()) {
        e.exp_avg.zero_();
        e.exp_avg_sq.zero_();
        stats.zeroed += 2 * e.exp_avg.numel();
        continue;
      }
      const auto piece_mask = mask.slice(0, pieces_[j].offset, pieces_[j].offset + pieces_[j].length);
      e.exp_avg.masked_fill_(piece_mask, 0.0);
      e.exp_avg_sq.masked_fill_(piece_mask, 0.0);
      stats.zeroed += 2 * piece_mask.sum().item<int64_t>();
    }
  }
  std::vector<torch::Tensor> counts = {
      torch::tensor({static_cast<double>(stats.zeroed), static_cast<double>(stats.total)}, torch::kFloat64)
          .to(scratch_.device())};
  group_.all_reduce_sum(counts);
  const auto host = counts[0].cpu();
  stats.zeroed = static_cast<int64_t>(std::llround(host[0].item<double>()));
  stats.total = static_cast<int64_t>(std::llround(host[1].item<double>()));
  return stats;
}

void ShardedOptimizer::save_state(train::NamedTensors& common, train::NamedTensors& own) const {
  for (const auto& p : params_) common.emplace_back(train::step_key(p.name), torch::tensor({steps_.at(p.name)}, torch::kInt64));
  for (size_t j = 0; j < pieces_.size(); ++j) {
    const auto& e = adamw_->entries()[j];
    own.emplace_back(train::moment_key(e.name, train::kExpAvg, pieces_[j].offset), e.exp_avg);
    own.emplace_back(train::moment_key(e.name, train::kExpAvgSq, pieces_[j].offset), e.exp_avg_sq);
  }
}

void ShardedOptimizer::load_state(const train::Checkpoint& ckpt) {
  for (auto& p : params_) steps_[p.name] = train::load_step_counter(ckpt, p.name);
  std::vector<train::MomentRange> ranges;
  for (size_t j = 0; j < pieces_.size(); ++j) {
    auto& e = adamw_->mutable_entries()[j];
    e.step = steps_[e.name];
    ranges.push_back({e.name, pieces_[j].offset, e.exp_avg, e.exp_avg_sq});
  }
  train::load_moment_ranges(ckpt, ranges);
}

int64_t ShardedOptimizer::moment_elements() const {
  int64_t n = 0;
  for (const auto& piece : pieces_) n += piece.length;
  return n;
}

}  // namespace relora::distributed
