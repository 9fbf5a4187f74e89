// The GPU's code, run on the CPU. A GPU worker runs the generic path of the model and the
// optimizer (no CPU fast path applies to CUDA tensors) under bf16 autocast with fp32 masters. These
// tests switch the CPU fast paths off (worker/model/fused_cpu_ops.h) and drive that same code
// through the cases that failed on the first H200 run (issue 16): the Trainer's bf16 steps through
// a merge and an optimizer reset, the chunked head + cross-entropy under autocast with a mix of
// dtypes, and a merge under autocast. What differs from a GPU is only the device calls themselves.
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/model/bf16_merge_bound.h"
#include "tests/test_paths.h"
#include "tests/tiny_job.h"
#include "worker/model/fused_cpu_ops.h"
#include "worker/model/linear_cross_entropy.h"
#include "worker/model/relora_linear.h"
#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace relora::train {
namespace {

using relora::testing::TempDir;

// Low-rank from step 1, merges with magnitude resets at 3, 5 and 7.
const char* kRelora =
    "{mode: relora, rank: 8, alpha: 16, dropout: 0.1, warm_start_steps: 1, cycle_steps: 2, restart_warmup_steps: 1, "
    "optimizer_reset: magnitude, prune_ratio: 0.9}";

struct TrainRun {
  TrainSummary summary;
  std::vector<double> losses;
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
};

TrainRun train(const relora::v1::JobSpec& spec) {
  TrainerOptions opts;
  opts.export_model = false;
  TrainRun run;
  opts.on_step = [&](const StepReport& r) { run.losses.push_back(r.loss); };
  Trainer trainer(spec, opts);
  run.summary = trainer.run();
  for (const auto& p : trainer.model()->named_parameters()) run.parameters.emplace_back(p.key(), p.value().detach().clone());
  return run;
}

// The same 9-step job in `dtype` on the generic path, then on the fast path.
std::pair<TrainRun, TrainRun> generic_and_fast(const std::string& dtype) {
  TempDir generic_dir, fast_dir;
  TrainRun generic;
  {
    model::CpuFastPathsGuard off(false);
    generic = train(relora::testing::tiny_job_spec({kRelora, 9, 2, 0, generic_dir.path(), dtype}));
  }
  TrainRun fast = train(relora::testing::tiny_job_spec({kRelora, 9, 2, 0, fast_dir.path(), dtype}));
  return {std::move(generic), std::move(fast)};
}

// H200: GpuTrainer.StepsOnCudaBf16ThroughAMergeAndFp32LikeCpu died (SIGSEGV) before its first bf16
// step, and GpuLocal's worker failed every attempt with "Expected out tensor to have dtype
// BFloat16, but got float". Here: the generic path's bf16 steps through three merges with
// optimizer resets and an evaluation, fp32 masters for what trains, and losses that agree with the CPU
// fast path's to bf16 accuracy.
TEST(TrainGenericPath, Bf16AutocastStepsThroughMergesAndResetsLikeTheFastPath) {
  const auto [generic, fast] = generic_and_fast("bf16");
  ASSERT_TRUE(generic.summary.completed);
  EXPECT_EQ(generic.summary.merges, 3);
  EXPECT_EQ(generic.summary.optimizer_resets, 3);
  EXPECT_TRUE(std::isfinite(generic.summary.eval_loss));
  ASSERT_EQ(generic.losses.size(), 9u);
  for (size_t i = 0; i < generic.losses.size(); ++i) {
    EXPECT_TRUE(std::isfinite(generic.losses[i])) << "step " << i + 1;
    EXPECT_NEAR(generic.losses[i], fast.losses[i], 2e-2 * fast.losses[i]) << "step " << i + 1;
  }
  // The frozen W of every projection is stored in bf16, everything that trains stays fp32.
  for (const auto& [name, p] : generic.parameters) {
    const bool frozen_w = name.find("_proj.weight") != std::string::npos;
    EXPECT_EQ(p.scalar_type(), frozen_w ? torch::kBFloat16 : torch::kFloat) << name;
  }
}

// fp32: the generic path and the fast path are the same arithmetic up to summation order.
TEST(TrainGenericPath, Fp32GenericPathTrainsLikeTheFastPath) {
  const auto [generic, fast] = generic_and_fast("fp32");
  ASSERT_EQ(generic.losses.size(), fast.losses.size());
  for (size_t i = 0; i < fast.losses.size(); ++i)
    EXPECT_NEAR(generic.losses[i], fast.losses[i], 1e-4 * fast.losses[i]) << "step " << i + 1;
  ASSERT_EQ(generic.parameters.size(), fast.parameters.size());
  for (size_t i = 0; i < fast.parameters.size(); ++i) {
    const double diff = (generic.parameters[i].second - fast.parameters[i].second).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4) << fast.parameters[i].first;
  }
}

