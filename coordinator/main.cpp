// relora-coordinator: the control plane. Accepts jobs (JobService), schedules them on gangs of
// registered workers and drives their ReLoRA cycles (WorkerService). State lives in SQLite under
// --state-dir, so a restarted coordinator knows every job. Serves grpc.health.v1.Health on the
// same port and, with --metrics-port, Prometheus metrics. Stops cleanly on SIGINT/SIGTERM.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/crash_handler.h"
#include "coordinator/duration.h"
#include "coordinator/server.h"

namespace {

// Writes `text` to `path` so that a reader (a script waiting for the port) sees either nothing or
// the whole file: a temporary beside it, flushed and synced, then renamed over it.
void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  if (FILE* f = std::fopen(tmp.c_str(), "r")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
  }
}

}  // namespace

int main(int argc, char** argv) {
  relora::install_crash_handler("relora-coordinator");
  CLI::App app{"relora-coordinator: schedules ReLoRA pretraining jobs on workers and drives their cycles"};
  relora::coordinator::ServerOptions options;
  std::string port_file;
  std::string heartbeat = "5s";
  std::string reattach = "60s";
  std::string log_level = "info";
  app.add_option("--listen", options.listen, "host:port to serve on (port 0: pick a free port)")->capture_default_str();
  app.add_option("--port-file", port_file, "write the bound port to this file (atomically) once serving");
  app.add_option("--state-dir", options.state_dir, "directory of the job database (relora.db)")->capture_default_str();
  app.add_option("--heartbeat-timeout", heartbeat, "a worker silent this long is lost (500ms, 5s, 2m)")
      ->capture_default_str();
  app.add_option("--reattach-timeout", reattach,
                 "after a restart, how long a running job waits for all of its workers to report back before "
                 "it is requeued to resume from its checkpoint (0s: requeue at once)")
      ->capture_default_str();
  app.add_option("--metrics-port", options.metrics_port,
                 "serve Prometheus metrics on 0.0.0.0:PORT/metrics (0: pick a free port and log it; -1: off)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 65535));
  app.add_option("--client-token-file", options.client_token_file,
                 "file holding the bearer token clients (relora) must present; with --worker-token-file. "
                 "Without token files the coordinator serves loopback only")
      ->check(CLI::ExistingFile);
  app.add_option("--worker-token-file", options.worker_token_file,
                 "file holding the bearer token workers must present; with --client-token-file")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", options.tls.cert_file, "serve TLS with this PEM certificate (chain)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", options.tls.key_file, "the PEM private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", options.tls.client_ca_file,
                 "require client certificates signed by this PEM CA (mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  CLI11_PARSE(app, argc, argv);

  try {
    options.heartbeat_timeout = relora::coordinator::parse_duration(heartbeat);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "--heartbeat-timeout: %s\n", e.what());
    return 2;
  }
  try {
    options.reattach_timeout = relora::coordinator::parse_duration(reattach);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "--reattach-timeout: %s\n", e.what());
    return 2;
  }
  if (options.heartbeat_timeout.count() <= 0) {
    std::fprintf(stderr, "--heartbeat-timeout: must be greater than 0\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));

  // Block the stop signals in every thread (gRPC's included, which inherit the mask) and take
  // them synchronously below: no async-signal-safety concerns, no flag polling.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    relora::coordinator::CoordinatorServer server(options);
    spdlog::info("bound port {}", server.port());
    if (!port_file.empty()) write_file_atomically(port_file, std::to_string(server.port()) + "\n");
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server.shutdown();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  return 0;
}
