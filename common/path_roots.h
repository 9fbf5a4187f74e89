// Where a job may read and write on a worker. With roots configured (relora-worker --data-root,
// --checkpoint-root), every path a job spec names must resolve, symlinks followed, to a place
// inside them: a spec cannot reach the worker's other files through "..", an absolute path or a
// symlink planted in a shared directory. Without roots (a single-user machine) anything goes.
#pragma once

#include <string>
#include <vector>

#include "relora/v1/job.pb.h"

namespace relora {

struct PathRoots {
  std::vector<std::string> data;  // readable: corpora, tokenizer models, warm-start checkpoints
  std::string checkpoint;         // writable: checkpoint.dir, data.cache_dir (and readable)

  bool enabled() const { return !data.empty() || !checkpoint.empty(); }
};

// Throws JobSpecError naming the field and the path when a path of `spec` (relative ones against
// the current directory) leaves the roots. Roots that are configured must exist.
void check_job_paths(const relora::v1::JobSpec& spec, const PathRoots& roots);

}  // namespace relora