// The chunked head + cross-entropy under bf16 autocast, with the hidden state in fp32 or bf16
// and the head an fp32 master, in several row blocks: the loss and both gradients against the
// plain formulation under the same autocast, and gradients in their inputs' dtypes (autograd
// rejects a gradient of another dtype).
TEST(TrainGenericPath, ChunkedHeadUnderAutocastMatchesPlainFormulation) {
  setenv("RELORA_LOSS_BLOCK_ELEMENTS", "2000", 1);  // 20 rows of 100 per block: 3 blocks
  for (auto h_type : {torch::kFloat, torch::kBFloat16}) {
    SCOPED_TRACE(std::string("hidden state ") + c10::toString(h_type));
    torch::manual_seed(11);
    auto h0 = torch::randn({48, 32}).to(h_type);
    auto w0 = torch::randn({100, 32}) * 0.2;
    auto targets = torch::randint(0, 100, {48}, torch::kInt64);
    auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    auto h_ref = h0.clone().requires_grad_(true), w_ref = w0.clone().requires_grad_(true);
    torch::Tensor loss, ref;
    {
      Bf16Autocast autocast(true, torch::kCPU);
      loss = model::linear_cross_entropy(h, w, targets, 1.0 / 48);
      auto logits = torch::mm(h_ref, w_ref.t());  // autocast: bf16
      ref = torch::nn::functional::cross_entropy(logits.to(torch::kFloat), targets);
    }
    loss.backward();
    ref.backward();
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-3 * ref.item<double>());
    ASSERT_EQ(h.grad().scalar_type(), h_type);
    ASSERT_EQ(w.grad().scalar_type(), torch::kFloat);
    auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
      return ((a.to(torch::kFloat) - b.to(torch::kFloat)).norm() / b.to(torch::kFloat).norm()).item<double>();
    };
    EXPECT_LT(rel(h.grad(), h_ref.grad()), 2e-2);
    EXPECT_LT(rel(w.grad(), w_ref.grad()), 2e-2);
  }
  unsetenv("RELORA_LOSS_BLOCK_ELEMENTS");
}

// H200: GpuMerge's bf16 part failed a tolerance relative to |output| (1e-3 + 1.6e-2 |before|;
// exceeded by 0.00307, |diff| = 0.015625). On the CPU the same layer and data exceed that old
// tolerance by 0.00308 (|diff| = 0.0078): the tolerance was wrong, not the merge. The check below
// uses the bound derived in bf16_merge_bound.h, on both devices.
TEST(TrainGenericPath, MergeUnderBf16AutocastWithinTheRoundingBound) {
  model::CpuFastPathsGuard off(false);
  torch::manual_seed(1);
  model::ReloraLinear layer(256, 192);
  layer->enable_lora({16, 16.0, 0.0}, 21);
  {
    torch::NoGradGuard no_grad;
    layer->lora_B.copy_(torch::randn({192, 16}) * 0.05);
  }
  layer->eval();
  auto x = torch::randn({64, 256});
  const auto w = layer->weight.clone(), a = layer->lora_A.clone(), b = layer->lora_B.clone();
  torch::Tensor before, after;
  {
    torch::NoGradGuard no_grad;
    {
      Bf16Autocast autocast(true, torch::kCPU);
      before = layer(x);
    }
    layer->merge_and_reinit(22);  // fp32, outside autocast, as the trainer does
    {
      Bf16Autocast autocast(true, torch::kCPU);
      after = layer(x);
    }
  }
  ASSERT_EQ(before.scalar_type(), torch::kBFloat16);
  const auto bound = relora::testing::bf16_merge_error_bound(x, w, layer->weight, a, b, layer->scale(), before, after);
  const auto diff = (after.to(torch::kFloat) - before.to(torch::kFloat)).abs();
  EXPECT_LE((diff - bound).max().item<double>(), 0.0) << "max |diff| " << diff.max().item<double>();
  EXPECT_GT(diff.max().item<double>(), 0.0);  // bf16 rounding really differs: the check is not vacuous
  EXPECT_LT((diff.norm() / before.to(torch::kFloat).norm()).item<double>(), 1e-2);
  EXPECT_EQ(layer->weight.scalar_type(), torch::kFloat);
}

}  // namespace
}  // namespace relora::train
