// A job over a weighted mixture of a `relora tokenize` index and a text file: exact resume, and
// per-source token counts that follow the weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "common/job_spec.h"
#include "tests/data/corpus_test_support.h"
#include "tests/test_paths.h"
#include "tests/tiny_job.h"
#include "worker/data/corpus_tokenizer.h"
#include "worker/train/trainer.h"

namespace relora::train {
namespace {

using relora::testing::TempDir;

relora::v1::JobSpec mixture_spec(const std::string& index_dir, const std::string& text, const std::string& ckpt_dir) {
  const std::string yaml = R"(
name: mixture
model: {hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 128, vocab_size: 512}
data:
  train: [{path: ")" + index_dir + R"(", weight: 0.7}, {path: ")" + text + R"(", weight: 0.3}]
  tokenizer_model: ")" + relora::testing::synthetic_tokenizer() + R"("
  seq_len: 32
  cache_dir: ")" + ckpt_dir + R"(/cache"
training: {steps: 10, micro_batch_size: 4, grad_accum_steps: 2, lr: 0.003, warmup_steps: 2, seed: 7}
relora: {mode: relora, rank: 8, alpha: 16, warm_start_steps: 2, cycle_steps: 4, restart_warmup_steps: 1}
eval: {every_steps: 0, max_tokens: 1024}
checkpoint: {dir: ")" + ckpt_dir + R"(", every_steps: 3, keep: 10}
)";
  return relora::testing::valid_job_spec(yaml, "mixture.yaml");
}

TEST(TrainMixture, ResumeAcrossAWeightedMixtureReproducesTheLosses) {
  TempDir dir;
  const auto docs = relora::testing::synthetic_documents();
  const size_t half = docs.size() / 2;
  // Source 1: the first half, pre-tokenized into an index; source 2: the second half as text.
  relora::testing::write_bytes(dir.file("first.jsonl"), relora::testing::jsonl({docs.begin(), docs.begin() + half}));
  std::string text;
  for (size_t i = half; i < docs.size(); ++i) text += docs[i] + "\n<|endoftext|>\n";
  relora::testing::write_bytes(dir.file("second.txt"), text);
  data::TokenizeOptions t;
  t.inputs = {dir.file("first.jsonl")};
  t.out_dir = dir.file("first-tokens");
  t.tokenizer_model = relora::testing::synthetic_tokenizer();
  t.shard_tokens = 3000;  // many shards: blocks straddle shard ends
  data::tokenize_corpus(t, [](const data::TokenizeProgress&) {});

  TrainerOptions opts;
  opts.export_model = false;
  std::vector<StepReport> reports;
  TrainerOptions watched = opts;
  watched.on_step = [&](const StepReport& r) { reports.push_back(r); };
  const TrainSummary a = Trainer(mixture_spec(dir.file("first-tokens"), dir.file("second.txt"), dir.file("a")), watched).run();
  ASSERT_TRUE(a.completed);

  // 10 steps x 8 samples x 32 tokens, split 0.7 / 0.3 (whole windows are exact; 80 samples are
  // part of one shuffled window, so allow a few samples either way).
  std::map<std::string, int64_t> tokens(reports.back().source_tokens.begin(), reports.back().source_tokens.end());
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens[dir.file("first-tokens")] + tokens[dir.file("second.txt")], 10 * 8 * 32);
  EXPECT_NEAR(static_cast<double>(tokens[dir.file("first-tokens")]) / (10 * 8 * 32), 0.7, 0.1);

  TrainerOptions first = opts;
  first.stop_after_step = 4;
  const TrainSummary b1 = Trainer(mixture_spec(dir.file("first-tokens"), dir.file("second.txt"), dir.file("b")), first).run();
  const TrainSummary b2 = Trainer(mixture_spec(dir.file("first-tokens"), dir.file("second.txt"), dir.file("b")), opts).run();
  ASSERT_TRUE(b2.completed);
  ASSERT_EQ(b1.losses.size() + b2.losses.size(), a.losses.size());
  for (size_t i = 0; i < b1.losses.size(); ++i) EXPECT_EQ(b1.losses[i].second, a.losses[i].second) << "step " << i;
  for (size_t i = 0; i < b2.losses.size(); ++i)
    EXPECT_EQ(b2.losses[i].second, a.losses[b1.losses.size() + i].second) << "step " << b2.losses[i].first;
}

}  // namespace
}  // namespace relora::train
