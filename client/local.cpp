// `relora local`: a whole cluster on this machine for one job. Starts relora-coordinator on a
// free loopback port and N relora-worker processes, submits the job, shows its progress like
// `watch`, writes the run summary, and stops everything (see local_cluster.h for how children
// are kept from outliving the CLI).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "client/binaries.h"
#include "client/commands.h"
#include "client/format.h"
#include "client/job_file.h"
#include "client/local_cluster.h"
#include "client/local_metrics.h"
#include "client/rpc.h"
#include "client/watch.h"

namespace relora::client {
namespace {

namespace fs = std::filesystem;

// Self-pipe: the signal handler only writes a byte; a helper thread does the real work
// (cancelling the watch stream), which is not allowed inside a handler.
int g_signal_pipe[2] = {-1, -1};

void on_signal(int) {
  const char byte = 's';
  (void)!::write(g_signal_pipe[1], &byte, 1);
}

// Watches for Ctrl-C/SIGTERM and for children that exit early, and stops the watch stream in
// either case. Installs the handlers on construction and restores the defaults on destruction.
class Supervisor {
 public:
  Supervisor(LocalCluster& cluster, WatchCanceller& canceller) : cluster_(cluster), canceller_(canceller) {
    if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe: cannot watch for Ctrl-C");
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    thread_ = std::thread([this] { loop(); });
  }
  ~Supervisor() {
    const char byte = 'q';
    (void)!::write(g_signal_pipe[1], &byte, 1);
    thread_.join();
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::close(g_signal_pipe[0]);
    ::close(g_signal_pipe[1]);
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Only children's exits are watched once the job is submitted; before that, the startup
  // code reports them itself with more context.
  void watch_children() { watch_children_ = true; }
  bool interrupted() const { return interrupted_; }
  std::optional<ChildExit> child_exit() {
    std::lock_guard<std::mutex> lock(mu_);
    return child_exit_;
  }

 private:
  void loop() {
    for (;;) {
      pollfd p{g_signal_pipe[0], POLLIN, 0};
      if (::poll(&p, 1, 250) > 0) {
        char byte = 0;
        if (::read(g_signal_pipe[0], &byte, 1) == 1) {
          if (byte == 'q') return;
          interrupted_ = true;
          canceller_.cancel();
        }
        continue;
      }
      if (!watch_children_) continue;
      if (auto exit = cluster_.poll_exited()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (!child_exit_) child_exit_ = exit;
        }
        canceller_.cancel();
      }
    }
  }

