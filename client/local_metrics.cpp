#include "client/local_metrics.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>

namespace relora::client {

bool tcp_port_free(int port) {
  if (port < 1 || port > 65535) return false;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd, 1) == 0;
  ::close(fd);
  return ok;
}

LocalMetricsPorts plan_metrics_ports(int base, int workers, const std::function<bool(int)>& is_free) {
  LocalMetricsPorts ports;
  if (base < 0) return ports;
  auto pick = [&](long wanted) -> int {
    if (base == 0) return 0;
    return wanted <= 65535 && is_free(static_cast<int>(wanted)) ? static_cast<int>(wanted) : 0;
  };
  ports.coordinator = pick(base);
  for (int i = 0; i < workers; ++i) ports.workers.push_back(pick(static_cast<long>(base) + 1 + i));
  return ports;
}

std::optional<int> metrics_port_in_log(const std::string& log_text) {
  static const std::regex line("metrics on http://[^\\s/]*:(\\d+)/metrics");
  std::smatch m;
  if (!std::regex_search(log_text, m, line)) return std::nullopt;
  const int port = std::stoi(m[1].str());
  return port >= 1 && port <= 65535 ? std::optional<int>(port) : std::nullopt;
}

std::string describe_metrics(const LocalMetricsPorts& ports, int coordinator_port, int base,
                             const std::string& coordinator_log, const std::vector<std::string>& worker_logs) {
  auto endpoint = [](int port, const std::string& log) {
    return port > 0 ? "http://127.0.0.1:" + std::to_string(port) + "/metrics" : "(see " + log + ")";
  };
  std::string line = "metrics: coordinator " + endpoint(coordinator_port, coordinator_log);
  bool as_configured = base > 0 && coordinator_port == base;
  if (!ports.workers.empty()) line += ports.workers.size() == 1 ? ", worker" : ", workers";
  for (size_t i = 0; i < ports.workers.size(); ++i) {
    line += " " + endpoint(ports.workers[i], i < worker_logs.size() ? worker_logs[i] : "its log");
    as_configured = as_configured && ports.workers[i] == base + 1 + static_cast<int>(i);
  }
  if (as_configured && base == kDefaultMetricsPortBase) {
    line += " (Prometheus: prometheus --config.file=deploy/prometheus/prometheus-local.yml";
    // It lists 9400 and 9401..9404.
    if (ports.workers.size() > 4) line += "; add the ports of workers 4 and up to its relora-worker job";
    line += ")";
  }
  return line;
}

}  // namespace relora::client
