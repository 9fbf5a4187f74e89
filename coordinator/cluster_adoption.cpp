// ClusterState, zero-loss operations:
//   * adoption: a restarted coordinator takes over the runs that were RUNNING. Their ranks train
//     on while it is away (they need it only at cycle boundaries, where they wait for it) and
//     tell it which run they are in when they register again; once every rank of a run has, the
//     run goes on as it stands, with a barrier in recovery mode (cycle_barrier.h) that picks up
//     the boundary round wherever the previous coordinator left it. Only when the ranks do not
//     all come back in time is the job requeued to resume from its checkpoint.
//   * regrouping: a job running on fewer workers than cluster.workers (after a lost worker) takes
//     free workers back at its next cycle boundary: the ranks stop there with a checkpoint (the
//     boundary's own command left pending in it) and the job starts again from that checkpoint on
//     the bigger world. The sample order does not depend on the world size, so no step is trained
//     twice and the curve is the uninterrupted run's.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/cycle_plan.h"
#include "common/elastic.h"
#include "coordinator/cluster_state.h"
#include "coordinator/duration.h"

namespace relora::coordinator {

using relora::v1::CoordinatorMessage;

void ClusterState::begin_adoption_locked(JobRecord& rec) {
  const relora::v1::Job& j = rec.job;
  rec.adopting = true;
  rec.adopt_deadline = SteadyClock::now() + options_.reattach_timeout;
  rec.barrier = std::make_unique<CycleBarrier>(j.id(), spec_for_world(j.spec(), j.world_size()));
  rec.barrier->begin_recovery();
  rec.started_event = true;  // the run started long ago
  add_event_locked(rec, j.progress().step(), -1, "reattaching",
                   "the coordinator restarted while run " + std::to_string(j.run()) + " was running on " +
                       std::to_string(j.world_size()) + " worker(s); waiting up to " +
                       format_duration(options_.reattach_timeout) +
                       " for its ranks to report back (they train on meanwhile)");
  spdlog::info("job {}: waiting up to {} for the {} rank(s) of run {} to report back", j.id(),
               format_duration(options_.reattach_timeout), j.world_size(), j.run());
}

bool ClusterState::adopt_rank_locked(JobRecord& job, WorkerRecord& w, int32_t rank, int32_t world, int32_t run,
                                     int64_t resumed_step, PumpList& pumps) {
  const relora::v1::Job& j = job.job;
  if (!job.adopting || !w.info.job_id().empty()) return false;
  if (run != j.run() || world != j.world_size() || rank < 0 || rank >= world || j.worker_ids(rank) != w.info.id()) {
    spdlog::warn("worker {} reports run {} of job {} as rank {} of {}, but that run is run {} with rank {} on {}",
                 w.info.id(), run, j.id(), rank, world, j.run(), rank,
                 rank >= 0 && rank < j.worker_ids_size() ? j.worker_ids(rank) : std::string("no worker"));
    return false;
  }
  w.info.set_job_id(j.id());
  w.info.set_rank(rank);
  w.info.set_state("busy");
  w.draining_job.clear();
  spdlog::info("job {}: rank {} (worker {}) reported back, resumed up to step {}", j.id(), rank, w.info.id(),
               resumed_step);
  if (job.barrier->resumed_before(resumed_step).result == BarrierResult::kComplete) {
    // The previous coordinator resumed this rank from that boundary: all ranks had acknowledged.
    CoordinatorMessage msg;
    msg.mutable_resume()->set_job_id(j.id());
    msg.mutable_resume()->set_step(resumed_step);
    send_to_ranks_locked(job, msg, pumps);
  }
  int back = 0;
  for (const auto& wid : j.worker_ids()) {
    const WorkerRecord* r = find_worker_locked(wid);
    if (r != nullptr && r->info.job_id() == j.id()) ++back;
  }
  if (back == j.world_size()) {
    job.adopting = false;
    metrics_.run_reattached();
    add_event_locked(job, j.progress().step(), -1, "reattached",
                     "all " + std::to_string(back) + " rank(s) of run " + std::to_string(j.run()) +
                         " reported back after the coordinator restarted; the run goes on without a restart");
    spdlog::info("job {}: run {} adopted: all {} rank(s) reported back", j.id(), j.run(), back);
  }
  publish_counts_locked();
  return true;
}

SteadyClock::time_point ClusterState::check_adoptions_locked(SteadyClock::time_point now, PumpList& pumps) {
  SteadyClock::time_point next = SteadyClock::time_point::max();
  for (auto& [id, job] : jobs_) {
    if (!job.adopting) continue;
    if (now < job.adopt_deadline) {
      next = std::min(next, job.adopt_deadline);
      continue;
    }
    relora::v1::Job& j = job.job;
    int back = 0;
    for (const auto& wid : j.worker_ids()) {
      const WorkerRecord* r = find_worker_locked(wid);
      if (r != nullptr && r->info.job_id() == j.id()) ++back;
    }
    // The ranks that did come back are stopped (they drain), the job resumes from its checkpoint.
    stop_ranks_locked(job, /*cancel_ranks=*/true, "", pumps);
    j.set_state(relora::v1::JOB_STATE_QUEUED);
    j.clear_worker_ids();
    add_event_locked(job, j.progress().step(), -1, "requeued",
                     "only " + std::to_string(back) + " of " + std::to_string(j.world_size()) + " rank(s) of run " +
                         std::to_string(j.run()) + " reported back within " +
                         format_duration(options_.reattach_timeout) +
                         " of the coordinator's restart; queued again to resume from " +
                         (j.checkpoint().empty() ? std::string("the beginning") : "checkpoint " + j.checkpoint()));
    persist_locked(job);
    metrics_.job_restarted();
    spdlog::warn("job {}: only {} of {} rank(s) reported back; requeued", j.id(), back, j.world_size());
    queue_.push_front(j.id());
    schedule_locked(pumps);
    publish_counts_locked();
  }
  return next;
}

int32_t ClusterState::regroup_world_locked(const JobRecord& job) {
  const relora::v1::Job& j = job.job;
  // A regroup restarts from the checkpoint saved at the boundary: without one it would lose work.
  if (j.spec().checkpoint().dir().empty() || j.world_size() >= j.spec().cluster().workers()) return 0;
  int free = 0;
  for (const auto& [id, w] : workers_)
    if (w.free()) ++free;
  if (free == 0) return 0;
  const int world = elastic_world_size(j.spec(), j.world_size() + free);
  return world > j.world_size() ? world : 0;
}

void ClusterState::start_regroup_locked(JobRecord& job, int32_t world, const relora::v1::CycleCommand& planned,
                                        PumpList& pumps) {
  relora::v1::Job& j = job.job;
  job.regroup_world = world;
  metrics_.job_regrouped();
  CoordinatorMessage msg;
  auto* stop = msg.mutable_command();
  stop->set_job_id(j.id());
  stop->set_step(planned.step());
  stop->set_boundary(planned.boundary());
  stop->set_optimizer_reset("none");
  stop->set_stop(true);
  stop->set_checkpoint(true);
  stop->set_reason("regrouping onto " + std::to_string(world) + " workers from the checkpoint at step " +
                   std::to_string(planned.step()));
  add_event_locked(job, planned.step(), -1, "regrouping",
                   "free workers joined: run " + std::to_string(j.run()) + " stops at this " + planned.boundary() +
                       " boundary with a checkpoint and the job continues from it on " + std::to_string(world) +
                       " of " + std::to_string(j.spec().cluster().workers()) +
                       " workers, where the boundary's command is applied (no step is trained twice)");
  spdlog::info("job {}: regrouping from {} to {} workers at step {}", j.id(), j.world_size(), world, planned.step());
  send_to_ranks_locked(job, msg, pumps);
}

void ClusterState::regroup_locked(JobRecord& job, const std::string& reporter, PumpList& pumps) {
  relora::v1::Job& j = job.job;
  // The other ranks stop at the same boundary by themselves; until each says so it drains.
  stop_ranks_locked(job, /*cancel_ranks=*/true, reporter, pumps);
  j.set_state(relora::v1::JOB_STATE_QUEUED);
  j.clear_worker_ids();
  persist_locked(job);
  queue_.push_front(j.id());
  schedule_locked(pumps);
  publish_counts_locked();
}

}  // namespace relora::coordinator
