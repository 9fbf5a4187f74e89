// The fake JobService (see fake_coordinator.h).
#include "tests/client/fake_coordinator.h"

#include <thread>

#include "common/job_spec.h"

namespace relora::testing {

using relora::v1::Job;

grpc::Status FakeJobs::submit(const relora::v1::SubmitJobRequest& req, Job* out) {
  relora::v1::JobSpec spec;
  try {
    spec = parse_job_spec_yaml(req.spec_yaml(), req.source_name().empty() ? "<job>" : req.source_name());
    resolve_job_spec(spec);
    validate_job_spec(spec);
  } catch (const JobSpecError& e) {
    return {grpc::StatusCode::INVALID_ARGUMENT, e.what()};
  }
  std::lock_guard<std::mutex> lock(mu_);
  Record r;
  r.job.set_id("job-" + std::to_string(next_id_++));
  r.job.set_name(spec.name());
  r.job.set_state(relora::v1::JOB_STATE_RUNNING);
  *r.job.mutable_spec() = spec;
  r.job.mutable_progress()->set_total_steps(spec.training().steps());
  r.job.set_submitted_unix_ms(1);
  r.job.set_started_unix_ms(1);
  r.start = std::chrono::steady_clock::now();
  add_event(r, 0, -1, "submitted", "");
  add_event(r, 0, -1, "started", "on 1 worker");
  *out = r.job;
  jobs_[r.job.id()] = std::move(r);
  return grpc::Status::OK;
}

void FakeJobs::add_event(Record& r, int64_t step, int rank, const std::string& kind, const std::string& message,
                         const std::string& checksum) {
  relora::v1::JobEvent e;
  e.set_seq(static_cast<int64_t>(r.events.size()) + 1);
  e.set_job_id(r.job.id());
  e.set_unix_ms(1'700'000'000'000);
  e.set_step(step);
  e.set_rank(rank);
  e.set_kind(kind);
  e.set_message(message);
  e.set_param_checksum(checksum);
  r.events.push_back(e);
}

void FakeJobs::advance(Record& r) {
  Job& j = r.job;
  if (j.state() != relora::v1::JOB_STATE_RUNNING) return;
  const int64_t total = j.progress().total_steps();
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - r.start).count();
  int64_t step = std::min<int64_t>(total, elapsed / step_ms_);
  const bool hang = j.name().rfind("hang", 0) == 0, fail = j.name().rfind("fail", 0) == 0;
  if (hang) step = std::min<int64_t>(step, 1);
  if (fail) step = std::min<int64_t>(step, total / 2);
  const int64_t before = j.progress().step();
  auto* p = j.mutable_progress();
  p->set_step(step);
  p->set_loss(10.0 - 0.01 * step);
  p->set_tokens_per_second(1000);
  p->set_cycle(step / 10);
  p->set_merges(step / 10);
  p->set_eta_seconds((total - step) * step_ms_ / 1000.0);
  if (before < total / 2 && step >= total / 2 && !fail) {
    // Named after the half-way step whichever step this poll landed on, so tests can match it.
    j.set_checkpoint("runs/" + j.name() + "/step-" + std::to_string(total / 2));
    add_event(r, total / 2, 0, "checkpoint", j.checkpoint());
    add_event(r, total / 2, 0, "ack", "merge", "c0ffee42");
  }
  if (fail && step == total / 2) {
    j.set_state(relora::v1::JOB_STATE_FAILED);
    j.set_error("simulated failure at step " + std::to_string(step));
    j.set_finished_unix_ms(2);
    add_event(r, step, -1, "failed", j.error());
  } else if (step == total && !hang) {
    j.set_state(relora::v1::JOB_STATE_COMPLETED);
    j.set_finished_unix_ms(2);
    j.set_summary_json(R"({"completed": true, "steps": )" + std::to_string(total) +
                       R"(, "final_train_loss": 2.5, "spec_workers": )" +
                       std::to_string(j.spec().cluster().workers()) + "}");
    add_event(r, step, -1, "completed", "");
  }
}

grpc::Status FakeJobs::get(const std::string& id, Job* out, std::vector<relora::v1::JobEvent>* events) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {grpc::StatusCode::NOT_FOUND, "job '" + id + "' not found"};
  advance(it->second);
  *out = it->second.job;
  if (events) *events = it->second.events;
  return grpc::Status::OK;
}

