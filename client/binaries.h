// Finding the project's other executables (relora-worker, relora-coordinator) from the CLI.
//
// The CLI never links LibTorch; it runs the worker binary instead (for `export` and `local`).
// Installed, the binaries sit side by side in bin/; in a build tree they sit in sibling
// folders (build/client/relora, build/worker/relora-worker, build/coordinator/relora-coordinator).
// Both layouts are searched before PATH, so a build tree never picks up an older installed copy.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace relora::client {

// The directory holding the running executable (from /proc/self/exe), or "" if unknown.
std::string self_exe_dir();

struct BinarySearch {
  std::string name;                       // e.g. "relora-worker"
  std::vector<std::string> sibling_dirs;  // build-tree folders next to ours, e.g. {"worker"}
  std::string env_override;               // e.g. "RELORA_WORKER_BINARY": a path that wins
};

// Looks for an executable file `name` in, in order: `self_dir`, `self_dir/../<sibling>` for each
// sibling, then each entry of `path_env` (a PATH-style, colon-separated list). Returns the first
// hit. `tried` (if given) receives every place looked at, for error messages.
std::optional<std::string> find_binary(const BinarySearch& what, const std::string& self_dir,
                                       const std::string& path_env,
                                       std::vector<std::string>* tried = nullptr);

// The path in the `env_override` variable if set (it must be executable), else find_binary()
// with this process's directory and $PATH; throws std::runtime_error naming the places tried
// when nothing is found.
std::string require_binary(const BinarySearch& what);

// The two binaries the CLI runs.
BinarySearch worker_binary();
BinarySearch coordinator_binary();

}  // namespace relora::client
