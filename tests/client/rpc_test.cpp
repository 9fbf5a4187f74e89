// Status codes -> exit codes and messages, and --timeout parsing.
#include "client/rpc.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace relora::client {
namespace {

using ::testing::HasSubstr;

TEST(ClientRpc, ExitCodes) {
  EXPECT_EQ(exit_code_for(grpc::StatusCode::OK), 0);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::INVALID_ARGUMENT), 2);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::UNAVAILABLE), 3);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::DEADLINE_EXCEEDED), 3);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::NOT_FOUND), 1);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::FAILED_PRECONDITION), 1);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::INTERNAL), 1);
}

TEST(ClientRpc, UnreachableMessagesNameTheAddress) {
  const auto timeout = std::chrono::milliseconds(10000);
  const std::string unavailable =
      describe_status(grpc::Status(grpc::StatusCode::UNAVAILABLE, "failed to connect"), "10.0.0.5:50051", timeout);
  EXPECT_THAT(unavailable, HasSubstr("cannot reach the coordinator at 10.0.0.5:50051"));
  const std::string deadline = describe_status(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"),
                                               "10.0.0.5:50051", timeout);
  EXPECT_THAT(deadline, HasSubstr("10.0.0.5:50051 did not answer within 10s"));
}

TEST(ClientRpc, OtherMessagesPassThrough) {
  EXPECT_EQ(describe_status(grpc::Status(grpc::StatusCode::NOT_FOUND, "job 'x' not found"), "a:1",
                            std::chrono::milliseconds(1000)),
            "job 'x' not found");
}

TEST(ClientRpc, Durations) {
  EXPECT_EQ(parse_duration("10s"), std::chrono::milliseconds(10000));
  EXPECT_EQ(parse_duration("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(parse_duration("1.5s"), std::chrono::milliseconds(1500));
  EXPECT_EQ(parse_duration("2m"), std::chrono::milliseconds(120000));
  EXPECT_EQ(parse_duration("1h"), std::chrono::milliseconds(3600000));
  for (const char* bad : {"", "10", "s", "-1s", "0s", "10 s", "10x", "1.2.3s", "abc"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
  }
}

TEST(ClientRpc, RpcErrorCarriesTheExitCode) {
  RpcError e(grpc::StatusCode::INVALID_ARGUMENT, "relora.rank: 0 must be at least 1");
  EXPECT_EQ(e.exit_code(), 2);
  EXPECT_STREQ(e.what(), "relora.rank: 0 must be at least 1");
}

}  // namespace
}  // namespace relora::client
