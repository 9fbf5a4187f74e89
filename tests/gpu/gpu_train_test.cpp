// GPU checks of the training core (label `gpu`; skipped where no CUDA device is usable). Few
// tests on purpose: each ctest entry is a process that loads LibTorch, and the CPU suite runs them.
//   GpuMerge:   ReLoRA merge/re-init on CUDA keeps the layer's function (fp32, and under bf16
//               autocast with fp32 masters); A is drawn bit-identically to the CPU draw.
//   GpuTrainer: the real Trainer runs bf16-autocast steps on CUDA through a merge with fp32
//               master weights and reports the CUDA allocator's memory figures; its first fp32
//               loss on CUDA equals the CPU's.
//   GpuNccl:    the NCCL process group (RELORA_WITH_CUDA builds) all-reduces with a world of one.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "common/job_spec.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/model/bf16_merge_bound.h"
#include "tests/test_paths.h"
#include "worker/distributed/bucketed_all_reduce.h"
#include "worker/cluster/host_info.h"
#include "worker/distributed/process_group.h"
#include "worker/model/relora_linear.h"
#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace relora {
namespace {

using gpu_testing::TinyJob;
using relora::testing::TempDir;

const torch::Device kCuda(torch::kCUDA, 0);

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kDouble) - b.to(torch::kCPU, torch::kDouble)).abs().max().item<double>();
}

// A CPU layer and a CUDA copy of it (same W), both with a low-rank branch from the same seed and
// the same non-zero B, so that a merge has something to fold in.
struct LayerPair {
  model::ReloraLinear cpu{nullptr}, gpu{nullptr};
};
LayerPair make_layers(int64_t in, int64_t out, int64_t rank, uint64_t seed) {
  torch::manual_seed(1);
  LayerPair p{model::ReloraLinear(in, out), model::ReloraLinear(in, out)};
  {
    torch::NoGradGuard no_grad;
    p.gpu->weight.copy_(p.cpu->weight);
  }
  p.gpu->to(kCuda);
  p.cpu->enable_lora({rank, 16.0, 0.0}, seed);
  p.gpu->enable_lora({rank, 16.0, 0.0}, seed);
  auto b = torch::randn({out, rank}) * 0.05;
  torch::NoGradGuard no_grad;
  p.cpu->lora_B.copy_(b);
  p.gpu->lora_B.copy_(b.to(kCuda));
  p.cpu->eval();
  p.gpu->eval();
  return p;
}

// fp32: the output changes by < 1e-5; A, the re-drawn A and the merged W equal the CPU's.
void check_fp32_merge() {
  auto p = make_layers(64, 48, 8, /*seed=*/11);
  ASSERT_TRUE(p.gpu->lora_A.is_cuda());
  // The A a CUDA layer gets is the CPU draw for the same seed, bit for bit.
  EXPECT_TRUE(torch::equal(p.gpu->lora_A.cpu(), p.cpu->lora_A));

  torch::manual_seed(9);
  auto x = torch::randn({32, 64}).to(kCuda);
  torch::Tensor before, after;
  {
    torch::NoGradGuard no_grad;
    before = p.gpu(x);
    p.gpu->merge_and_reinit(/*seed=*/12);
    after = p.gpu(x);
  }
  // fp32 on the GPU (LibTorch leaves TF32 off for matrix products by default).
  EXPECT_LT(max_abs_diff(before, after), 1e-5);
  EXPECT_GT(before.abs().max().item<double>(), 0.5);  // the comparison is on outputs of order 1

  // The merged W equals the CPU's merge; the re-drawn A equals the CPU's re-draw; B = 0.
  p.cpu->merge_and_reinit(12);
  EXPECT_LT(max_abs_diff(p.gpu->weight, p.cpu->weight), 1e-6);
  EXPECT_TRUE(torch::equal(p.gpu->lora_A.cpu(), p.cpu->lora_A));
  EXPECT_EQ(p.gpu->lora_B.abs().max().item<double>(), 0.0);
  EXPECT_TRUE(p.gpu->weight.is_cuda());
  EXPECT_EQ(p.gpu->weight.scalar_type(), torch::kFloat);
}

