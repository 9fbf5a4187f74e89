// Finding sibling executables (see binaries.h).
#include "client/binaries.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>

namespace relora::client {
namespace fs = std::filesystem;

std::string self_exe_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return exe.parent_path().string();
}

namespace {

bool is_executable_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

}  // namespace

std::optional<std::string> find_binary(const BinarySearch& what, const std::string& self_dir,
                                       const std::string& path_env, std::vector<std::string>* tried) {
  std::vector<fs::path> candidates;
  if (!self_dir.empty()) {
    candidates.push_back(fs::path(self_dir) / what.name);
    for (const auto& sibling : what.sibling_dirs) {
      candidates.push_back(fs::path(self_dir).parent_path() / sibling / what.name);
    }
  }
  std::stringstream ss(path_env);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    // An empty PATH entry means the current directory (POSIX); searching it silently from a
    // service CLI would be surprising, so it is skipped.
    if (!dir.empty()) candidates.push_back(fs::path(dir) / what.name);
  }
  for (const auto& c : candidates) {
    if (tried != nullptr) tried->push_back(c.lexically_normal().string());
    if (is_executable_file(c)) return c.lexically_normal().string();
  }
  return std::nullopt;
}

std::string require_binary(const BinarySearch& what) {
  // For installs that keep the binaries apart, and for tests that substitute fakes.
  if (const char* forced = what.env_override.empty() ? nullptr : std::getenv(what.env_override.c_str());
      forced != nullptr && *forced != '\0') {
    if (!is_executable_file(forced)) {
      throw std::runtime_error(what.env_override + "=" + forced + " is not an executable file");
    }
    return forced;
  }
  const char* path = std::getenv("PATH");
  std::vector<std::string> tried;
  if (auto found = find_binary(what, self_exe_dir(), path ? path : "", &tried)) return *found;
  // Name the build-tree places; the PATH entries would only bury them.
  const size_t local = std::min(tried.size(), what.sibling_dirs.size() + 1);
  std::string msg = "cannot find " + what.name + " (looked in";
  for (size_t i = 0; i < local; ++i) msg += (i ? ", " : " ") + tried[i];
  msg += std::string(local ? " and " : " ") + "$PATH)";
  throw std::runtime_error(msg);
}

BinarySearch worker_binary() { return {"relora-worker", {"worker"}, "RELORA_WORKER_BINARY"}; }
BinarySearch coordinator_binary() { return {"relora-coordinator", {"coordinator"}, "RELORA_COORDINATOR_BINARY"}; }

}  // namespace relora::client
