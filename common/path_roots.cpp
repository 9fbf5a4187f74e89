#include "common/path_roots.h"

#include <filesystem>

#include "common/job_spec.h"

namespace relora {
namespace fs = std::filesystem;
namespace {

// The path with every symlink of its existing prefix resolved (the rest taken lexically, ".."
// included), so that "root/link/.." and "root/../x" are judged by where they really lead.
fs::path resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path), ec);
  if (ec) throw JobSpecError("cannot resolve " + path + ": " + ec.message());
  return p;
}

bool inside(const fs::path& path, const fs::path& root) {
  auto r = root.begin();
  auto p = path.begin();
  for (; r != root.end() && !r->empty(); ++r, ++p)
    if (p == path.end() || *p != *r) return false;
  return true;
}

std::vector<fs::path> resolve_roots(const std::vector<std::string>& roots, const char* flag) {
  std::vector<fs::path> out;
  for (const auto& root : roots) {
    if (root.empty()) continue;
    if (!fs::is_directory(root)) throw JobSpecError(std::string(flag) + " " + root + ": not a directory");
    out.push_back(resolved(root));
  }
  return out;
}

void require_inside(const std::string& field, const std::string& path, const std::vector<fs::path>& roots,
                    const std::string& what) {
  if (path.empty() || roots.empty()) return;
  const fs::path p = resolved(path);
  for (const auto& root : roots)
    if (inside(p, root)) return;
  std::string names;
  for (const auto& root : roots) names += (names.empty() ? "" : ", ") + root.string();
  throw JobSpecError(field + ": " + path + " resolves to " + p.string() + ", outside the " + what + " (" + names +
                     ")");
}

}  // namespace

void check_job_paths(const relora::v1::JobSpec& spec, const PathRoots& roots) {
  if (!roots.enabled()) return;
  const auto writable = resolve_roots({roots.checkpoint}, "--checkpoint-root");
  auto readable = resolve_roots(roots.data, "--data-root");
  readable.insert(readable.end(), writable.begin(), writable.end());
  const auto& d = spec.data();
  for (int i = 0; i < d.train_size(); ++i)
    require_inside("data.train[" + std::to_string(i) + "]", d.train(i), readable, "data roots");
  for (int i = 0; i < d.validation_size(); ++i)
    require_inside("data.validation[" + std::to_string(i) + "]", d.validation(i), readable, "data roots");
  require_inside("data.tokenizer_model", d.tokenizer_model(), readable, "data roots");
  require_inside("model.from_hf", spec.model().from_hf(), readable, "data roots");
  require_inside("relora.warm_start_checkpoint", spec.relora().warm_start_checkpoint(), readable, "data roots");
  require_inside("checkpoint.dir", spec.checkpoint().dir(), writable, "checkpoint root");
  require_inside("data.cache_dir", d.cache_dir(), writable, "checkpoint root");
}

}  // namespace relora
