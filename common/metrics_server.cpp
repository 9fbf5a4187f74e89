#include "common/metrics_server.h"

#include <stdexcept>

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

namespace relora {

MetricsServer::MetricsServer(const std::string& bind_address)
    : registry_(std::make_shared<prometheus::Registry>()) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(bind_address);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot serve metrics on " + bind_address + ": " + e.what());
  }
  exposer_->RegisterCollectable(registry_);
  const auto ports = exposer_->GetListeningPorts();
  if (!ports.empty()) port_ = ports.front();
}

MetricsServer::~MetricsServer() = default;

std::string metrics_bind_address(int port, bool loopback_only) {
  return std::string(loopback_only ? "127.0.0.1:" : "0.0.0.0:") + std::to_string(port);
}

}  // namespace relora
