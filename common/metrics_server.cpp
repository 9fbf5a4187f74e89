#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace relora {
namespace {

void send_all(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the scraper went away: nothing to do
    sent += static_cast<size_t>(n);
  }
}

}  // namespace

MetricsServer::MetricsServer(const std::string& bind_address)
    : registry_(std::make_shared<prometheus::Registry>()) {
  const auto colon = bind_address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  int port = -1;
  try {
    port = std::stoi(bind_address.substr(colon + 1));
  } catch (const std::exception&) {
  }
  const std::string host = colon == std::string::npos ? "0.0.0.0" : bind_address.substr(0, colon);
  if (colon == std::string::npos || port < 0 || port > 65535 || ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    throw std::runtime_error("cannot serve metrics on '" + bind_address + "': expected IPv4:PORT");
  addr.sin_port = htons(static_cast<uint16_t>(port));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = sizeof(addr);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 16) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    throw std::runtime_error("cannot serve metrics on " + bind_address + ": " + why);
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

MetricsServer::~MetricsServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void MetricsServer::serve() {
  while (!stop_) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, /*timeout_ms=*/200) <= 0) continue;  // wake regularly to see stop_
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    answer(client);
    ::close(client);
  }
}

void MetricsServer::answer(int client) {
  // Read the request head (bounded in size and time); only its first line matters.
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
    pollfd pfd{client, POLLIN, 0};
    if (::poll(&pfd, 1, /*timeout_ms=*/2000) <= 0) return;
    const ssize_t n = ::recv(client, buf, sizeof(buf), 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  const bool metrics = request.rfind("GET /metrics", 0) == 0;
  if (metrics) {
    std::lock_guard<std::mutex> lock(hook_mu_);
    if (before_scrape_) before_scrape_();
  }
  const std::string body = metrics ? prometheus::TextSerializer().Serialize(registry_->Collect())
                                   : "not found: relora serves GET /metrics\n";
  send_all(client, std::string(metrics ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.0 404 Not Found\r\n") +
                       "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                       "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

void MetricsServer::set_before_scrape(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(hook_mu_);
  before_scrape_ = std::move(hook);
}

std::string metrics_bind_address(int port, bool loopback_only) {
  return std::string(loopback_only ? "127.0.0.1:" : "0.0.0.0:") + std::to_string(port);
}

}  // namespace relora
