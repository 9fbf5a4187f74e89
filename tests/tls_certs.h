// Certificates made fresh by each test with the openssl command line: a CA, a server certificate
// for 127.0.0.1/localhost and a client certificate, both signed by the CA, plus a second CA that
// signed nothing here (for "wrong CA" cases). EC P-256 keys: quick to generate.
#pragma once

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "tests/test_paths.h"

namespace relora::testing {

struct TestCertificates {
  std::string ca, server_cert, server_key, client_cert, client_key, other_ca;
};

// Writes the files into `dir`. Throws with the failing command (openssl missing, say).
inline TestCertificates make_test_certificates(const std::string& dir) {
  auto run = [&](const std::string& command) {
    const std::string full = "cd '" + dir + "' && " + command + " >>openssl.log 2>&1";
    if (std::system(full.c_str()) != 0) throw std::runtime_error("failed: " + command + " (see " + dir + "/openssl.log)");
  };
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  std::ofstream(dir + "/server.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  std::ofstream(dir + "/client.ext") << "extendedKeyUsage=clientAuth\n";
  for (const std::string ca : {"ca", "other-ca"})
    run("openssl req -x509 " + key + " -keyout " + ca + ".key -out " + ca + ".pem -days 2 -subj /CN=relora-test-" + ca);
  for (const std::string who : {"server", "client"}) {
    run("openssl req " + key + " -keyout " + who + ".key -out " + who + ".csr -subj /CN=relora-test-" + who);
    run("openssl x509 -req -in " + who + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out " + who +
        ".pem -extfile " + who + ".ext");
  }
  return {dir + "/ca.pem",     dir + "/server.pem", dir + "/server.key",
          dir + "/client.pem", dir + "/client.key", dir + "/other-ca.pem"};
}

}  // namespace relora::testing
