#include "worker/train/evaluator.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "worker/train/runtime.h"

namespace relora::train {

EvalReport Evaluator::run(model::Llama& model, int64_t step) const {
  const auto& s = settings_;
  const int64_t seq = validation_.seq_len;
  const int64_t max_blocks = std::max<int64_t>(1, s.max_tokens / seq);
  const int64_t blocks = std::min<int64_t>(validation_.num_blocks, max_blocks);
  torch::NoGradGuard no_grad;
  model->eval();
  double nll = 0;
  int64_t count = 0;
  {
    Bf16Autocast autocast(s.bf16, s.device);
    const int64_t mb = s.micro_batch;
    const int64_t stride = mb * s.world;
    const int64_t rounds = s.equal_forwards ? (blocks + stride - 1) / stride : 0;
    for (int64_t first = s.rank * mb, round = 0; first < blocks || round < rounds; first += stride, ++round) {
      const bool counted = first < blocks;  // false: a forward for the other ranks' sake only
      const int64_t base = counted ? first : 0;
      const int64_t n = std::min(mb, blocks - base);
      auto x = torch::empty({n, seq}, torch::kInt64);
      auto* dst = x.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i) validation_.copy_block(base + i, dst + i * seq);
      auto [sum, c] = model->nll_sum(x.to(s.device));
      if (!counted) continue;
      nll += sum;
      count += c;
    }
  }
  model->train();
  if (parallel_) {
    std::vector<torch::Tensor> sums = {torch::tensor({nll, static_cast<double>(count)}, torch::kFloat64).to(s.device)};
    parallel_->all_reduce_sum(sums);
    auto host = sums[0].cpu();
    nll = host[0].item<double>();
    count = static_cast<int64_t>(std::llround(host[1].item<double>()));
  }
  EvalReport report;
  report.step = step;
  report.tokens = count;
  report.loss = count > 0 ? nll / static_cast<double>(count) : 0.0;
  report.perplexity = std::exp(report.loss);
  return report;
}

}  // namespace relora::train
