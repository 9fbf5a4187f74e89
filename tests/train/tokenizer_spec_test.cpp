// data.tokenizer_model_type in the job spec: what the validation accepts, and that the data
// pipeline trains the kind of tokenizer it names (docs/tokenizer.md).
#include <gtest/gtest.h>

#include <string>

#include "common/job_spec.h"
#include "tests/synthetic_text.h"
#include "tests/test_paths.h"
#include "worker/train/data_pipeline.h"

namespace relora::train {
namespace {

using relora::testing::TempDir;

// A job on the tests' synthetic text with `data_extra` added to its data section.
std::string job_yaml(const std::string& data_extra, const std::string& cache_dir, int vocab = 512) {
  return "name: tok\n"
         "model: {hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 128, vocab_size: " +
         std::to_string(vocab) +
         "}\n"
         "data:\n"
         "  train: [\"" +
         relora::testing::synthetic_text_file() + "\"]\n  seq_len: 32\n  cache_dir: \"" + cache_dir + "\"\n" +
         data_extra +
         "training: {steps: 2}\n"
         "relora: {mode: full}\n";
}

std::string error_of(const std::string& yaml) {
  try {
    auto spec = parse_job_spec_yaml(yaml, "tok.yaml");
    resolve_job_spec(spec);
    validate_job_spec(spec);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

relora::v1::JobSpec valid_spec(const std::string& yaml) {
  auto spec = parse_job_spec_yaml(yaml, "tok.yaml");
  resolve_job_spec(spec);
  validate_job_spec(spec);
  return spec;
}

TEST(TrainTokenizerSpec, ModelTypeIsBpeOrUnigramAndOnlyForATrainedTokenizer) {
  TempDir dir;
  EXPECT_EQ(error_of(job_yaml("", dir.path())), "");
  EXPECT_EQ(error_of(job_yaml("  tokenizer_model_type: bpe\n", dir.path())), "");
  EXPECT_EQ(error_of(job_yaml("  tokenizer_model_type: unigram\n", dir.path())), "");
  const std::string wrong = error_of(job_yaml("  tokenizer_model_type: wordpiece\n", dir.path()));
  EXPECT_EQ(wrong.rfind("data.tokenizer_model_type: 'wordpiece'", 0), 0u) << wrong;
  const std::string loaded =
      error_of(job_yaml("  tokenizer_model: spm.model\n  tokenizer_model_type: unigram\n", dir.path()));
  EXPECT_EQ(loaded.rfind("data.tokenizer_model_type: ", 0), 0u) << loaded;
  EXPECT_NE(loaded.find("data.tokenizer_model brings its own"), std::string::npos) << loaded;
}

TEST(TrainTokenizerSpec, BpeNeedsAVocabularyOfAtLeast384) {
  TempDir dir;
  const std::string small = error_of(job_yaml("", dir.path(), 256));
  EXPECT_EQ(small.rfind("data.tokenizer_vocab_size: 256", 0), 0u) << small;
  EXPECT_NE(small.find("tokenizer_model_type: unigram"), std::string::npos) << small;
  EXPECT_EQ(error_of(job_yaml("  tokenizer_model_type: unigram\n", dir.path(), 256)), "");
  EXPECT_EQ(error_of(job_yaml("", dir.path(), 384)), "");
}

TEST(TrainTokenizerSpec, TheDataPipelineTrainsTheNamedKind) {
  TempDir dir;
  const DataPipeline bpe(valid_spec(job_yaml("", dir.path())));
  ASSERT_NE(bpe.tokenizer(), nullptr);
  EXPECT_EQ(bpe.tokenizer()->describe().model_type, 2);
  EXPECT_EQ(bpe.eos_id(), 2);
  EXPECT_EQ(bpe.pad_id(), -1);
  const DataPipeline unigram(valid_spec(job_yaml("  tokenizer_model_type: unigram\n", dir.path())));
  ASSERT_NE(unigram.tokenizer(), nullptr);
  EXPECT_EQ(unigram.tokenizer()->describe().model_type, 1);
  EXPECT_EQ(unigram.eos_id(), 1);
  EXPECT_EQ(unigram.pad_id(), 0);
  // Both are cached side by side, each under its own recipe's key.
  EXPECT_NE(unigram.tokenizer_path(), bpe.tokenizer_path());
}

}  // namespace
}  // namespace relora::train