// bf16 autocast: the output changes by bf16 rounding only; the masters stay fp32 on the device.
void check_bf16_merge() {
  auto p = make_layers(256, 192, 16, /*seed=*/21);
  torch::manual_seed(10);
  auto x = torch::randn({64, 256}).to(kCuda);
  const auto w = p.gpu->weight.clone(), a = p.gpu->lora_A.clone(), b = p.gpu->lora_B.clone();
  torch::Tensor before, after;
  {
    torch::NoGradGuard no_grad;
    {
      train::Bf16Autocast autocast(true, kCuda);
      before = p.gpu(x);
    }
    p.gpu->merge_and_reinit(/*seed=*/22);  // in fp32, outside autocast, as the trainer does
    {
      train::Bf16Autocast autocast(true, kCuda);
      after = p.gpu(x);
    }
  }
  ASSERT_EQ(before.scalar_type(), torch::kBFloat16) << "autocast did not run the products in bf16";
  // Unchanged up to bf16 rounding, within the bound of tests/model/bf16_merge_bound.h (the same
  // check as the CPU suite's TrainGenericPath.MergeUnderBf16AutocastWithinTheRoundingBound).
  const auto bound = relora::testing::bf16_merge_error_bound(x, w, p.gpu->weight, a, b, p.gpu->scale(), before, after);
  const auto diff = (after.to(torch::kCPU, torch::kFloat) - before.to(torch::kCPU, torch::kFloat)).abs();
  EXPECT_LE((diff - bound).max().item<double>(), 0.0) << "max |diff| " << diff.max().item<double>();
  // Relative size of the change over the whole output: bf16 noise, far below the signal.
  EXPECT_LT((diff.norm() / before.to(torch::kCPU, torch::kFloat).norm()).item<double>(), 1e-2);
  // Master weights stay fp32 on the device.
  for (const auto& t : {p.gpu->weight, p.gpu->lora_A, p.gpu->lora_B}) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat);
    EXPECT_TRUE(t.is_cuda());
  }
}

// One test (one process) for both precisions: every ctest entry costs a LibTorch start-up, and
// the CPU suite runs these as skips.
TEST(GpuMerge, MergeOnCudaKeepsFunctionFp32AndBf16) {
  RELORA_REQUIRE_CUDA();
  {
    SCOPED_TRACE("fp32");
    check_fp32_merge();
  }
  {
    SCOPED_TRACE("bf16 autocast");
    check_bf16_merge();
  }
}

relora::v1::JobSpec spec_of(const TinyJob& job) {
  auto spec = parse_job_spec_yaml(gpu_testing::tiny_job_yaml(job), job.name + ".yaml");
  resolve_job_spec(spec);
  validate_job_spec(spec);
  return spec;
}

// The real Trainer on CUDA, in one test (one process; see GpuMerge):
//   bf16: 5 autocast steps, low-rank from step 1, a merge at step 3; finite losses; frozen W in
//         bf16, every trainable parameter an fp32 master on the device;
//   fp32: the first loss on CUDA equals the CPU's for the same spec.
TEST(GpuTrainer, StepsOnCudaBf16ThroughAMergeAndFp32LikeCpu) {
  TempDir dir;
  TinyJob bf16;
  bf16.tok_path = dir.file("train.tok");
  bf16.checkpoint_dir = dir.file("run-bf16");
  bf16.dtype = "bf16";
  bf16.relora = "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: 1, cycle_steps: 2, "
                "restart_warmup_steps: 1}";
  bf16.steps = 5;
  TinyJob fp32 = bf16;
  fp32.checkpoint_dir = dir.file("run-fp32");
  fp32.dtype = "fp32";
  fp32.relora = "{mode: full}";
  fp32.steps = 2;
  gpu_testing::write_random_tokens(bf16.tok_path, 512, 40000);
  // The specs are checked on every machine: one that drifts from the validator fails in CI too.
  const auto bf16_spec = spec_of(bf16);
  const auto fp32_spec = spec_of(fp32);
  RELORA_REQUIRE_CUDA();

  {
    SCOPED_TRACE("bf16");
    train::TrainerOptions opts;
    opts.device = kCuda;
    opts.save_checkpoints = false;
    opts.export_model = false;
    std::vector<double> losses;
    std::vector<train::StepReport> reports;
    opts.on_step = [&](const train::StepReport& r) {
      losses.push_back(r.loss);
      reports.push_back(r);
    };
    train::Trainer trainer(bf16_spec, opts);
    const auto summary = trainer.run();
    EXPECT_TRUE(summary.completed);
    EXPECT_EQ(summary.steps, 5);
    EXPECT_EQ(summary.merges, 1);
    ASSERT_EQ(losses.size(), 5u);
    for (double l : losses) {
      EXPECT_TRUE(std::isfinite(l)) << "loss " << l;
      // Random ids over 512 tokens: the loss stays near ln(512) = 6.24 for a few steps.
      EXPECT_NEAR(l, std::log(512.0), 1.5);
    }
    // On the device: the frozen W of every projection in bf16 (low-rank phase), every trainable
    // parameter an fp32 master (A, B, embeddings, norms, head).
    int checked = 0;
    for (const auto& p : trainer.model()->named_parameters()) {
      EXPECT_TRUE(p.value().is_cuda()) << p.key();
      const bool frozen_w = !p.value().requires_grad();
      EXPECT_EQ(p.value().scalar_type(), frozen_w ? torch::kBFloat16 : torch::kFloat) << p.key();
      ++checked;
    }
    EXPECT_GT(checked, 10);
    // The CUDA memory figures the worker exports (relora_worker_device_memory_*_bytes).
    for (const auto& r : reports) {
      EXPECT_GT(r.device_allocated_bytes, 0) << "step " << r.step;
      EXPECT_GE(r.device_reserved_bytes, r.device_allocated_bytes) << "step " << r.step;
      EXPECT_GE(r.device_peak_bytes, r.device_allocated_bytes) << "step " << r.step;
    }
  }
  {
    SCOPED_TRACE("fp32 CUDA vs CPU");
    auto first_loss = [&](torch::Device device) {
      train::TrainerOptions opts;
      opts.device = device;
      opts.save_checkpoints = false;
      opts.export_model = false;
      double loss = NAN;
      opts.on_step = [&](const train::StepReport& r) {
        if (r.step == 1) loss = r.loss;
      };
      train::Trainer(fp32_spec, opts).run();
      return loss;
    };
    const double cpu = first_loss(torch::kCPU);
    const double gpu = first_loss(kCuda);
    // Same seed, same init (drawn on the CPU), same batch: only summation order differs.
    EXPECT_NEAR(gpu, cpu, 1e-4 * std::abs(cpu));
  }
}

