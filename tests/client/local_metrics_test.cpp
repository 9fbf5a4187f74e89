// `relora local`'s metrics ports: the plan (fixed ports, taken ones replaced by 0, off, all free),
// the port check against a real listening socket, the coordinator's log line and the printed line.
#include "client/local_metrics.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

namespace relora::client {
namespace {

// A socket listening on a kernel-picked loopback-and-all-interfaces port, closed at scope end.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 1) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      ADD_FAILURE() << "cannot listen";
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(ClientLocalMetrics, FixedPortsFromTheBaseAndTakenOnesBecomeZero) {
  const std::set<int> taken = {9402};
  auto is_free = [&](int p) { return taken.count(p) == 0; };
  const auto ports = plan_metrics_ports(9400, 3, is_free);
  EXPECT_TRUE(ports.enabled());
  EXPECT_EQ(ports.coordinator, 9400);
  EXPECT_EQ(ports.workers, (std::vector<int>{9401, 0, 9403}));

  const auto coordinator_taken = plan_metrics_ports(9400, 1, [](int p) { return p != 9400; });
  EXPECT_EQ(coordinator_taken.coordinator, 0);
  EXPECT_EQ(coordinator_taken.workers, std::vector<int>{9401});
}

TEST(ClientLocalMetrics, OffAndAllFreePortsAndTheTopOfTheRange) {
  const auto off = plan_metrics_ports(-1, 2, [](int) { return true; });
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.workers.empty());

  int checks = 0;
  const auto any = plan_metrics_ports(0, 2, [&](int) { return ++checks > 0; });
  EXPECT_EQ(any.coordinator, 0);
  EXPECT_EQ(any.workers, (std::vector<int>{0, 0}));
  EXPECT_EQ(checks, 0);  // nothing to check

  const auto top = plan_metrics_ports(65534, 3, [](int) { return true; });
  EXPECT_EQ(top.coordinator, 65534);
  EXPECT_EQ(top.workers, (std::vector<int>{65535, 0, 0}));
}

TEST(ClientLocalMetrics, APortSomethingListensOnIsNotFree) {
  int port = 0;
  {
    Listener l;
    port = l.port();
    EXPECT_FALSE(tcp_port_free(port));
  }
  EXPECT_TRUE(tcp_port_free(port));  // closed again (a listener leaves no TIME_WAIT without connections)
  EXPECT_FALSE(tcp_port_free(0));
  EXPECT_FALSE(tcp_port_free(70000));
}

TEST(ClientLocalMetrics, TheCoordinatorsLogLineGivesItsPort) {
  EXPECT_EQ(metrics_port_in_log("[2024-01-01 10:00:00.000] [info] coordinator listening on 127.0.0.1:4000\n"
                                "[2024-01-01 10:00:00.000] [info] metrics on http://0.0.0.0:41234/metrics\n"),
            41234);
  EXPECT_EQ(metrics_port_in_log("fake coordinator pid 12\n"), std::nullopt);
}

TEST(ClientLocalMetrics, TheLineNamesEveryEndpoint) {
  LocalMetricsPorts ports{9400, {9401, 9402}};
  EXPECT_EQ(describe_metrics(ports, 9400, 9400, "/s/coordinator.log", {"/s/worker-0.log", "/s/worker-1.log"}),
            "metrics: coordinator http://127.0.0.1:9400/metrics, workers http://127.0.0.1:9401/metrics "
            "http://127.0.0.1:9402/metrics "
            "(Prometheus: prometheus --config.file=deploy/prometheus/prometheus-local.yml)");
  // A fallback port is only in the process's log; no Prometheus hint then (its config would miss it).
  ports = {0, {9401}};
  EXPECT_EQ(describe_metrics(ports, 0, 9400, "/s/coordinator.log", {"/s/worker-0.log"}),
            "metrics: coordinator (see /s/coordinator.log), worker http://127.0.0.1:9401/metrics");
  // The coordinator's actual port, read from its log.
  EXPECT_EQ(describe_metrics(ports, 35000, 9400, "/s/coordinator.log", {"/s/worker-0.log"}),
            "metrics: coordinator http://127.0.0.1:35000/metrics, worker http://127.0.0.1:9401/metrics");
  // Another base: the ports are right but the shipped config does not scrape them.
  ports = {20000, {20001}};
  EXPECT_EQ(describe_metrics(ports, 20000, 20000, "c.log", {"w.log"}),
            "metrics: coordinator http://127.0.0.1:20000/metrics, worker http://127.0.0.1:20001/metrics");
  ports = {9400, {9401, 9402, 9403, 9404, 9405}};
  EXPECT_NE(describe_metrics(ports, 9400, 9400, "c", {"0", "1", "2", "3", "4"}).find("add the ports of workers 4"),
            std::string::npos);
}

}  // namespace
}  // namespace relora::client
