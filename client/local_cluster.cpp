// Spawning, watching and stopping child processes (see local_cluster.h).
#include "client/local_cluster.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace relora::client {

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "stopped (status " + std::to_string(status) + ")";
}

LocalCluster::~LocalCluster() { stop(std::chrono::milliseconds(2000)); }

pid_t LocalCluster::spawn(const ChildSpec& spec) {
  // Everything the child needs is prepared before fork(): between fork and exec only
  // async-signal-safe calls are allowed (gRPC threads may hold locks at the moment of fork).
  std::vector<std::string> argv_s{spec.binary};
  argv_s.insert(argv_s.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  const int log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error(spec.log_path + ": cannot open log: " + std::strerror(errno));
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int err_pipe[2];
  if (null_fd < 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    throw std::runtime_error(std::string("cannot start ") + spec.name + ": " + std::strerror(e));
  }
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the CLI died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);  // exec keeps an ignored SIGPIPE ignored
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    const int e = errno;
    (void)!::write(err_pipe[1], &e, sizeof e);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(err_pipe[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) {
    ::close(err_pipe[0]);
    throw std::runtime_error("cannot start " + spec.name + ": fork: " + std::strerror(fork_errno));
  }
  ::setpgid(pid, pid);  // also from here, so kill(-pid) works whichever side runs first
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &exec_errno, sizeof exec_errno);  // EOF on a successful exec
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == sizeof exec_errno) {
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("cannot run " + spec.binary + ": " + std::strerror(exec_errno));
  }
  std::lock_guard<std::mutex> lock(mu_);
  children_.push_back({spec, pid});
  return pid;
}

bool LocalCluster::reap(Child& c, bool block) {
  if (!c.running) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(c.pid, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == c.pid || (r < 0 && errno == ECHILD)) {
    c.running = false;
    c.status = status;
    return true;
  }
  return false;
}

std::optional<ChildExit> LocalCluster::poll_exited() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : children_) {
    if (reap(c, /*block=*/false) && !c.reported) {
      c.reported = true;
      return ChildExit{c.spec.name, c.spec.log_path, describe_wait_status(c.status)};
    }
  }
  return std::nullopt;
}

void LocalCluster::stop(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lock(mu_);
  // The whole group: a child's own children (if any) go too.
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
    if (it->running && !reap(*it, false)) ::kill(-it->pid, SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (;;) {
    bool all_done = true;
    for (auto& c : children_) all_done &= reap(c, false);
    if (all_done) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& c : children_) {
    if (c.running) {
      ::kill(-c.pid, SIGKILL);
      reap(c, /*block=*/true);
    }
  }
}

std::string tail_file(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - 65536);
  in.seekg(start);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> all;
  std::istringstream split(text);
  for (std::string line; std::getline(split, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); ++i) {
    out += (out.empty() ? "" : "\n") + all[i];
  }
  return out;
}

namespace {

std::optional<int> read_port(const std::string& path) {
  std::ifstream in(path);
  long port = 0;
  if (!(in >> port) || port < 1 || port > 65535) return std::nullopt;
  return static_cast<int>(port);
}

}  // namespace

std::optional<int> wait_for_port_file(const std::string& path, std::chrono::milliseconds timeout,
                                      const std::function<bool()>& keep_waiting) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto port = read_port(path)) {
      // Read twice: a coordinator that writes the file in place (not by rename) could be
      // caught half-way ("50" of "50123").
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (read_port(path) == port) return port;
      continue;
    }
    if (!keep_waiting()) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::nullopt;
}

int run_and_wait(const std::string& binary, const std::vector<std::string>& args) {
  std::vector<std::string> argv_s{binary};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, binary.c_str(), nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw std::runtime_error("cannot run " + binary + ": " + std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace relora::client
