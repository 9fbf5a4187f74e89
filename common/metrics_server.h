// The Prometheus endpoint of a relora process (prometheus-cpp's pull exposer on civetweb).
// Each process owns one MetricsServer; its metric families register on registry().
#pragma once

#include <memory>
#include <string>

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace relora {

class MetricsServer {
 public:
  // Serves GET /metrics on `bind_address` ("0.0.0.0:9400"; port 0 picks a free port). Throws
  // std::runtime_error naming the address when it cannot bind.
  explicit MetricsServer(const std::string& bind_address);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }
  int port() const { return port_; }  // the bound port

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

// "host:port" for a --metrics-port value: all interfaces (Prometheus scrapes from elsewhere),
// or loopback when `loopback_only`.
std::string metrics_bind_address(int port, bool loopback_only = false);

}  // namespace relora