grpc::Status FakeJobs::cancel(const std::string& id, Job* out) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {grpc::StatusCode::NOT_FOUND, "job '" + id + "' not found"};
  advance(it->second);
  Job& j = it->second.job;
  if (j.state() != relora::v1::JOB_STATE_RUNNING) {
    return {grpc::StatusCode::FAILED_PRECONDITION, "job '" + id + "' already finished"};
  }
  j.set_state(relora::v1::JOB_STATE_CANCELLED);
  add_event(it->second, j.progress().step(), -1, "cancelled", "by request");
  *out = j;
  return grpc::Status::OK;
}

std::vector<Job> FakeJobs::list() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Job> out;
  for (auto& [id, r] : jobs_) {
    advance(r);
    out.push_back(r.job);
  }
  return out;
}

grpc::Status FakeJobService::SubmitJob(grpc::ServerContext*, const relora::v1::SubmitJobRequest* req,
                                       relora::v1::SubmitJobResponse* resp) {
  return jobs_->submit(*req, resp->mutable_job());
}

grpc::Status FakeJobService::GetJob(grpc::ServerContext*, const relora::v1::GetJobRequest* req, Job* resp) {
  return jobs_->get(req->job_id(), resp, nullptr);
}

grpc::Status FakeJobService::ListJobs(grpc::ServerContext*, const relora::v1::ListJobsRequest*,
                                      relora::v1::ListJobsResponse* resp) {
  for (auto& j : jobs_->list()) *resp->add_jobs() = j;
  return grpc::Status::OK;
}

grpc::Status FakeJobService::CancelJob(grpc::ServerContext*, const relora::v1::CancelJobRequest* req, Job* resp) {
  return jobs_->cancel(req->job_id(), resp);
}

grpc::Status FakeJobService::WatchJob(grpc::ServerContext* ctx, const relora::v1::WatchJobRequest* req,
                                      grpc::ServerWriter<relora::v1::JobUpdate>* writer) {
  int64_t sent_seq = req->after_event_seq();
  std::string last;
  while (!ctx->IsCancelled()) {
    Job job;
    std::vector<relora::v1::JobEvent> events;
    if (auto s = jobs_->get(req->job_id(), &job, &events); !s.ok()) return s;
    relora::v1::JobUpdate u;
    for (const auto& e : events) {
      if (e.seq() > sent_seq) *u.add_events() = e;
    }
    const std::string now = job.SerializeAsString();
    if (now != last || u.events_size() > 0) {
      *u.mutable_job() = job;
      if (!writer->Write(u)) return grpc::Status::CANCELLED;
      last = now;
      if (u.events_size() > 0) sent_seq = u.events(u.events_size() - 1).seq();
    }
    if (job.state() != relora::v1::JOB_STATE_RUNNING) return grpc::Status::OK;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return grpc::Status::CANCELLED;
}

grpc::Status FakeJobService::GetJobEvents(grpc::ServerContext*, const relora::v1::GetJobEventsRequest* req,
                                          relora::v1::GetJobEventsResponse* resp) {
  Job job;
  std::vector<relora::v1::JobEvent> events;
  if (auto s = jobs_->get(req->job_id(), &job, &events); !s.ok()) return s;
  for (const auto& e : events) {
    if (e.seq() > req->after_seq()) *resp->add_events() = e;
  }
  return grpc::Status::OK;
}

grpc::Status FakeJobService::ListWorkers(grpc::ServerContext*, const relora::v1::ListWorkersRequest*,
                                         relora::v1::ListWorkersResponse* resp) {
  auto* w = resp->add_workers();
  w->set_id("worker-fake");
  w->set_host("localhost");
  w->set_device("cpu");
  w->set_state("idle");
  return grpc::Status::OK;
}

FakeCoordinator::FakeCoordinator(std::shared_ptr<FakeJobs> jobs, const std::string& address)
    : service_(std::move(jobs)) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("fake coordinator: cannot listen on " + address);
}

void FakeCoordinator::shutdown() {
  if (server_) {
    // Open watch streams end with CANCELLED/UNAVAILABLE, like a coordinator going away.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    server_->Wait();
    server_.reset();
  }
}

}  // namespace relora::testing