  LocalCluster& cluster_;
  WatchCanceller& canceller_;
  std::atomic<bool> interrupted_{false};
  std::atomic<bool> watch_children_{false};
  std::mutex mu_;
  std::optional<ChildExit> child_exit_;  // protected by mu_
  std::thread thread_;
};

void print_log_tail(const std::string& name, const std::string& path) {
  const std::string tail = tail_file(path, 15);
  std::cerr << "--- last lines of " << name << " log (" << path << ") ---\n"
            << (tail.empty() ? "(empty)" : tail) << "\n";
}

// Writes the summary to `path` (if given) and stdout: the coordinator's summary_json, plus the
// number of workers the job ran on.
void emit_summary(const relora::v1::Job& job, int workers, const std::string& path) {
  auto summary = nlohmann::json::parse(job.summary_json().empty() ? "{}" : job.summary_json(), nullptr, false);
  if (summary.is_discarded() || !summary.is_object()) summary = {{"summary_text", job.summary_json()}};
  summary["workers"] = workers;
  const std::string text = summary.dump(2);
  if (!path.empty()) {
    std::ofstream out(path);
    out << text << "\n";
    if (!out) throw std::runtime_error(path + ": cannot write the summary");
  }
  std::cout << text << std::endl;
}

std::string make_state_dir(const LocalOptions& opts) {
  if (!opts.state_dir.empty()) {
    fs::create_directories(opts.state_dir);
    return fs::absolute(opts.state_dir).lexically_normal().string();
  }
  std::string tmpl = (fs::temp_directory_path() / "relora-local-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("cannot create a temporary state directory");
  return tmpl;
}

}  // namespace

int cmd_local(const GlobalOptions& g, const LocalOptions& opts) {
  JobFile file = read_job_file(opts.job_file, /*check=*/true);
  const int workers = opts.workers.value_or(file.spec.cluster().workers());
  if (workers < 1) throw JobSpecError("--workers: " + std::to_string(workers) + " must be at least 1");
  if (opts.workers && *opts.workers != file.spec.cluster().workers()) {
    file.text = override_cluster_workers(file.text, workers, opts.job_file);
  }
  const std::string coordinator_bin = require_binary(coordinator_binary());
  const std::string worker_bin = require_binary(worker_binary());
  const std::string state_dir = make_state_dir(opts);
  const bool temporary = opts.state_dir.empty();
  std::ostream& info = g.json ? std::cerr : std::cout;  // with -o json, stdout is the summary only

  LocalCluster cluster;
  WatchCanceller canceller;
  Supervisor supervisor(cluster, canceller);

  // 1. The coordinator, on a port the kernel picks; it writes the port to a file once listening.
  const std::string port_file = state_dir + "/coordinator.port";
  std::error_code ec;
  fs::remove(port_file, ec);  // a stale file from a kept state dir would point at a dead port
  const std::string coord_log = state_dir + "/coordinator.log";
  const LocalMetricsPorts metrics = plan_metrics_ports(opts.metrics_port_base, workers);
  std::vector<std::string> coord_args = {"--listen", "127.0.0.1:0", "--port-file", port_file, "--state-dir", state_dir};
  if (metrics.enabled()) {
    coord_args.push_back("--metrics-port");
    coord_args.push_back(std::to_string(metrics.coordinator));
  }
  cluster.spawn({"coordinator", coordinator_bin, coord_args, coord_log});
  std::optional<ChildExit> early_exit;
  const auto port = wait_for_port_file(port_file, opts.startup_timeout, [&] {
    if (!early_exit) early_exit = cluster.poll_exited();
    return !early_exit && !supervisor.interrupted();
  });
  if (!port) {
    if (supervisor.interrupted()) return 130;
    std::cerr << "error: the coordinator "
              << (early_exit ? early_exit->how : "did not write " + port_file + " within " +
                                                     format_timeout(opts.startup_timeout.count()))
              << std::endl;
    print_log_tail("coordinator", coord_log);
    return kExitFailed;
  }
  const std::string address = "127.0.0.1:" + std::to_string(*port);

  // 2. The workers.
  std::vector<std::string> worker_logs;
  for (int i = 0; i < workers; ++i) {
    const std::string name = "worker-" + std::to_string(i);
    worker_logs.push_back(state_dir + "/" + name + ".log");
    std::vector<std::string> args = {"--coordinator", address};
    if (metrics.enabled()) {
      args.push_back("--metrics-port");
      args.push_back(std::to_string(metrics.workers[i]));
    }
    cluster.spawn({name, worker_bin, args, worker_logs.back()});
  }
  info << "relora local: coordinator on " << address << ", " << workers << (workers == 1 ? " worker" : " workers")
       << ", logs in " << state_dir << std::endl;
  if (metrics.enabled()) {
    // The coordinator logged its metrics port before writing the port file; workers bind theirs
    // while starting, so a worker on a free port (0) is only known from its log.
    const int coord_metrics = metrics_port_in_log(tail_file(coord_log, 50)).value_or(metrics.coordinator);
    info << describe_metrics(metrics, coord_metrics, opts.metrics_port_base, coord_log, worker_logs) << std::endl;
  }

  // 3. Submit and follow.
  supervisor.watch_children();
  Rpc rpc(address, g.timeout);
  relora::v1::Job submitted;
  try {
    submitted = rpc.submit(file.text, fs::path(opts.job_file).filename().string());
  } catch (const RpcError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    if (e.exit_code() == kExitUnreachable) print_log_tail("coordinator", coord_log);
    return e.exit_code();  // the children are stopped by ~LocalCluster
  }
  info << "job " << submitted.id() << " (" << submitted.name() << ")" << std::endl;
  ProgressDisplay display(info, ::isatty(g.json ? STDERR_FILENO : STDOUT_FILENO) == 1);
  relora::v1::Job job;
  try {
    job = follow_job(
        rpc, submitted.id(),
        [&](const relora::v1::Job& j, const std::vector<relora::v1::JobEvent>& events) {
          for (const auto& e : events) display.event(e);
          display.update(j, std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count());
        },
        &canceller, /*reconnect_window_s=*/10.0);
  } catch (const RpcError& e) {
    // Most likely the coordinator died; its log says why better than the stream's status.
    std::cerr << "error: " << e.what() << std::endl;
    print_log_tail("coordinator", coord_log);
    std::cerr << "state and logs kept in " << state_dir << std::endl;
    return kExitFailed;
  }

  // 4. Why did following stop?
  if (supervisor.interrupted() && !is_terminal(job.state())) {
    display.finish(job);
    std::cerr << "interrupted: cancelling job " << job.id() << " and stopping the cluster" << std::endl;
    try {
      rpc.cancel(job.id());
    } catch (const RpcError& e) {
      spdlog::warn("cancel: {}", e.what());
    }
    cluster.stop(std::chrono::seconds(10));
    std::cerr << "state and logs kept in " << state_dir << std::endl;
    return 130;  // the shell's convention for "ended by SIGINT"
  }
  if (auto exit = supervisor.child_exit(); exit && !is_terminal(job.state())) {
    // A child can exit right after the job finished; only an unfinished job is a failure.
    try {
      job = rpc.get_job(job.id());
    } catch (const RpcError&) {
    }
    if (!is_terminal(job.state())) {
      display.finish(job);
      std::cerr << "error: " << exit->name << " " << exit->how << " while job " << job.id() << " was "
                << state_name(job.state()) << std::endl;
      print_log_tail(exit->name, exit->log_path);
      try {
        rpc.cancel(job.id());
      } catch (const RpcError&) {
      }
      cluster.stop(std::chrono::seconds(10));
      std::cerr << "state and logs kept in " << state_dir << std::endl;
      return kExitFailed;
    }
  }
  display.finish(job);

  // 5. Summary, linger, shutdown, outcome.
  const bool ok = job.state() == relora::v1::JOB_STATE_COMPLETED;
  if (ok || !job.summary_json().empty()) emit_summary(job, workers, opts.summary_json);
  if (opts.linger.count() > 0) {
    // The finished job's series live as long as the processes: give Prometheus time to scrape.
    info << "keeping the cluster up for " << format_timeout(opts.linger.count())
         << " (--linger) so that its metrics can be scraped" << std::endl;
    const auto until = std::chrono::steady_clock::now() + opts.linger;
    while (std::chrono::steady_clock::now() < until && !supervisor.interrupted())
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  cluster.stop(std::chrono::seconds(10));
  if (!ok) {
    const int rc = report_outcome(job);
    print_log_tail("coordinator", coord_log);
    for (int i = 0; i < workers; ++i) {
      const std::string name = "worker-" + std::to_string(i);
      print_log_tail(name, state_dir + "/" + name + ".log");
    }
    std::cerr << "state and logs kept in " << state_dir << std::endl;
    return rc;
  }
  if (temporary && !opts.keep_state) {
    fs::remove_all(state_dir, ec);
  } else {
    info << "state and logs in " << state_dir << std::endl;
  }
  return kExitOk;
}

}  // namespace relora::client
