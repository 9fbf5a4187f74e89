// Who may talk to whom on the control plane: bearer tokens, optional TLS and mutual TLS, and the
// loopback-only rule for a coordinator started without tokens. Shared by the coordinator (server
// side), the worker and the CLI (client side), so the three agree on the header, the file format
// and the error messages.
//
// Tokens travel as gRPC metadata "authorization: Bearer <token>". Over plaintext they are only as
// safe as the network; with TLS they are encrypted. Token files hold one token (surrounding
// whitespace, such as the newline a secret mount or `echo` leaves, is ignored).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace relora {

// The token in `path`. Throws std::runtime_error naming the file if it cannot be read or holds
// no token. Never logs the token.
std::string read_token_file(const std::string& path);

// Equal strings, compared in time that depends on neither their contents nor where they differ
// (both are hashed first, so not on their lengths either).
bool constant_time_equals(const std::string& a, const std::string& b);

// "Bearer <token>" from the call's metadata; empty when absent or malformed.
std::string bearer_token(const grpc::ServerContextBase& context);
// Adds the token to a call; a no-op for an empty token.
void add_bearer_token(grpc::ClientContext& context, const std::string& token);

// Client side of one channel to the coordinator.
struct ClientSecurity {
  std::string token;         // empty: send none
  std::string tls_ca_file;   // non-empty: TLS, verifying the server against this CA bundle
  std::string tls_cert_file;  // with tls_key_file: a client certificate (mutual TLS)
  std::string tls_key_file;

  bool tls() const { return !tls_ca_file.empty(); }
};

// Insecure or TLS credentials per `security`. Throws std::runtime_error naming a file that cannot
// be read, or a client certificate given without its key (or the reverse), or without a CA.
std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const ClientSecurity& security);

// Server side: TLS with a certificate and key; with a client CA, clients must present a
// certificate it signed (mutual TLS). Empty cert and key: plaintext.
struct ServerTls {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;

  bool enabled() const { return !cert_file.empty(); }
};

// Throws std::runtime_error naming the flag or file at fault.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServerTls& tls);

// True for 127.0.0.0/8, ::1 and localhost (the host part of "host:port" or "[v6]:port").
bool is_loopback_listen_address(const std::string& host_port);
// "host:port" with the host replaced by 127.0.0.1, keeping the port.
std::string loopback_listen_address(const std::string& host_port);

}  // namespace relora
