// grpc.health.v1.Health on the coordinator's port, checked with real RPCs over loopback, without
// credentials, as Kubernetes' gRPC probes and grpc_health_probe send them (tests/health_client.h).
#include <gtest/gtest.h>

#include "tests/coordinator/harness.h"
#include "tests/health_client.h"

namespace relora::coordinator::testing {
namespace {

using relora::testing::check;
using relora::testing::encode_request;
using relora::testing::HealthReply;
using relora::testing::kServing;
using relora::testing::kUnknown;

TEST(CoordinatorHealth, EncodesTheRequestLikeProtobuf) {
  EXPECT_EQ(encode_request(""), "");
  EXPECT_EQ(encode_request("a"), std::string("\x0A\x01" "a", 3));
  EXPECT_EQ(encode_request(std::string(200, 'x')).substr(0, 3), std::string("\x0A\xC8\x01", 3));
}

TEST(CoordinatorHealth, ServesTheServerAndBothServicesWithoutCredentials) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  // A fresh plaintext channel with no call credentials at all.
  auto channel = grpc::CreateChannel(c.server().address(), grpc::InsecureChannelCredentials());
  for (const std::string service : {"", "relora.v1.JobService", "relora.v1.WorkerService"}) {
    const HealthReply r = check(channel, service);
    ASSERT_TRUE(r.status.ok()) << "'" << service << "': " << r.status.error_message();
    EXPECT_EQ(r.serving_status, kServing) << "'" << service << "'";
  }
  // An unknown service name is NOT_FOUND, per the health protocol.
  EXPECT_EQ(check(channel, "relora.v1.Nope").status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(CoordinatorHealth, AnswersWhileAJobRunsAndWithMetricsOn) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path(), 10s, /*metrics_port=*/0);
  SimWorker w(c.channel(), "host-a", 29501);
  w.join();
  c.submit_ok(job_yaml("health", 1));
  ASSERT_TRUE(w.next().has_value());
  EXPECT_EQ(check(c.channel(), "").serving_status, kServing);
  EXPECT_EQ(check(c.channel(), "relora.v1.WorkerService").serving_status, kServing);
}

}  // namespace
}  // namespace relora::coordinator::testing
