// What the two training benchmarks share: relora-bench (bench/, CPU) and gpu_bench (tests/gpu,
// behind scripts/gpu-check.sh). Both train one synthetic configuration through the real Trainer
// and report matrix FLOPs per token, so the job they write and the FLOPs they count are one
// definition here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/model_presets.h"

namespace relora::bench {

// Matrix-product FLOPs per trained token, counted from the shapes (elementwise work, norms and the
// embedding's scatter-add are not counted).
struct FlopCount {
  double model = 0;     // 6 N + 12 L T C: the usual full-rank "model FLOPs" (N: the non-embedding
                        // matrices including lm_head)
  double executed = 0;  // what the mode runs: in relora mode no weight gradient for the frozen W
                        // (forward + input gradient only), plus the low-rank branch
};
FlopCount flops_per_token(const ModelShape& shape, int seq, int rank, bool low_rank);

// Median of `v` (0 for an empty vector).
double median(std::vector<double> v);

// `count` random token ids in [0, vocab) (mt19937 from `seed`), written as one-document .tok file
// the trainer reads without a tokenizer.
void write_random_tokens(const std::string& path, uint32_t vocab, size_t count, uint32_t seed = 1234);

// The job spec (YAML) of one benchmark configuration: training on the .tok file `tok_path`,
// evaluation, checkpoints and export off; in a low-rank mode one cycle spans the run, so the
// timed steps are plain low-rank steps with no merge among them.
std::string synthetic_job_yaml(const std::string& name, const ModelShape& shape, int seq, int micro_batch, int rank,
                               const std::string& mode, const std::string& dtype, int total_steps,
                               const std::string& tok_path, const std::string& checkpoint_dir);

}  // namespace relora::bench
