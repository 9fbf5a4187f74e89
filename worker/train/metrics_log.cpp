#include "worker/train/metrics_log.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "worker/train/trainer.h"

namespace relora::train {

void MetricsLog::step_done(const StepReport& r, double /*data_wait_seconds*/) {
  if (!out_.is_open()) {
    std::filesystem::create_directories(std::filesystem::path(path_).parent_path());
    out_.open(path_, std::ios::app);
  }
  nlohmann::json line = {{"step", r.step},       {"loss", r.loss},   {"lr", r.lr},
                         {"grad_norm", r.grad_norm}, {"tokens_per_second", r.tokens_per_second},
                         {"cycle", r.cycle},     {"merges", r.merges}};
  out_ << line.dump() << "\n";
  out_.flush();
}

void MetricsLog::truncate_after(int64_t step) {
  std::ifstream in(path_);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      // A torn last line from a crash: drop it.
    }
  }
  in.close();
  if (out_.is_open()) out_.close();
  std::ofstream(path_, std::ios::trunc) << kept;
}

}  // namespace relora::train
