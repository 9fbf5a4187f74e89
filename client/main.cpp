// relora: the command-line client of the relora service.
//   relora submit JOB.yaml [--watch]      relora list        relora status JOB
//   relora watch JOB                      relora events JOB  relora cancel JOB
//   relora workers                        relora export JOB --out DIR
//   relora tokenize INPUT... --tokenizer MODEL --out DIR [--threads N]   (corpus -> token shards)
//   relora local JOB.yaml [--workers N]   (a coordinator and N workers on this machine; Prometheus
//                                         metrics on 9400 and 9401+i, --metrics-port-base N|0|-1)
// Exit codes: 0 ok, 1 job or operation failed, 2 usage or bad input, 3 coordinator unreachable
// (130 when `local` is interrupted with Ctrl-C).
// Environment: RELORA_COORDINATOR (the address, like --coordinator); RELORA_TOKEN (the client
// token, when --token-file is not given); RELORA_WORKER_BINARY and
// RELORA_COORDINATOR_BINARY (paths that win over the search next to this binary and on PATH).
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <iostream>

#include "common/crash_handler.h"
#include "client/commands.h"
#include "client/rpc.h"
#include "common/job_spec.h"

namespace {

using namespace relora::client;

// Validator for --timeout: the error names the accepted forms.
struct DurationValidator : CLI::Validator {
  DurationValidator() {
    name_ = "DURATION";
    func_ = [](const std::string& s) -> std::string {
      return parse_duration(s) ? "" : "'" + s + "' is not a duration (a number and ms, s, m or h: 10s, 500ms)";
    };
  }
};

}  // namespace

