// Where tests find the shared real-text data and the project's own files.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace relora::testing {

// ../shared/data beside the checkout (or $RELORA_SHARED_DATA). Only tests that truly need real text
// or the T5 tokenizer read it; they call RELORA_REQUIRE_SHARED_DATA(file) and are reported as
// skipped where the folder is absent (a fresh clone has none). Where the folder exists, a missing
// or unreadable file is a failure, not a skip: CI has the data, and a test must not pass there by
// not running.
inline std::string shared_data_dir() {
  if (const char* env = std::getenv("RELORA_SHARED_DATA")) return env;
  return RELORA_SHARED_DATA_DIR;
}
inline std::string shared_data(const std::string& rel) { return shared_data_dir() + "/" + rel; }
inline bool has_shared_data() { return std::filesystem::is_directory(shared_data_dir()); }
inline bool shared_file_readable(const std::string& rel) {
  return std::filesystem::is_regular_file(shared_data(rel)) && ::access(shared_data(rel).c_str(), R_OK) == 0;
}
inline std::string source_path(const std::string& rel) { return std::string(RELORA_SOURCE_DIR) + "/" + rel; }
inline std::string binary_path(const std::string& rel) { return std::string(RELORA_BINARY_DIR) + "/" + rel; }

// A fresh, empty temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "relora-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : throw std::runtime_error("mkdtemp failed");
  }
  ~TempDir() { std::error_code ec; std::filesystem::remove_all(path_, ec); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace relora::testing

#define RELORA_REQUIRE_SHARED_DATA(rel)                                                         \
  do {                                                                                          \
    if (!::relora::testing::has_shared_data())                                                  \
      GTEST_SKIP() << "needs ../shared/data (set RELORA_SHARED_DATA): not in a fresh clone";     \
    if (!::relora::testing::shared_file_readable(rel))                                          \
      FAIL() << ::relora::testing::shared_data(rel) << ": missing or unreadable, though "        \
             << ::relora::testing::shared_data_dir() << " exists";                               \
  } while (0)
