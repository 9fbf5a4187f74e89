// End-to-end checks of the trainer on synthetic text (tests/synthetic_text.h) with a tiny model: exact resume,
// cycle counting, the phase switch of a warm start, export, and warm start from a checkpoint.
#include "worker/train/trainer.h"

#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/job_spec.h"
#include "tests/test_paths.h"
#include "tests/tiny_job.h"
#include "worker/train/local_optimizer.h"
#include "worker/train/safetensors.h"

namespace relora::train {
namespace {

namespace fs = std::filesystem;
using relora::testing::TempDir;

// The shared tiny job (tests/tiny_job.h): about a second a run.
relora::v1::JobSpec tiny_spec(const std::string& ckpt_dir, const std::string& relora_yaml,
                              int64_t steps = 12, int64_t ckpt_every = 3) {
  return relora::testing::tiny_job_spec({relora_yaml, steps, /*grad_accum=*/2, ckpt_every, ckpt_dir});
}

const char* kRelora =
    "{mode: relora, rank: 8, alpha: 16, dropout: 0.1, warm_start_steps: 2, cycle_steps: 5, restart_warmup_steps: 1}";

std::vector<torch::Tensor> parameters_of(Trainer& t) {
  std::vector<torch::Tensor> out;
  for (const auto& p : t.model()->parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(TrainTrainer, ResumeReproducesUninterruptedLossesExactly) {
  TempDir a_dir, b_dir;
  TrainerOptions opts;
  opts.export_model = false;

  Trainer uninterrupted(tiny_spec(a_dir.path(), kRelora), opts);
  TrainSummary a = uninterrupted.run();
  ASSERT_TRUE(a.completed);
  ASSERT_EQ(a.losses.size(), 12u);
  EXPECT_EQ(a.merges, 1);  // boundaries: low-rank start at 2, merge at 7

  // Interrupted after step 4 (checkpoint at 3 on schedule, plus one written when stopping)...
  TrainerOptions first = opts;
  first.stop_after_step = 4;
  TrainSummary b1 = Trainer(tiny_spec(b_dir.path(), kRelora), first).run();
  EXPECT_FALSE(b1.completed);
  EXPECT_EQ(b1.steps, 4);
  // ...then resumed in a fresh trainer (a new process would see the same files).
  Trainer resumed(tiny_spec(b_dir.path(), kRelora), opts);
  TrainSummary b2 = resumed.run();
  ASSERT_TRUE(b2.completed);
  ASSERT_EQ(b2.losses.size(), 8u);
  for (size_t i = 0; i < b1.losses.size(); ++i) EXPECT_EQ(b1.losses[i].second, a.losses[i].second) << "step " << i;
  for (size_t i = 0; i < b2.losses.size(); ++i) {
    EXPECT_EQ(b2.losses[i].first, a.losses[4 + i].first);
    EXPECT_EQ(b2.losses[i].second, a.losses[4 + i].second) << "step " << b2.losses[i].first;
  }
  EXPECT_EQ(b2.merges, a.merges);
  EXPECT_EQ(b2.optimizer_resets, a.optimizer_resets);
  auto pa = parameters_of(uninterrupted), pb = parameters_of(resumed);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "parameter " << i;
}

TEST(TrainTrainer, MergesAndResetsEqualCycleBoundariesAndLossFalls) {
  TempDir dir;
  auto spec = tiny_spec(dir.path(),
                        "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: 10, cycle_steps: 10, "
                        "restart_warmup_steps: 2}",
                        /*steps=*/50, /*ckpt_every=*/0);
  std::vector<int64_t> boundary_steps;
  TrainerOptions opts;
  opts.on_event = [&](int64_t step, const std::string& text) {
    if (text.rfind("merge", 0) == 0) boundary_steps.push_back(step);
  };
  Trainer trainer(spec, opts);
  TrainSummary s = trainer.run();
  // Low-rank phase 40 steps, cycle 10: boundaries at 20, 30, 40 (not at the start or the end).
  EXPECT_EQ(s.merges, 3);
  EXPECT_EQ(s.optimizer_resets, 3);
  EXPECT_EQ(boundary_steps, (std::vector<int64_t>{20, 30, 40}));
  EXPECT_LT(s.final_train_loss, s.initial_train_loss - 0.5);
  EXPECT_GT(s.eval_perplexity, 1.0);
  EXPECT_NEAR(s.eval_perplexity, std::exp(s.eval_loss), 1e-9);
  // Trainable now: the factors plus the full-rank embedding, norms and head; no W.
  const auto& optimizer = dynamic_cast<const LocalOptimizer&>(trainer.optimizer());
  for (const auto& e : optimizer.adamw().entries()) {
    EXPECT_EQ(e.name.find("proj.weight"), std::string::npos) << e.name << " should be frozen";
  }
  EXPECT_LT(s.trainable_parameters, s.total_parameters);
  // The export holds merged full-rank weights under Hugging Face names.
  auto exported = read_safetensors(s.export_dir + "/model.safetensors");
  EXPECT_TRUE(exported.tensors.count("model.layers.1.mlp.down_proj.weight"));
  EXPECT_TRUE(exported.tensors.count("lm_head.weight"));
  EXPECT_TRUE(fs::exists(s.export_dir + "/config.json"));
  EXPECT_TRUE(fs::exists(s.export_dir + "/tokenizer.model"));
  // The tokenizer declared as trained (tests/train/export_tokenizer_test.cpp checks it in depth).
  EXPECT_TRUE(fs::exists(s.export_dir + "/tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(s.export_dir + "/special_tokens_map.json"));
}

TEST(TrainTrainer, ResumingWithAnotherTokenizerFailsNamingTheSetting) {
  TempDir dir;
  TrainerOptions opts;
  opts.export_model = false;
  opts.stop_after_step = 3;
  // A job trained with the unigram tokenizer (as every job was before BPE became the default)...
  auto unigram = tiny_spec(dir.path(), "{mode: full}", 6, 3);
  unigram.mutable_data()->set_tokenizer_model_type("unigram");
  EXPECT_FALSE(Trainer(unigram, opts).run().completed);
  // ...resumed without saying so would train on another tokenizer's ids: refused.
  opts.stop_after_step = -1;
  try {
    Trainer(tiny_spec(dir.path(), "{mode: full}", 6, 3), opts).run();
    FAIL() << "resumed with another tokenizer";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("data.tokenizer_model_type: unigram"), std::string::npos) << e.what();
  }
  // With the setting it resumes.
  EXPECT_TRUE(Trainer(unigram, opts).run().completed);
}

TEST(TrainTrainer, WarmStartFromAFullRankCheckpoint) {
  TempDir full_dir, relora_dir;
  TrainerOptions opts;
  opts.export_model = false;
  Trainer full(tiny_spec(full_dir.path(), "{mode: full}", 6, 6), opts);
  full.run();
  auto spec = tiny_spec(relora_dir.path(),
                        "{mode: relora, rank: 4, cycle_steps: 3, restart_warmup_steps: 1, warm_start_checkpoint: \"" +
                            full_dir.path() + "\"}",
                        6, 0);
  Trainer relora(spec, opts);
  // Before training, the ReLoRA model's W equals the full-rank model's.
  auto full_w = full.model()->relora_linears()[0].second->weight;
  EXPECT_TRUE(torch::equal(relora.model()->relora_linears()[0].second->weight, full_w));
  TrainSummary s = relora.run();
  EXPECT_EQ(s.merges, 1);
}

TEST(TrainTrainer, LowRankCheckpointIsRefusedAsWarmStart) {
  TempDir lora_dir, dir;
  TrainerOptions opts;
  opts.export_model = false;
  Trainer(tiny_spec(lora_dir.path(), "{mode: lora, rank: 4}", 3, 3), opts).run();
  auto spec = tiny_spec(dir.path(), "{mode: relora, rank: 4, cycle_steps: 3, warm_start_checkpoint: \"" +
                                        lora_dir.path() + "\"}", 6, 0);
  try {
    Trainer t(spec, opts);
    FAIL() << "a low-rank checkpoint was accepted as a warm start";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(lora_dir.path()), std::string::npos) << e.what();
  }
}


// The coordinator's command decides the re-warm: a controller that answers like the local plan
// but withholds `rewarm` leaves the cosine running through the merges, while the plan's own
// commands restart the warm-up (lr 0 at the first step after each merge, then a ramp).
class WithholdRewarm : public CycleController {
 public:
  explicit WithholdRewarm(const relora::v1::JobSpec& spec) : plan_(spec) {}
  CycleCommand at_boundary(const Boundary& boundary) override {
    CycleCommand cmd = plan_.at_boundary(boundary);
    cmd.rewarm = false;
    return cmd;
  }

 private:
  LocalCycleController plan_;
};

TEST(TrainTrainer, RewarmFollowsTheCommandNotTheWorkersOwnPlan) {
  TempDir planned_dir, withheld_dir;
  const char* relora =
      "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: 2, cycle_steps: 5, restart_warmup_steps: 3}";
  const auto spec = tiny_spec(planned_dir.path(), relora, /*steps=*/17, /*ckpt_every=*/0);
  auto lrs_of = [](const relora::v1::JobSpec& job, CycleController* controller) {
    std::vector<double> lrs;
    TrainerOptions opts;
    opts.export_model = false;
    opts.controller = controller;
    opts.on_step = [&](const StepReport& r) { lrs.push_back(r.lr); };
    Trainer(job, opts).run();
    return lrs;
  };
  const auto planned = lrs_of(spec, nullptr);
  const auto withheld_spec = tiny_spec(withheld_dir.path(), relora, 17, 0);
  WithholdRewarm withhold(withheld_spec);
  const auto withheld = lrs_of(withheld_spec, &withhold);
  ASSERT_EQ(planned.size(), 17u);
  ASSERT_EQ(withheld.size(), 17u);
  // Without restarts the low-rank phase (steps 2..16) is the plain cosine of the same schedule.
  auto no_restarts = spec;
  no_restarts.mutable_relora()->set_restart_warmup_steps(0);
  const JobSchedule cosine(no_restarts);
  // Merges at steps 7 and 12 (low-rank start at 2, cycles of 5); re-warms over 3 steps after each.
  for (int64_t step = 0; step < 17; ++step) {
    const bool rewarming = (step >= 7 && step < 10) || (step >= 12 && step < 15);
    EXPECT_DOUBLE_EQ(withheld[step], cosine.lr(step)) << "step " << step;
    if (rewarming) {
      EXPECT_LT(planned[step], withheld[step]) << "step " << step;
      EXPECT_DOUBLE_EQ(planned[step], JobSchedule(spec).lr(step)) << "step " << step;
    } else {
      EXPECT_DOUBLE_EQ(planned[step], withheld[step]) << "step " << step;
    }
  }
  EXPECT_EQ(planned[7], 0.0);  // the first step after a merge restarts from zero
  EXPECT_EQ(planned[12], 0.0);
}

}  // namespace
}  // namespace relora::train

namespace relora::train {
namespace {

// training.activation_checkpointing through the real loop: dropout on the branch, a warm start,
// merges and optimizer resets; the same losses as without it (the masks are replayed; only the
// summation order of a residual's gradient contributions can differ).
TEST(TrainTrainer, ActivationCheckpointingTrainsLikeThePlainGraph) {
  TempDir plain_dir, checkpointed_dir;
  TrainerOptions opts;
  opts.export_model = false;
  auto plain_spec = tiny_spec(plain_dir.path(), kRelora, 12, 0);
  auto checkpointed_spec = tiny_spec(checkpointed_dir.path(), kRelora, 12, 0);
  EXPECT_FALSE(checkpointed_spec.training().activation_checkpointing());  // the default
  checkpointed_spec.mutable_training()->set_activation_checkpointing(true);
  const TrainSummary plain = Trainer(plain_spec, opts).run();
  Trainer trainer(checkpointed_spec, opts);
  EXPECT_TRUE(trainer.model()->activation_checkpointing());
  const TrainSummary checkpointed = trainer.run();
  ASSERT_EQ(plain.losses.size(), checkpointed.losses.size());
  EXPECT_EQ(checkpointed.losses[0].second, plain.losses[0].second);
  for (size_t i = 0; i < plain.losses.size(); ++i)
    EXPECT_NEAR(checkpointed.losses[i].second, plain.losses[i].second, 1e-5 * plain.losses[i].second) << "step " << i + 1;
  EXPECT_EQ(checkpointed.merges, plain.merges);
}

}  // namespace
}  // namespace relora::train
