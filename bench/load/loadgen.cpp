// relora-loadgen: drives a real relora-coordinator (started here on a free loopback port with a
// fresh state directory) with N concurrent clients issuing ListJobs, GetJob and WatchJob (time to
// the first update) while M simulated workers heartbeat and stream progress for running jobs.
// Prints throughput, p50/p99 latency per call and errors, as a table and (--json) as JSON.
//
//   relora-loadgen --coordinator-binary build/coordinator/relora-coordinator \
//                  --clients 200 --workers 8 --duration 20s --json load.json
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "relora/v1/service.grpc.pb.h"

namespace {

namespace v1 = relora::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A coordinator child process on 127.0.0.1:<free port>, killed at the end.
class CoordinatorProcess {
 public:
  CoordinatorProcess(const std::string& binary, const std::string& dir) {
    const std::string port_file = dir + "/port";
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string log = dir + "/coordinator.log";
      std::freopen(log.c_str(), "w", stdout);
      std::freopen(log.c_str(), "a", stderr);
      ::execl(binary.c_str(), binary.c_str(), "--listen", "127.0.0.1:0", "--port-file", port_file.c_str(),
              "--state-dir", (dir + "/state").c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 300 && !std::filesystem::exists(port_file); ++i) std::this_thread::sleep_for(50ms);
    std::ifstream in(port_file);
    int port = 0;
    if (!(in >> port)) throw std::runtime_error("the coordinator did not start (see " + dir + "/coordinator.log)");
    address_ = "127.0.0.1:" + std::to_string(port);
  }
  ~CoordinatorProcess() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  const std::string& address() const { return address_; }

 private:
  pid_t pid_ = -1;
  std::string address_;
};

// Latencies of one call kind, in microseconds.
struct Samples {
  std::mutex mu;
  std::vector<double> micros;
  std::atomic<int64_t> errors{0};
  std::map<std::string, int64_t> error_kinds;

  void add(double us) {
    std::lock_guard<std::mutex> lk(mu);
    micros.push_back(us);
  }
  void error(const grpc::Status& s) {
    ++errors;
    std::lock_guard<std::mutex> lk(mu);
    ++error_kinds[std::to_string(s.error_code()) + " " + s.error_message()];
  }
  double percentile(double p) {
    std::lock_guard<std::mutex> lk(mu);
    if (micros.empty()) return 0;
    std::vector<double> sorted = micros;
    std::sort(sorted.begin(), sorted.end());
    return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())))];
  }
};

double micros_since(Clock::time_point t0) { return std::chrono::duration<double, std::micro>(Clock::now() - t0).count(); }

void deadline(grpc::ClientContext& ctx, std::chrono::milliseconds d = 5000ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + d);
}

