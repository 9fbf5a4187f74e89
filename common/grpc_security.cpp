#include "common/grpc_security.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace relora {
namespace {

constexpr char kAuthorization[] = "authorization";
constexpr char kBearerPrefix[] = "Bearer ";

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

// The whole file; `what` names its role in the error ("TLS certificate").
std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(what + " " + path + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(what + " " + path + ": read error");
  return text.str();
}

std::array<unsigned char, 32> sha256(const std::string& s) {
  std::array<unsigned char, 32> digest{};
  unsigned int len = 0;
  if (EVP_Digest(s.data(), s.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1 || len != digest.size())
    throw std::runtime_error("SHA-256 failed");
  return digest;
}

std::string host_of(const std::string& host_port) {
  if (!host_port.empty() && host_port.front() == '[') {
    const auto close = host_port.find(']');
    return close == std::string::npos ? host_port : host_port.substr(1, close - 1);
  }
  const auto colon = host_port.rfind(':');
  return colon == std::string::npos ? host_port : host_port.substr(0, colon);
}

}  // namespace

std::string read_token_file(const std::string& path) {
  const std::string token = trim(read_file(path, "token file"));
  if (token.empty()) throw std::runtime_error("token file " + path + ": empty (it must hold one token)");
  if (token.find_first_of(" \t\r\n") != std::string::npos)
    throw std::runtime_error("token file " + path + ": holds more than one word (it must hold one token)");
  return token;
}

bool constant_time_equals(const std::string& a, const std::string& b) {
  const auto da = sha256(a);
  const auto db = sha256(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

std::string bearer_token(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find(kAuthorization);
  if (it == metadata.end()) return "";
  const std::string value(it->second.data(), it->second.size());
  const std::string prefix = kBearerPrefix;
  if (value.compare(0, prefix.size(), prefix) != 0) return "";
  return value.substr(prefix.size());
}

void add_bearer_token(grpc::ClientContext& context, const std::string& token) {
  if (!token.empty()) context.AddMetadata(kAuthorization, kBearerPrefix + token);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const ClientSecurity& security) {
  const bool has_cert = !security.tls_cert_file.empty(), has_key = !security.tls_key_file.empty();
  if (has_cert != has_key)
    throw std::runtime_error("--tls-cert and --tls-key go together (a client certificate needs its key)");
  if (!security.tls()) {
    if (has_cert) throw std::runtime_error("--tls-cert needs --tls-ca (the CA that signed the coordinator's certificate)");
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = read_file(security.tls_ca_file, "TLS CA file");
  if (has_cert) {
    ssl.pem_cert_chain = read_file(security.tls_cert_file, "TLS certificate");
    ssl.pem_private_key = read_file(security.tls_key_file, "TLS key");
  }
  return grpc::SslCredentials(ssl);
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServerTls& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty())
    throw std::runtime_error("--tls-cert and --tls-key go together");
  if (!tls.enabled()) {
    if (!tls.client_ca_file.empty()) throw std::runtime_error("--tls-client-ca needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(tls.client_ca_file.empty()
                                            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_key_cert_pairs.push_back({read_file(tls.key_file, "TLS key"), read_file(tls.cert_file, "TLS certificate")});
  if (!tls.client_ca_file.empty()) ssl.pem_root_certs = read_file(tls.client_ca_file, "TLS client CA file");
  return grpc::SslServerCredentials(ssl);
}

bool is_loopback_listen_address(const std::string& host_port) {
  const std::string host = host_of(host_port);
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string loopback_listen_address(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  const bool has_port = colon != std::string::npos && host_port.find(']', colon) == std::string::npos;
  return "127.0.0.1:" + (has_port ? host_port.substr(colon + 1) : std::string("50051"));
}

}  // namespace relora
