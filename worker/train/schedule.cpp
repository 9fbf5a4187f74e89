#include "worker/train/schedule.h"

#include <cmath>

#include "common/job_spec.h"

namespace relora::train {
namespace {

double cosine_decay(const CosineSchedule& s, double x) {
  const double span = static_cast<double>(s.total_steps - s.warmup_steps);
  const double progress = span > 0 ? (x - s.warmup_steps) / span : 1.0;
  return s.min_lr_ratio + (1.0 - s.min_lr_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace

double lr_multiplier_from_restart(const CosineSchedule& s, int64_t t, int64_t restart) {
  if (t < s.warmup_steps) return static_cast<double>(t) / static_cast<double>(s.warmup_steps);
  if (restart >= 0 && s.restart_warmup_steps > 0 && t >= restart && t - restart < s.restart_warmup_steps) {
    // Re-warm towards the value the cosine reaches at the end of this restart's warm-up.
    const double target = cosine_decay(s, static_cast<double>(restart + s.restart_warmup_steps));
    return static_cast<double>(t - restart) / static_cast<double>(s.restart_warmup_steps) * target;
  }
  return cosine_decay(s, static_cast<double>(t));
}

double lr_multiplier(const CosineSchedule& s, int64_t t) {
  const bool restarts = s.cycle_steps > 0 && s.restart_warmup_steps > 0 && t >= s.cycle_steps;
  return lr_multiplier_from_restart(s, t, restarts ? t / s.cycle_steps * s.cycle_steps : -1);
}

JobSchedule::JobSchedule(const relora::v1::JobSpec& spec) {
  const auto& tr = spec.training();
  const auto& rl = spec.relora();
  full_.total_steps = tr.steps();
  full_.warmup_steps = tr.warmup_steps();
  full_.min_lr_ratio = tr.min_lr_ratio();
  full_lr_ = tr.lr();

  const int64_t low_steps = low_rank_phase_steps(spec);
  has_low_rank_ = low_steps > 0;
  low_rank_start_ = tr.steps() - low_steps;
  if (has_low_rank_) {
    low_.total_steps = low_steps;
    low_.warmup_steps = std::min<int64_t>(tr.warmup_steps(), low_steps - 1);
    low_.min_lr_ratio = tr.min_lr_ratio();
    if (train_mode(spec) == TrainMode::kRelora) {
      low_.cycle_steps = rl.cycle_steps();
      low_.restart_warmup_steps = rl.restart_warmup_steps();
    }
    low_lr_ = rl.has_lr() ? rl.lr() : tr.lr();
  }
}

double JobSchedule::lr(int64_t step, int64_t rewarm_step) const {
  if (!has_low_rank_ || step < low_rank_start_) return full_lr_ * lr_multiplier(full_, step);
  const int64_t restart = rewarm_step >= low_rank_start_ ? rewarm_step - low_rank_start_ : -1;
  return low_lr_ * lr_multiplier_from_restart(low_, step - low_rank_start_, restart);
}

int64_t JobSchedule::planned_rewarm_step(int64_t step) const {
  if (!has_low_rank_ || low_.cycle_steps == 0 || low_.restart_warmup_steps == 0) return -1;
  const int64_t t = step - low_rank_start_;
  if (t < low_.cycle_steps) return -1;
  return low_rank_start_ + t / low_.cycle_steps * low_.cycle_steps;
}

int64_t JobSchedule::cycle(int64_t step) const {
  if (!has_low_rank_ || low_.cycle_steps == 0 || step < low_rank_start_) return 0;
  return (step - low_rank_start_) / low_.cycle_steps;
}

}  // namespace relora::train
