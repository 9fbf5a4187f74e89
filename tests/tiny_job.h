// The tiny job the training tests share (trainer, data parallelism, the sharded optimizer, the
// generic path): a 2-layer, hidden-64 model over a 512-piece vocabulary, sequences of 32 tokens,
// on the synthetic text of tests/synthetic_text.h (its tokenizer trained once and cached in the
// build tree). A run takes about a second.
#pragma once

#include <cstdint>
#include <string>

#include "common/job_spec.h"
#include "tests/synthetic_text.h"
#include "tests/test_paths.h"

namespace relora::testing {

struct TinyJob {
  std::string relora = "{mode: full}";  // the relora section, in YAML flow style
  int64_t steps = 12;
  int64_t grad_accum = 2;
  int64_t ckpt_every = 0;
  std::string ckpt_dir;
  std::string dtype = "fp32";
};

// A job spec from YAML text, with defaults applied and validated, as a job file is loaded.
inline relora::v1::JobSpec valid_job_spec(const std::string& yaml, const std::string& source) {
  auto spec = parse_job_spec_yaml(yaml, source);
  resolve_job_spec(spec);
  validate_job_spec(spec);
  return spec;
}

inline relora::v1::JobSpec tiny_job_spec(const TinyJob& job) {
  const std::string yaml = R"(
name: tiny
model: {hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 128, vocab_size: 512}
data:
  train: [")" + synthetic_text_file() + R"("]
  tokenizer_vocab_size: 512
  seq_len: 32
  cache_dir: ")" + binary_path("test-cache") + R"("
training: {steps: )" + std::to_string(job.steps) + R"(, micro_batch_size: 4, grad_accum_steps: )" +
                           std::to_string(job.grad_accum) + R"(, lr: 0.003, warmup_steps: 2, seed: 7, dtype: )" +
                           job.dtype + R"(}
relora: )" + job.relora + R"(
eval: {every_steps: 0, max_tokens: 2048}
checkpoint: {dir: ")" + job.ckpt_dir + R"(", every_steps: )" + std::to_string(job.ckpt_every) + R"(, keep: 10}
)";
  return valid_job_spec(yaml, "tiny.yaml");
}

}  // namespace relora::testing
