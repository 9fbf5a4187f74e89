// Learning-rate schedules: the paper's jagged cosine (restart warm-ups at every ReLoRA cycle) and
// the plain warm-up + cosine used for full-rank and LoRA training. Pure functions, no LibTorch.
#pragma once

#include <cstdint>

#include "relora/v1/job.pb.h"

namespace relora::train {

struct CosineSchedule {
  int64_t total_steps = 1;      // T
  int64_t warmup_steps = 0;     // W0: first warm-up
  int64_t cycle_steps = 0;      // C: 0 = no restarts (plain cosine)
  int64_t restart_warmup_steps = 0;  // Wr
  double min_lr_ratio = 0.1;    // m
};

// The multiplier lambda(t) of relora-spec.md ("Jagged cosine schedule"), t in [0, T):
//   t < W0                 -> t / W0
//   r = t mod C < Wr, t >= C -> r / Wr * cosine(n*C + Wr)      (re-warm after each merge)
//   otherwise              -> cosine(t),  cosine(x) = m + (1-m)/2 (1 + cos(pi (x - W0) / (T - W0)))
// With cycle_steps == 0 this is the usual linear warm-up then cosine decay to m.
double lr_multiplier(const CosineSchedule& s, int64_t t);

// The same multiplier when the last re-warm actually began at step `restart` (-1: none so far).
// ReLoRA's re-warms are commanded (by the coordinator in a cluster, by the spec's plan in
// standalone mode): the trainer passes the step of the last boundary whose command said rewarm.
// With restart = the planned one (n * C for t in [n C, (n+1) C), n >= 1) this equals lr_multiplier.
double lr_multiplier_from_restart(const CosineSchedule& s, int64_t t, int64_t restart);

// The whole job's schedule, in absolute learning rates. A full-rank warm start (warm_start_steps
// = Ws) follows the full-rank cosine over the whole job (as if the run were full-rank, cut at Ws,
// like the paper's warm-start checkpoints) at training.lr; the low-rank phase then gets a schedule
// rebuilt for the remaining T - Ws steps with a fresh first warm-up, at relora.lr.
class JobSchedule {
 public:
  explicit JobSchedule(const relora::v1::JobSpec& spec);
  // The learning rate at `step` when the last commanded re-warm began at step `rewarm_step`
  // (absolute; -1 or a step before the low-rank phase: none in this phase).
  double lr(int64_t step, int64_t rewarm_step) const;
  // The planned schedule: every ReLoRA cycle end re-warms (restart_warmup_steps > 0).
  double lr(int64_t step) const { return lr(step, planned_rewarm_step(step)); }
  // The step of the last planned re-warm at or before `step` (-1: none).
  int64_t planned_rewarm_step(int64_t step) const;
  // Index of the ReLoRA cycle that `step` belongs to (0 during the warm start and the first cycle).
  int64_t cycle(int64_t step) const;
  int64_t low_rank_start() const { return low_rank_start_; }
  const CosineSchedule& full_rank() const { return full_; }
  const CosineSchedule& low_rank() const { return low_; }

 private:
  CosineSchedule full_;
  CosineSchedule low_;
  double full_lr_ = 0;
  double low_lr_ = 0;
  int64_t low_rank_start_ = 0;  // first step of the low-rank phase (total steps in mode full)
  bool has_low_rank_ = false;
};

}  // namespace relora::train
