// Continued pretraining from a Hugging Face directory (model.from_hf): the first step trains the
// imported model itself, and a resumed job continues from its own checkpoint, not the import.
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/test_paths.h"
#include "tests/tiny_job.h"
#include "tests/train/hf_checkpoint.h"
#include "worker/data/batches.h"
#include "worker/train/data_pipeline.h"
#include "worker/train/hf_config.h"
#include "worker/train/hf_weights.h"
#include "worker/train/model_state.h"
#include "worker/train/trainer.h"

namespace relora::train {
namespace {

using relora::testing::TempDir;

// dropout 0.1 on purpose: at the first step B = 0, so the branch adds exactly nothing either way.
const char* kRelora = "{mode: relora, rank: 8, alpha: 16, dropout: 0.1, cycle_steps: 3, restart_warmup_steps: 1}";

relora::v1::JobSpec from_hf_job(const std::string& ckpt_dir, const std::string& from_hf, int64_t ckpt_every = 0) {
  return relora::testing::tiny_from_hf_spec({kRelora, /*steps=*/6, /*grad_accum=*/2, ckpt_every, ckpt_dir}, from_hf);
}

TEST(TrainFromHf, FirstLossIsTheImportedModelsLoss) {
  TempDir hf, run;
  relora::testing::write_tiny_pretrained(hf.file("pretrained"), /*seed=*/11);
  const auto spec = apply_hf_config(from_hf_job(run.path(), hf.file("pretrained")));
  EXPECT_EQ(spec.data().tokenizer_model(), hf.file("pretrained") + "/tokenizer.model");

  // The loss of the imported model on the first step's micro-batches, evaluated directly.
  model::Llama imported(model_config(spec));
  load_hf_weights(imported, hf.file("pretrained"));
  const DataPipeline data(spec);
  data::BatchGeometry g;
  g.micro_batch = spec.training().micro_batch_size();
  g.grad_accum = spec.training().grad_accum_steps();
  double direct = 0;
  std::vector<int64_t> tokens;
  for (int64_t k = 0; k < g.grad_accum; ++k) {
    data::gather_blocks(data.train_sources(), data.order(), data::micro_batch_samples(g, 0, k, 0), tokens);
    const auto batch = torch::from_blob(tokens.data(), {g.micro_batch, data.seq_len()}, torch::kLong);
    torch::NoGradGuard no_grad;
    direct += imported->loss(batch).item<double>();
  }
  direct /= static_cast<double>(g.grad_accum);

  TrainerOptions opts;
  opts.export_model = false;
  TrainSummary s = Trainer(from_hf_job(run.path(), hf.file("pretrained")), opts).run();
  ASSERT_TRUE(s.completed);
  ASSERT_EQ(s.losses.size(), 6u);
  EXPECT_GE(s.merges, 1);
  EXPECT_EQ(s.losses[0].second, direct);
  std::printf("first loss %.9f, imported model evaluated directly %.9f\n", s.losses[0].second, direct);
}

TEST(TrainFromHf, ResumeContinuesFromTheJobsCheckpointNotTheImport) {
  TempDir hf, a_dir, b_dir;
  relora::testing::write_tiny_pretrained(hf.file("pretrained"), /*seed=*/11);
  TrainerOptions opts;
  opts.export_model = false;
  TrainSummary a = Trainer(from_hf_job(a_dir.path(), hf.file("pretrained"), 2), opts).run();
  ASSERT_TRUE(a.completed);

  TrainerOptions first = opts;
  first.stop_after_step = 2;
  TrainSummary b1 = Trainer(from_hf_job(b_dir.path(), hf.file("pretrained"), 2), first).run();
  ASSERT_EQ(b1.steps, 2);
  // Other weights in the directory now: a resume that imported them again would train another model.
  relora::testing::write_tiny_pretrained(hf.file("pretrained"), /*seed=*/99);
  TrainSummary b2 = Trainer(from_hf_job(b_dir.path(), hf.file("pretrained"), 2), opts).run();
  ASSERT_TRUE(b2.completed);
  ASSERT_EQ(b2.losses.size(), 4u);
  for (size_t i = 0; i < b2.losses.size(); ++i)
    EXPECT_EQ(b2.losses[i].second, a.losses[2 + i].second) << "step " << b2.losses[i].first;
}

TEST(TrainFromHf, NoTokenizerBesideTheModelIsAnErrorNotANewTokenizer) {
  TempDir hf, run;
  relora::testing::write_tiny_pretrained(hf.file("pretrained"), /*seed=*/11);
  std::filesystem::remove(hf.file("pretrained") + "/tokenizer.model");
  try {
    Trainer(from_hf_job(run.path(), hf.file("pretrained")), TrainerOptions{});
    FAIL() << "a from_hf job without a tokenizer trained a new one";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("model.from_hf: " + hf.file("pretrained") + " has no tokenizer.model"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace relora::train
