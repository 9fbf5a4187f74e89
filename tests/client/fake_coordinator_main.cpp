// client_fake_coordinator: the fake JobService as a program with relora-coordinator's flags
// (--listen, --port-file, --state-dir; others such as --metrics-port are accepted and ignored),
// so tests can drive `relora local` without the real coordinator or LibTorch workers. It prints
// its arguments first. FAKE_STEP_MS sets the step time (default 5 ms).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "tests/client/fake_coordinator.h"

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0", port_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--listen") listen = argv[i + 1];
    else if (flag == "--port-file") port_file = argv[i + 1];
  }
  // Blocked before gRPC starts its threads, so that only sigwait() below sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  const char* step_ms = std::getenv("FAKE_STEP_MS");
  auto jobs = std::make_shared<relora::testing::FakeJobs>(step_ms ? std::atoi(step_ms) : 5);
  relora::testing::FakeCoordinator server(jobs, listen);
  std::cout << "fake coordinator pid " << getpid() << " listening on " << server.address()
            << "\nfake coordinator args:";
  for (int i = 1; i < argc; ++i) std::cout << " " << argv[i];
  std::cout << std::endl;
  if (!port_file.empty()) {
    std::ofstream(port_file + ".tmp") << server.port() << "\n";
    std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  }
  int sig = 0;
  sigwait(&set, &sig);
  std::cout << "fake coordinator: signal " << sig << ", stopping" << std::endl;
  server.shutdown();
  return 0;
}
