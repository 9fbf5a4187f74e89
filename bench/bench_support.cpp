#include "bench/bench_support.h"

#include <algorithm>
#include <random>
#include <sstream>

#include "worker/data/token_file.h"

namespace relora::bench {

FlopCount flops_per_token(const ModelShape& shape, int seq, int rank, bool low_rank) {
  const double C = shape.hidden_size, F = shape.intermediate_size, L = shape.num_layers, V = shape.vocab_size;
  const double T = seq, r = rank;
  const double layer_matrices = L * (4 * C * C + 3 * C * F);
  const double layer_io = L * (4 * (C + C) + 2 * (C + F) + (F + C));  // sum of (in + out)
  const double head = V * C;
  const double attention = 12 * L * T * C;  // QK^T and PV: 2 x 2TC forward, twice that backward
  FlopCount f;
  f.model = 6 * (layer_matrices + head) + attention;
  // Frozen W: forward (2) + input gradient (2). Branch x A^T B^T: forward, input gradient and both
  // factor gradients, 2 r (in + out) each. The head trains at full rank.
  f.executed = low_rank ? 4 * layer_matrices + 6 * r * layer_io + 6 * head + attention : f.model;
  return f;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

void write_random_tokens(const std::string& path, uint32_t vocab, size_t count, uint32_t seed) {
  std::vector<uint32_t> tokens(count);
  std::mt19937 gen(seed);
  std::uniform_int_distribution<uint32_t> id(0, vocab - 1);
  for (auto& t : tokens) t = id(gen);
  data::write_token_file(path, tokens, vocab, /*documents=*/1);
}

std::string synthetic_job_yaml(const std::string& name, const ModelShape& shape, int seq, int micro_batch, int rank,
                               const std::string& mode, const std::string& dtype, int total_steps,
                               const std::string& tok_path, const std::string& checkpoint_dir) {
  std::ostringstream y;
  y << "name: " << name << "\nmodel:\n"
    << "  hidden_size: " << shape.hidden_size << "\n  num_layers: " << shape.num_layers
    << "\n  num_heads: " << shape.num_heads << "\n  intermediate_size: " << shape.intermediate_size
    << "\n  vocab_size: " << shape.vocab_size << "\n"
    << "data:\n  train: [\"" << tok_path << "\"]\n  validation_fraction: 0.05\n"
    << "  tokenizer_vocab_size: " << std::max(16, shape.vocab_size) << "\n  seq_len: " << seq << "\n"
    << "training:\n  steps: " << total_steps << "\n  micro_batch_size: " << micro_batch
    << "\n  grad_accum_steps: 1\n  lr: 0.001\n  warmup_steps: 1\n  dtype: " << dtype
    << "\n  seed: 1\n  log_every_steps: 1000000\n"
    << "relora:\n  mode: " << mode << "\n";
  if (mode != "full") {
    y << "  rank: " << rank << "\n  alpha: 32\n  dropout: 0.0\n  cycle_steps: " << total_steps
      << "\n  restart_warmup_steps: 1\n";
  }
  y << "eval:\n  every_steps: 0\n  max_tokens: 1\n"
    << "checkpoint:\n  dir: \"" << checkpoint_dir << "\"\n  every_steps: 0\n";
  return y.str();
}

}  // namespace relora::bench