int main(int argc, char** argv) {
  relora::install_crash_handler("relora");
  CLI::App app{"relora: submit and follow ReLoRA pretraining jobs"};
  app.require_subcommand(1);
  // Global options are accepted after the subcommand too (`relora list --coordinator X`).
  app.fallthrough();

  GlobalOptions g;
  std::string output = "text", timeout = "10s", log_level = "warn";
  app.add_option("--coordinator", g.coordinator, "Coordinator address HOST:PORT")
      ->envname("RELORA_COORDINATOR")
      ->capture_default_str();
  app.add_option("-o,--output", output, "Output format")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  app.add_option("--timeout", timeout, "Deadline of every call to the coordinator")
      ->check(DurationValidator())
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  std::string token_file;
  app.add_option("--token-file", token_file,
                 "File holding the client bearer token (default: the token in RELORA_TOKEN, if set)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-ca", g.security.tls_ca_file, "Use TLS, trusting the coordinator's certificate to this PEM CA")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", g.security.tls_cert_file, "Client certificate for mutual TLS (PEM; with --tls-key)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", g.security.tls_key_file, "Private key of --tls-cert (PEM)")->check(CLI::ExistingFile);

  std::string job_file, job_id, out_dir;
  bool watch = false, no_check = false;
  auto* submit = app.add_subcommand("submit", "Submit a job; prints its id");
  submit->add_option("JOB.yaml", job_file, "Job spec file")->required();
  submit->add_flag("--watch", watch, "Follow the job until it finishes (like `watch`)");
  submit->add_flag("--no-check", no_check, "Send the spec without checking it here first (the coordinator checks it)");

  auto* list = app.add_subcommand("list", "List jobs");
  auto* status = app.add_subcommand("status", "Show one job");
  auto* watch_cmd = app.add_subcommand("watch", "Follow a job's progress until it finishes");
  auto* events = app.add_subcommand("events", "Show a job's events (merges, checkpoints, acknowledgements)");
  auto* cancel = app.add_subcommand("cancel", "Cancel a job");
  for (auto* sub : {status, watch_cmd, events, cancel}) sub->add_option("JOB", job_id, "Job id")->required();
  auto* workers = app.add_subcommand("workers", "List workers");
  auto* export_cmd = app.add_subcommand("export", "Export a job's newest checkpoint as a Hugging Face model");
  export_cmd->add_option("JOB", job_id, "Job id")->required();
  export_cmd->add_option("--out", out_dir, "Output directory")->required();

  TokenizeCommandOptions tokenize_opts;
  auto* tokenize = app.add_subcommand(
      "tokenize", "Tokenize corpus files (.txt, .json/.jsonl; .gz or .zst) into token shards and an index for data.train");
  tokenize->add_option("INPUT", tokenize_opts.inputs, "Corpus files or directories (read in sorted order)")->required();
  tokenize->add_option("--tokenizer", tokenize_opts.tokenizer_model, "SentencePiece model file")
      ->required()
      ->check(CLI::ExistingFile);
  tokenize->add_option("--out", tokenize_opts.out_dir, "Output directory (shards and index.json; rerun to resume)")
      ->required();
  tokenize->add_option("--threads", tokenize_opts.threads, "Encoder threads (default: all cores)")
      ->check(CLI::Range(1, 1024));
  tokenize->add_option("--shard-tokens", tokenize_opts.shard_tokens, "Tokens per shard (a shard ends at a document end)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();

  LocalOptions local_opts;
  int local_workers = 0;
  auto* local = app.add_subcommand("local", "Run one job on a coordinator and workers started on this machine");
  local->add_option("JOB.yaml", local_opts.job_file, "Job spec file")->required();
  auto* workers_opt = local->add_option("--workers", local_workers, "Worker processes (default: cluster.workers)")
                          ->check(CLI::Range(1, 256));
  local->add_option("--summary-json", local_opts.summary_json, "Write the run summary as JSON to this path");
  local->add_option("--state-dir", local_opts.state_dir, "Coordinator state and logs (default: a temporary dir)");
  local->add_flag("--keep-state", local_opts.keep_state, "Keep the temporary state directory after success");
  local->add_option("--metrics-port-base", local_opts.metrics_port_base,
                    "Prometheus metrics: the coordinator on this port, worker i on port+1+i (a taken port: any "
                    "free one); 0: free ports; -1: off")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  std::string startup_timeout = "30s";
  local->add_option("--startup-timeout", startup_timeout, "How long to wait for the coordinator to listen")
      ->check(DurationValidator())
      ->capture_default_str();
  std::string linger;  // none by default: the cluster stops when the job ends
  local->add_option("--linger", linger,
                    "Keep the coordinator and workers (and their metrics endpoints) up this long after the job "
                    "ended, so that Prometheus scrapes its final values (Ctrl-C ends it early)")
      ->check(DurationValidator());

  // Parse errors are one line on stderr and exit code 2; --help prints help and exits 0.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string what = e.what();
    // CLI11 reports "relora frobnicate" as a missing subcommand; name the word instead.
    const auto extra = app.remaining();
    if (app.get_subcommands().empty() && !extra.empty() && extra[0].rfind('-', 0) != 0) {
      what = "unknown command '" + extra[0] + "'";
    }
    std::cerr << "error: " << what << " (see relora --help)" << std::endl;
    return kExitUsage;
  }

  auto logger = spdlog::stderr_color_mt("relora");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  g.json = output == "json";
  g.timeout = *parse_duration(timeout);
  if (workers_opt->count() > 0) local_opts.workers = local_workers;
  local_opts.startup_timeout = *parse_duration(startup_timeout);
  if (!linger.empty()) local_opts.linger = *parse_duration(linger);

  try {
    if (!token_file.empty()) {
      g.security.token = relora::read_token_file(token_file);
    } else if (const char* env = std::getenv("RELORA_TOKEN"); env && *env) {
      g.security.token = env;
    }
    if (submit->parsed()) return cmd_submit(g, job_file, watch, !no_check);
    if (list->parsed()) return cmd_list(g);
    if (status->parsed()) return cmd_status(g, job_id);
    if (watch_cmd->parsed()) return cmd_watch(g, job_id);
    if (events->parsed()) return cmd_events(g, job_id);
    if (cancel->parsed()) return cmd_cancel(g, job_id);
    if (workers->parsed()) return cmd_workers(g);
    if (export_cmd->parsed()) return cmd_export(g, job_id, out_dir);
    if (local->parsed()) return cmd_local(g, local_opts);
    if (tokenize->parsed()) return cmd_tokenize(g, tokenize_opts);
  } catch (const RpcError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return e.exit_code();
  } catch (const relora::JobSpecError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return kExitFailed;
  }
  return kExitUsage;  // unreachable: require_subcommand(1)
}
