// health_probe HOST:PORT [SERVICE]: one grpc.health.v1.Health/Check call without credentials, as
// a Kubernetes gRPC probe makes it. Prints the serving status; exit 0 when SERVING, 1 when the
// server answered anything else, 2 when the call failed. Used by probe_integration.py.
#include <cstdio>
#include <string>

#include "tests/health_client.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: health_probe HOST:PORT [SERVICE]\n");
    return 2;
  }
  const std::string service = argc == 3 ? argv[2] : "";
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  const auto reply = relora::testing::check(channel, service, std::chrono::seconds(2));
  if (!reply.status.ok()) {
    std::printf("call failed: %s\n", reply.status.error_message().c_str());
    return 2;
  }
  std::printf("%s\n", reply.serving_status == relora::testing::kServing ? "SERVING"
                                                                         : ("status " + std::to_string(reply.serving_status)).c_str());
  return reply.serving_status == relora::testing::kServing ? 0 : 1;
}
