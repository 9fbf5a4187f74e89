#include "worker/data/spm_api.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>

namespace relora::data {
namespace {

std::vector<std::string> candidate_paths() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("RELORA_SPM_LIBRARY")) paths.emplace_back(env);
#ifdef RELORA_SPM_BUILD_PATH
  paths.emplace_back(RELORA_SPM_BUILD_PATH);
#endif
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    const std::filesystem::path dir = std::filesystem::path(std::string(exe, static_cast<size_t>(n))).parent_path();
    paths.push_back((dir / "librelora_spm.so").string());
    paths.push_back((dir / ".." / "lib" / "librelora_spm.so").string());
  }
  return paths;
}

const SpmApi* load_api() {
  std::string tried;
  for (const auto& path : candidate_paths()) {
    if (!std::filesystem::exists(path)) {
      tried += "\n  " + path + " (absent)";
      continue;
    }
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      tried += "\n  " + path + " (" + ::dlerror() + ")";
      continue;
    }
    auto entry = reinterpret_cast<SpmApiEntry>(::dlsym(handle, kSpmApiSymbol));
    if (!entry) {
      tried += "\n  " + path + " (no " + kSpmApiSymbol + ")";
      continue;
    }
    return entry();  // the handle stays open for the life of the process
  }
  throw std::runtime_error("cannot load the SentencePiece shim librelora_spm.so (set RELORA_SPM_LIBRARY); tried:" +
                           tried);
}

}  // namespace

const SpmApi& spm_api() {
  static std::once_flag once;
  static const SpmApi* api = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    try {
      api = load_api();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  if (!api) throw std::runtime_error(failure);
  return *api;
}

}  // namespace relora::data
