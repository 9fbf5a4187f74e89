// `relora tokenize`: the data layer's tokenize_corpus() with a progress line.
//
// Run in-process rather than through relora-worker: the data layer has no LibTorch, and
// SentencePiece is dlopen()ed from librelora_spm.so (spm_api.h), so the CLI gains no build or
// link dependency on LibTorch or SentencePiece. An image without the shim (the control-plane
// image) says so when `tokenize` runs; every other subcommand is unaffected.
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "client/commands.h"
#include "client/format.h"
#include "client/rpc.h"
#include "worker/data/corpus_tokenizer.h"

namespace relora::client {
namespace {

// "1,234 documents | 5.6M tokens | 12.3 MB/s | 45% | ETA 1m20s"
std::string progress_line(const data::TokenizeProgress& p) {
  const double mbps = p.seconds > 0 ? static_cast<double>(p.text_bytes) / 1e6 / p.seconds : 0.0;
  const double fraction = p.input_bytes_total > 0
                              ? static_cast<double>(p.input_bytes_done) / static_cast<double>(p.input_bytes_total)
                              : 0.0;
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f MB/s", mbps);
  std::string line = format_count(static_cast<double>(p.documents)) + " documents | " +
                     format_count(static_cast<double>(p.tokens)) + " tokens | " + rate + " | " +
                     std::to_string(static_cast<int>(fraction * 100)) + "% | " + std::to_string(p.shards) + " shards";
  if (!p.finished && fraction > 0.0 && fraction < 1.0) {
    line += " | ETA " + format_duration(p.seconds * (1.0 - fraction) / fraction);
  }
  return line;
}

}  // namespace

int cmd_tokenize(const GlobalOptions& g, const TokenizeCommandOptions& opts) {
  data::TokenizeOptions options;
  options.inputs = opts.inputs;
  options.out_dir = opts.out_dir;
  options.tokenizer_model = opts.tokenizer_model;
  options.threads = opts.threads;
  options.shard_tokens = opts.shard_tokens;
  // A terminal gets one line redrawn in place; a log file gets a plain line every 10 s and one
  // at the end.
  const bool tty = ::isatty(STDERR_FILENO) == 1;
  double last_plain = 0;
  const auto result = data::tokenize_corpus(options, [&](const data::TokenizeProgress& p) {
    if (tty) {
      std::cerr << "\r\033[K" << progress_line(p) << (p.finished ? "\n" : "") << std::flush;
    } else if (p.finished || p.seconds - last_plain >= 10.0) {
      last_plain = p.seconds;
      std::cerr << "tokenize: " << progress_line(p) << std::endl;
    }
  });
  if (g.json) {
    std::cout << nlohmann::json{{"index", result.index_file},       {"documents", result.documents},
                                {"tokens", result.tokens},          {"shards", result.shards},
                                {"shards_reused", result.shards_reused}, {"text_bytes", result.text_bytes},
                                {"seconds", result.seconds}}
                     .dump(2)
              << std::endl;
  } else {
    std::cout << result.index_file << ": " << result.shards << " shards (" << result.shards_reused
              << " kept from an earlier run), " << result.documents << " documents, " << result.tokens << " tokens"
              << std::endl;
  }
  return kExitOk;
}

}  // namespace relora::client
