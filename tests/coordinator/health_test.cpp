// grpc.health.v1.Health on the coordinator's port, checked with real RPCs over loopback, without
// credentials, as Kubernetes' gRPC probes and grpc_health_probe send them. The repository has no
// health.proto, so the messages are encoded by hand (both are one field) and the call goes
// through grpc::GenericStub.
#include <gtest/gtest.h>

#include <future>

#include <grpcpp/generic/generic_stub.h>

#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

// HealthCheckResponse.ServingStatus
constexpr int kUnknown = 0;
constexpr int kServing = 1;

struct HealthReply {
  grpc::Status status;
  int serving_status = -1;  // the response's field 1; -1 when the call failed
};

// HealthCheckRequest{service = 1 (string)}.
std::string encode_request(const std::string& service) {
  std::string out;
  if (service.empty()) return out;  // proto3 default: nothing on the wire
  out.push_back(0x0A);              // field 1, wire type 2 (length-delimited)
  for (size_t n = service.size();; n >>= 7) {  // varint length
    if (n < 0x80) {
      out.push_back(static_cast<char>(n));
      break;
    }
    out.push_back(static_cast<char>((n & 0x7F) | 0x80));
  }
  return out + service;
}

// HealthCheckResponse{status = 1 (enum)}; an empty message is UNKNOWN (0).
int decode_response(const std::string& bytes) {
  if (bytes.empty()) return kUnknown;
  if (bytes.size() == 2 && bytes[0] == 0x08) return static_cast<unsigned char>(bytes[1]);
  ADD_FAILURE() << "unexpected HealthCheckResponse encoding (" << bytes.size() << " bytes)";
  return -1;
}

HealthReply check(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  set_deadline(ctx);
  grpc::Slice slice(encode_request(service));
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  HealthReply reply;
  reply.status = done.get_future().get();
  if (!reply.status.ok()) return reply;
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  reply.serving_status = decode_response(bytes);
  return reply;
}

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
