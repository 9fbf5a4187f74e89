// Coordinator calls, deadlines and status -> exit code (see rpc.h).
#include "client/rpc.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "client/format.h"

namespace relora::client {

int exit_code_for(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return kExitOk;
    // The request itself was wrong: the user fixes the input, not the system.
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    // Missing or wrong token: also fixed by the user (--token-file, RELORA_TOKEN).
    case grpc::StatusCode::UNAUTHENTICATED: return kExitUsage;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED: return kExitUnreachable;
    // NOT_FOUND, FAILED_PRECONDITION, INTERNAL, ...: the operation failed.
    default: return kExitFailed;
  }
}

std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  size_t pos = 0;
  while (pos < text.size() && (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.')) ++pos;
  if (pos == 0) return std::nullopt;
  const std::string number = text.substr(0, pos), unit = text.substr(pos);
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(value)) return std::nullopt;
  double ms_per_unit = 0;
  // A bare number is rejected, as in the coordinator's flags: "5" could mean seconds or ms.
  if (unit == "s") ms_per_unit = 1000;
  else if (unit == "ms") ms_per_unit = 1;
  else if (unit == "m") ms_per_unit = 60e3;
  else if (unit == "h") ms_per_unit = 3600e3;
  else return std::nullopt;
  const double ms = value * ms_per_unit;
  if (ms < 1 || ms > 1e12) return std::nullopt;  // 0 would fail every call; > 30 years is a typo
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

std::string describe_status(const grpc::Status& status, const std::string& address,
                            std::chrono::milliseconds timeout) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return "cannot reach the coordinator at " + address +
             (status.error_message().empty() ? "" : " (" + status.error_message() + ")") +
             "; is it running? (--coordinator or RELORA_COORDINATOR)";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "the coordinator at " + address + " did not answer within " +
             format_timeout(timeout.count()) + " (--timeout)";
    default:
      return status.error_message().empty() ? "the coordinator returned " + std::to_string(status.error_code())
                                            : status.error_message();
  }
}

Rpc::Rpc(std::string address, std::chrono::milliseconds timeout, const ClientSecurity& security)
    : address_(std::move(address)), timeout_(timeout), token_(security.token) {
  grpc::ChannelArguments args;
  // A dead coordinator should fail the first call quickly rather than after gRPC's default
  // reconnect backoff (which starts at 1 s and grows).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  channel_ = grpc::CreateCustomChannel(address_, channel_credentials(security), args);
  stub_ = relora::v1::JobService::NewStub(channel_);
}

void Rpc::prepare(grpc::ClientContext& context) const {
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  add_bearer_token(context, token_);
}

void Rpc::check(const grpc::Status& status) const {
  if (!status.ok()) throw RpcError(status.error_code(), describe_status(status, address_, timeout_));
}

relora::v1::Job Rpc::submit(const std::string& spec_yaml, const std::string& source_name) {
  grpc::ClientContext ctx;
  prepare(ctx);
  relora::v1::SubmitJobRequest req;
  req.set_spec_yaml(spec_yaml);
  req.set_source_name(source_name);
  relora::v1::SubmitJobResponse resp;
  check(stub_->SubmitJob(&ctx, req, &resp));
  return resp.job();
}

relora::v1::Job Rpc::get_job(const std::string& job_id) {
  grpc::ClientContext ctx;
  prepare(ctx);
  relora::v1::GetJobRequest req;
  req.set_job_id(job_id);
  relora::v1::Job job;
  check(stub_->GetJob(&ctx, req, &job));
  return job;
}

std::vector<relora::v1::Job> Rpc::list_jobs() {
  grpc::ClientContext ctx;
  prepare(ctx);
  relora::v1::ListJobsResponse resp;
  check(stub_->ListJobs(&ctx, relora::v1::ListJobsRequest(), &resp));
  return {resp.jobs().begin(), resp.jobs().end()};
}

relora::v1::Job Rpc::cancel(const std::string& job_id) {
  grpc::ClientContext ctx;
  prepare(ctx);
  relora::v1::CancelJobRequest req;
  req.set_job_id(job_id);
  relora::v1::Job job;
  check(stub_->CancelJob(&ctx, req, &job));
  return job;
}

std::vector<relora::v1::JobEvent> Rpc::events(const std::string& job_id, int64_t after_seq) {
  grpc::ClientContext ctx;
  prepare(ctx);
  relora::v1::GetJobEventsRequest req;
  req.set_job_id(job_id);
  req.set_after_seq(after_seq);
  relora::v1::GetJobEventsResponse resp;
  check(stub_->GetJobEvents(&ctx, req, &resp));
  return {resp.events().begin(), resp.events().end()};
}

std::vector<relora::v1::WorkerInfo> Rpc::workers() {
  grpc::ClientContext ctx;
  prepare(ctx);
  relora::v1::ListWorkersResponse resp;
  check(stub_->ListWorkers(&ctx, relora::v1::ListWorkersRequest(), &resp));
  return {resp.workers().begin(), resp.workers().end()};
}

std::unique_ptr<grpc::ClientReader<relora::v1::JobUpdate>> Rpc::watch(grpc::ClientContext& context,
                                                                      const std::string& job_id,
                                                                      int64_t after_event_seq) {
  relora::v1::WatchJobRequest req;
  req.set_job_id(job_id);
  req.set_after_event_seq(after_event_seq);
  add_bearer_token(context, token_);
  return stub_->WatchJob(&context, req);
}

}  // namespace relora::client