// One simulated worker: registers, opens its stream, heartbeats, and for an assigned job sends a
// progress report every interval (so that watchers get updates), until `stop`.
void run_sim_worker(const std::string& address, int index, const std::atomic<bool>& stop, Samples& heartbeats) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::WorkerService::NewStub(channel);
  v1::RegisterRequest req;
  req.set_host("sim-" + std::to_string(index));
  req.set_device("cpu");
  req.set_rendezvous_port(30000 + index);
  v1::RegisterResponse reg;
  grpc::ClientContext rctx;
  deadline(rctx);
  if (const auto s = stub->Register(&rctx, req, &reg); !s.ok()) {
    heartbeats.error(s);
    return;
  }
  grpc::ClientContext sctx;
  auto stream = stub->Connect(&sctx);
  v1::WorkerMessage hello;
  hello.set_worker_id(reg.worker_id());
  hello.set_hello(true);
  stream->Write(hello);
  std::mutex job_mu;
  std::string job_id;
  int rank = 0;
  std::thread reader([&] {
    v1::CoordinatorMessage msg;
    while (stream->Read(&msg)) {
      if (msg.has_assignment()) {
        std::lock_guard<std::mutex> lk(job_mu);
        job_id = msg.assignment().job_id();
        rank = msg.assignment().rank();
      }
    }
  });
  const auto interval = std::chrono::milliseconds(std::max<int64_t>(100, reg.heartbeat_interval_ms()));
  int64_t step = 0;
  auto next_heartbeat = Clock::now();
  while (!stop) {
    if (Clock::now() >= next_heartbeat) {
      grpc::ClientContext hctx;
      deadline(hctx);
      v1::HeartbeatRequest hb;
      hb.set_worker_id(reg.worker_id());
      v1::HeartbeatResponse hr;
      const auto t0 = Clock::now();
      const auto s = stub->Heartbeat(&hctx, hb, &hr);
      if (s.ok()) heartbeats.add(micros_since(t0));
      else heartbeats.error(s);
      next_heartbeat += interval;
    }
    {
      std::lock_guard<std::mutex> lk(job_mu);
      if (!job_id.empty()) {
        v1::WorkerMessage m;
        m.set_worker_id(reg.worker_id());
        auto* p = m.mutable_progress();
        p->set_job_id(job_id);
        p->set_rank(rank);
        p->mutable_progress()->set_step(++step);
        p->mutable_progress()->set_loss(10.0 / static_cast<double>(step));
        stream->Write(m);
      }
    }
    std::this_thread::sleep_for(100ms);
  }
  stream->WritesDone();
  sctx.TryCancel();
  reader.join();
  stream->Finish();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"relora-loadgen: concurrent clients and simulated workers against a real coordinator"};
  std::string binary = "build/coordinator/relora-coordinator", json_path, duration_text = "20s";
  int clients = 200, workers = 8, jobs = 4;
  app.add_option("--coordinator-binary", binary, "relora-coordinator to start")->capture_default_str();
  app.add_option("--clients", clients, "concurrent clients (one channel each)")->capture_default_str();
  app.add_option("--workers", workers, "simulated workers (heartbeats, progress)")->capture_default_str();
  app.add_option("--jobs", jobs, "jobs submitted (2 workers each) for the clients to read and watch")
      ->capture_default_str();
  app.add_option("--duration", duration_text, "how long the clients run, in seconds (20s)")->capture_default_str();
  app.add_option("--json", json_path, "write the results as JSON here");
  CLI11_PARSE(app, argc, argv);
  const auto duration = std::chrono::milliseconds(static_cast<int64_t>(std::stod(duration_text) * 1000));
  spdlog::set_level(spdlog::level::warn);

  const std::string dir = std::filesystem::temp_directory_path() / ("relora-loadgen-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  CoordinatorProcess coordinator(binary, dir);
  const std::string address = coordinator.address();

  std::atomic<bool> stop_workers{false}, stop_clients{false};
  Samples heartbeats;
  std::vector<std::thread> sim;
  for (int i = 0; i < workers; ++i)
    sim.emplace_back(run_sim_worker, address, i, std::cref(stop_workers), std::ref(heartbeats));

  // Jobs for the clients to list, read and watch (they run on the simulated workers).
  std::vector<std::string> job_ids;
  {
    auto stub = v1::JobService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    for (int j = 0; j < jobs; ++j) {
      grpc::ClientContext ctx;
      deadline(ctx);
      v1::SubmitJobRequest req;
      req.set_spec_yaml("name: load-" + std::to_string(j) +
                        "\nmodel: {preset: nano}\ndata: {train: [corpus.txt]}\ntraining: {steps: 1000000}\n"
                        "relora: {mode: full}\ncluster: {workers: 2}\n");
      req.set_source_name("loadgen");
      v1::SubmitJobResponse resp;
      const auto s = stub->SubmitJob(&ctx, req, &resp);
      if (!s.ok()) {
        std::fprintf(stderr, "submit failed: %s\n", s.error_message().c_str());
        return 1;
      }
      job_ids.push_back(resp.job().id());
    }
  }
  std::this_thread::sleep_for(500ms);  // let the workers register and the jobs start

  std::map<std::string, Samples> by_call;
  for (const char* k : {"ListJobs", "GetJob", "WatchJob"}) by_call[k];
  // Looked up once: the client threads only use these references.
  Samples& list_samples = by_call.at("ListJobs");
  Samples& get_samples = by_call.at("GetJob");
  Samples& watch_samples = by_call.at("WatchJob");
  std::vector<std::thread> threads;
  const auto t_start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = v1::JobService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
      std::mt19937 rng(static_cast<uint32_t>(c));
      while (!stop_clients) {
        const int kind = static_cast<int>(rng() % 3);
        const std::string& job = job_ids[rng() % job_ids.size()];
        grpc::ClientContext ctx;
        deadline(ctx);
        const auto t0 = Clock::now();
        if (kind == 0) {
          v1::ListJobsResponse resp;
          const auto s = stub->ListJobs(&ctx, v1::ListJobsRequest(), &resp);
          s.ok() ? list_samples.add(micros_since(t0)) : list_samples.error(s);
        } else if (kind == 1) {
          v1::GetJobRequest req;
          req.set_job_id(job);
          v1::Job resp;
          const auto s = stub->GetJob(&ctx, req, &resp);
          s.ok() ? get_samples.add(micros_since(t0)) : get_samples.error(s);
        } else {
          v1::WatchJobRequest req;
          req.set_job_id(job);
          auto reader = stub->WatchJob(&ctx, req);
          v1::JobUpdate update;
          if (reader->Read(&update)) {
            watch_samples.add(micros_since(t0));  // time to the first update
            ctx.TryCancel();
            while (reader->Read(&update)) {
            }
            reader->Finish();  // CANCELLED, as asked
          } else {
            watch_samples.error(reader->Finish());
          }
        }
      }
    });
  }
  std::this_thread::sleep_for(duration);
  stop_clients = true;
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  stop_workers = true;
  for (auto& t : sim) t.join();

  nlohmann::json out = {{"clients", clients}, {"workers", workers}, {"jobs", jobs}, {"seconds", seconds}};
  int64_t total = 0, errors = 0;
  std::vector<double> all;
  std::printf("%-10s %10s %10s %10s %10s %8s\n", "call", "calls", "calls/s", "p50 ms", "p99 ms", "errors");
  auto row = [&](const std::string& name, Samples& s) {
    const auto n = static_cast<int64_t>(s.micros.size());
    const double p50 = s.percentile(0.50) / 1000, p99 = s.percentile(0.99) / 1000;
    std::printf("%-10s %10lld %10.0f %10.2f %10.2f %8lld\n", name.c_str(), static_cast<long long>(n),
                static_cast<double>(n) / seconds, p50, p99, static_cast<long long>(s.errors.load()));
    out["calls"][name] = {{"count", n}, {"per_second", static_cast<double>(n) / seconds}, {"p50_ms", p50},
                          {"p99_ms", p99}, {"errors", s.errors.load()}, {"error_kinds", s.error_kinds}};
  };
  for (auto& [name, s] : by_call) {
    row(name, s);
    total += static_cast<int64_t>(s.micros.size());
    errors += s.errors;
    all.insert(all.end(), s.micros.begin(), s.micros.end());
  }
  row("Heartbeat", heartbeats);
  errors += heartbeats.errors;
  std::sort(all.begin(), all.end());
  const double p50 = all.empty() ? 0 : all[all.size() / 2] / 1000;
  const double p99 = all.empty() ? 0 : all[std::min(all.size() - 1, all.size() * 99 / 100)] / 1000;
  std::printf("%-10s %10lld %10.0f %10.2f %10.2f %8lld\n", "clients", static_cast<long long>(total),
              static_cast<double>(total) / seconds, p50, p99, static_cast<long long>(errors));
  out["total"] = {{"count", total}, {"per_second", static_cast<double>(total) / seconds}, {"p50_ms", p50},
                  {"p99_ms", p99}, {"errors", errors}};
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return errors == 0 ? 0 : 1;
}
