// The Prometheus endpoint of a relora process: GET /metrics in the text exposition format,
// rendered by prometheus-cpp from registry().
//
// Why not prometheus-cpp's own Exposer: its civetweb server fails to start (mg_start returns
// null after binding) in any process that has Debian's libtorch_cpu loaded, i.e. in every worker.
// This server is deliberately small: one thread, one connection at a time, HTTP/1.0, close after
// each response — enough for Prometheus scrapes every few seconds.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace relora {

class MetricsServer {
 public:
  // Serves on `bind_address` ("0.0.0.0:9400"; port 0 picks a free port). Throws
  // std::runtime_error naming the address when it cannot bind.
  explicit MetricsServer(const std::string& bind_address);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }
  int port() const { return port_; }  // the bound port
  // Runs on the server thread before each /metrics answer is rendered, for values that are
  // read rather than pushed (a process's resident memory, which changes also while it is idle).
  // Replaces the previous hook; an empty function removes it.
  void set_before_scrape(std::function<void()> hook);

 private:
  void serve();
  void answer(int client);

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex hook_mu_;
  std::function<void()> before_scrape_;  // GUARDED_BY(hook_mu_)
  std::thread thread_;
};

// "host:port" for a --metrics-port value: all interfaces (Prometheus scrapes from elsewhere),
// or loopback when `loopback_only`.
std::string metrics_bind_address(int port, bool loopback_only = false);

}  // namespace relora
