// A client of the standard gRPC health service (grpc.health.v1.Health/Check), as Kubernetes'
// gRPC probes and grpc_health_probe call it: no credentials. The repository has no health.proto,
// so the messages are encoded by hand (both are one field) and the call goes through
// grpc::GenericStub. Free of gtest: tests/deploy/health_probe.cpp is a program built from it.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace relora::testing {

// HealthCheckResponse.ServingStatus
constexpr int kUnknown = 0;
constexpr int kServing = 1;

struct HealthReply {
  grpc::Status status;
  int serving_status = -1;  // the response's field 1; -1 when the call failed
};

// HealthCheckRequest{service = 1 (string)}.
inline std::string encode_request(const std::string& service) {
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

// HealthCheckResponse{status = 1 (enum)}; an empty message is UNKNOWN (0); -1 for bytes that are
// not such a message.
inline int decode_response(const std::string& bytes) {
  if (bytes.empty()) return kUnknown;
  if (bytes.size() == 2 && bytes[0] == 0x08) return static_cast<unsigned char>(bytes[1]);
  return -1;  // not a HealthCheckResponse as this client knows it
}

// One Check call; a failed call has serving_status -1.
inline HealthReply check(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
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
  if (!response.Dump(&slices).ok()) return reply;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  reply.serving_status = decode_response(bytes);
  return reply;
}

}  // namespace relora::testing
