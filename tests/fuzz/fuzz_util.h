// Shared pieces of the fuzz targets: an in-memory file holding the current input (so readers that
// take a path read it without touching the disk), and the readers' error contract.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace relora::fuzz {

// A memfd reachable by path (/proc/self/fd/N); rewrite() replaces its contents.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  void rewrite(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// The contract every reader keeps on bad input: it throws std::runtime_error (or a subclass) whose
// message names the file. Any other exception escapes the fuzz target and is reported as a crash.
[[noreturn]] inline void contract_broken(const std::string& what) {
  std::fprintf(stderr, "contract broken: %s\n", what.c_str());
  std::abort();
}
inline void expect_names(const std::runtime_error& e, const std::string& name) {
  if (std::string(e.what()).find(name) == std::string::npos)
    contract_broken("error does not name '" + name + "': " + e.what());
}

}  // namespace relora::fuzz