TEST(GpuNccl, AllReduceWithAWorldOfOne) {
#ifndef RELORA_WITH_CUDA
  GTEST_SKIP() << "built without RELORA_WITH_CUDA (no NCCL process group in this build); "
               << gpu_testing::kNoCudaMessage;
#else
  RELORA_REQUIRE_CUDA();
  distributed::GroupOptions g;
  g.store_host = "127.0.0.1";
  g.store_port = cluster::find_free_port();
  g.rank = 0;
  g.world = 1;
  g.local_host = "127.0.0.1";
  g.backend = distributed::Backend::kNccl;
  g.rendezvous_timeout = std::chrono::seconds(30);
  g.collective_timeout = std::chrono::seconds(60);
  distributed::DataParallelGroup group(g);

  // The sum over one rank is the tensor itself, for every dtype the trainer reduces.
  std::vector<at::Tensor> t = {torch::arange(6, torch::kFloat32).to(kCuda),
                               torch::full({3}, 0.25, torch::kFloat64).to(kCuda),
                               torch::full({5}, 1.5, torch::kBFloat16).to(kCuda)};
  std::vector<at::Tensor> expected;
  for (const auto& x : t) expected.push_back(x.clone());
  group.all_reduce_sum(t);
  torch::cuda::synchronize();
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_TRUE(t[i].is_cuda());
    EXPECT_TRUE(torch::equal(t[i].cpu(), expected[i].cpu())) << "tensor " << i;
  }

  // The replicated optimizer's path: bucketed mean over NCCL.
  distributed::BucketedAllReduce all_reduce(group);
  std::vector<torch::Tensor> grads = {torch::full({4, 4}, 2.0, torch::kFloat32).to(kCuda),
                                      torch::full({1}, 3.0, torch::kFloat64).to(kCuda)};
  all_reduce.mean(grads);
  EXPECT_TRUE(torch::equal(grads[0].cpu(), torch::full({4, 4}, 2.0, torch::kFloat32)));
  EXPECT_EQ(grads[1].item<double>(), 3.0);
  EXPECT_EQ(all_reduce.collectives(), 2);

  // The sharded optimizer's path: reduce-scatter (an all-to-all) and all-gather over NCCL.
  auto input = torch::arange(8, torch::kFloat32).to(kCuda);
  auto shard = torch::empty({8}, torch::kFloat32).to(kCuda);
  group.reduce_scatter_sum(input, shard);
  auto gathered = torch::empty({8}, torch::kFloat32).to(kCuda);
  group.all_gather(shard, gathered);
  torch::cuda::synchronize();
  EXPECT_TRUE(torch::equal(gathered.cpu(), torch::arange(8, torch::kFloat32)));
#endif
}

}  // namespace
}  // namespace relora
