// The Trainer with training.dtype bf16 in relora mode: the frozen W lives in bf16 from the
// low-rank start, merges round it stochastically from the command's seed, a resume reproduces
// the uninterrupted run bit for bit, and checkpoints cross between fp32 and bf16 jobs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/test_paths.h"
#include "tests/tiny_job.h"
#include "worker/train/checkpoint.h"
#include "worker/train/model_state.h"
#include "worker/train/trainer.h"

namespace relora::train {
namespace {

using relora::testing::TempDir;

// 14 steps: low-rank from step 2, merges at 5, 8 and 11; dropout on the branch.
const char* kRelora =
    "{mode: relora, rank: 8, alpha: 16, dropout: 0.1, warm_start_steps: 2, cycle_steps: 3, restart_warmup_steps: 1}";

relora::v1::JobSpec spec(const std::string& dir, const std::string& dtype, int64_t ckpt_every = 3) {
  return relora::testing::tiny_job_spec({kRelora, /*steps=*/14, /*grad_accum=*/2, ckpt_every, dir, dtype});
}

TrainerOptions quiet() {
  TrainerOptions opts;
  opts.export_model = false;
  return opts;
}

TEST(TrainBf16FrozenWeight, ResumeThroughStochasticMergesReproducesTheRunExactly) {
  TempDir a_dir, b_dir;
  Trainer uninterrupted(spec(a_dir.path(), "bf16"), quiet());
  const TrainSummary a = uninterrupted.run();
  ASSERT_TRUE(a.completed);
  EXPECT_EQ(a.merges, 3);
  for (auto& [name, linear] : uninterrupted.model()->relora_linears()) {
    EXPECT_EQ(linear->weight.scalar_type(), torch::kBFloat16) << name;
    EXPECT_EQ(linear->lora_A.scalar_type(), torch::kFloat) << name;
  }
  TrainerOptions first = quiet();
  first.stop_after_step = 6;  // after the first merge, before the second
  Trainer(spec(b_dir.path(), "bf16"), first).run();
  Trainer resumed(spec(b_dir.path(), "bf16"), quiet());
  const TrainSummary b = resumed.run();
  ASSERT_TRUE(b.completed);
  ASSERT_EQ(b.losses.size(), 8u);
  for (size_t i = 0; i < b.losses.size(); ++i) EXPECT_EQ(b.losses[i].second, a.losses[6 + i].second) << "step " << 7 + i;
  const auto pa = uninterrupted.model()->named_parameters(), pb = resumed.model()->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(torch::equal(pa[i].value(), pb[i].value())) << pa[i].key();
  // The checkpoint holds W as the model does: bf16, exactly.
  const Checkpoint ckpt = load_checkpoint(b_dir.path());
  const auto& saved = ckpt.state.tensors.at("model/layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(saved.scalar_type(), torch::kBFloat16);
}

// A low-rank checkpoint of one precision resumes in a job of the other: fp32 W rounded to nearest
// into bf16, bf16 W widened exactly into fp32; both runs then finish.
TEST(TrainBf16FrozenWeight, CheckpointsCrossBetweenFp32AndBf16Jobs) {
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"fp32", "bf16"}, {"bf16", "fp32"}}) {
    SCOPED_TRACE(from + " checkpoint into a " + to + " job");
    TempDir dir;
    TrainerOptions first = quiet();
    first.stop_after_step = 6;
    Trainer(spec(dir.path(), from), first).run();
    const Checkpoint ckpt = load_checkpoint(dir.path());
    const auto saved = ckpt.state.tensors.at("model/layers.0.mlp.down_proj.weight");
    EXPECT_EQ(saved.scalar_type(), from == "bf16" ? torch::kBFloat16 : torch::kFloat);
    // What the resumed job's model holds, loaded as the Trainer loads it.
    model::Llama model(model_config(spec(dir.path(), to)));
    model::LoraOptions lora{8, 16, 0.1};
    if (to == "bf16") lora.frozen_dtype = torch::kBFloat16;
    load_model_tensors(model, ckpt, lora, /*allow_low_rank=*/true);
    const auto& w = model->layers->ptr<model::BlockImpl>(0)->mlp->down_proj->weight;
    EXPECT_TRUE(torch::equal(w, saved.to(w.scalar_type())));
    const TrainSummary rest = Trainer(spec(dir.path(), to), quiet()).run();
    EXPECT_TRUE(rest.completed);
    EXPECT_EQ(rest.merges, 3);
    for (const auto& [step, loss] : rest.losses) EXPECT_TRUE(std::isfinite(loss)) << "step " << step;
  }
}

// Full-rank training in bf16 keeps every weight an fp32 master: W trains there.
TEST(TrainBf16FrozenWeight, FullRankBf16KeepsFp32Masters) {
  TempDir dir;
  Trainer trainer(relora::testing::tiny_job_spec({"{mode: full}", 4, 2, 0, dir.path(), "bf16"}), quiet());
  ASSERT_TRUE(trainer.run().completed);
  for (const auto& p : trainer.model()->named_parameters()) EXPECT_EQ(p.value().scalar_type(), torch::kFloat) << p.key();
}

}  // namespace
}  // namespace relora::train
