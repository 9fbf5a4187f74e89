// Prometheus endpoints of a `relora local` cluster: which --metrics-port each child gets and the
// line that tells the user where to scrape.
//
// The default ports are those deploy/prometheus/prometheus-local.yml scrapes: the coordinator on
// 9400 and worker i on 9401 + i. A port something already listens on (another run, an exporter)
// becomes 0 instead, so that the run still starts: the child then picks a free port and logs it.
// The check is a moment before the child binds, so two runs started at the same instant can still
// race for a port; use --metrics-port-base 0 (every port picked by its process) for parallel runs.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace relora::client {

inline constexpr int kDefaultMetricsPortBase = 9400;

struct LocalMetricsPorts {
  int coordinator = -1;      // its --metrics-port: -1 off, 0 a free port, N that port
  std::vector<int> workers;  // worker i's --metrics-port
  bool enabled() const { return coordinator >= 0; }
};

// True when nothing listens on TCP `port` (checked by binding 0.0.0.0:port for a moment, with
// SO_REUSEADDR as the exporter does, so connections in TIME_WAIT do not count).
bool tcp_port_free(int port);

// base -1: metrics off; 0: every process picks a free port; N: the coordinator N, worker i
// N + 1 + i, each replaced by 0 when !is_free(port) or beyond 65535.
LocalMetricsPorts plan_metrics_ports(int base, int workers,
                                     const std::function<bool(int)>& is_free = tcp_port_free);

// The port in the coordinator's "metrics on http://HOST:PORT/metrics" log line, if present.
std::optional<int> metrics_port_in_log(const std::string& log_text);

// "metrics: coordinator http://127.0.0.1:9400/metrics, workers http://127.0.0.1:9401/metrics ..."
// An endpoint whose port is not known here (0) reads "(see <its log>)". `coordinator_port` is the
// coordinator's bound port when known (from its log), else ports.coordinator. The Prometheus hint
// is added when every process has the port prometheus-local.yml expects.
std::string describe_metrics(const LocalMetricsPorts& ports, int coordinator_port, int base,
                             const std::string& coordinator_log, const std::vector<std::string>& worker_logs);

}  // namespace relora::client
