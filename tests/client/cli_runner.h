// Runs a built binary with arguments and captures its exit code, stdout and stderr.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/test_paths.h"

extern char** environ;

namespace relora::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
  double seconds = 0;
  // The stderr lines that are not empty.
  std::vector<std::string> err_lines() const {
    std::vector<std::string> lines;
    std::istringstream in(err);
    for (std::string l; std::getline(in, l);) {
      if (!l.empty()) lines.push_back(l);
    }
    return lines;
  }
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A started binary whose stdout and stderr go to files. `env` entries ("NAME=value") replace
// or add to this process's environment for the child.
class RunningBinary {
 public:
  RunningBinary(const std::string& binary, const std::vector<std::string>& args,
                const std::vector<std::string>& env = {})
      : out_path_(tmp_.file("stdout")), err_path_(tmp_.file("stderr")) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> argv_s{binary};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry(*e);
      bool overridden = false;
      for (const auto& o : env) overridden |= entry.compare(0, o.find('=') + 1, o, 0, o.find('=') + 1) == 0;
      if (!overridden) env_s.push_back(entry);
    }
    env_s.insert(env_s.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    start_ = std::chrono::steady_clock::now();
    const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot run " + binary);
  }
  ~RunningBinary() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  RunningBinary(const RunningBinary&) = delete;
  RunningBinary& operator=(const RunningBinary&) = delete;

  pid_t pid() const { return pid_; }
  std::string out_so_far() const { return read_text(out_path_); }
  std::string err_so_far() const { return read_text(err_path_); }

  CliResult wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    CliResult r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_text(out_path_);
    r.err = read_text(err_path_);
    return r;
  }

 private:
  TempDir tmp_;
  std::string out_path_, err_path_;
  pid_t pid_ = -1;
  std::chrono::steady_clock::time_point start_;
};

inline CliResult run_binary(const std::string& binary, const std::vector<std::string>& args,
                            const std::vector<std::string>& env = {}) {
  return RunningBinary(binary, args, env).wait();
}

inline std::string relora_cli() { return binary_path("client/relora"); }

inline CliResult run_cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  return run_binary(relora_cli(), args, env);
}

}  // namespace relora::testing
