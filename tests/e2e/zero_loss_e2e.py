"""Zero-loss operations with real processes (issue 18): no step is trained twice when

- the coordinator is SIGKILLed mid-cycle and restarted 10 s later: the workers train on to the
  next boundary, wait there, report their run to the new coordinator, which adopts it (events
  `reattaching`, `reattached`; no `requeued`, no `restarting`, one `scheduled`);
- the coordinator is SIGKILLed while the ranks wait at a cycle boundary (frozen with SIGSTOP
  first, so that the ranks are sure to be waiting there): they send the boundary again and the
  adopted run applies its merge;
- a job that lost a worker (running on 1 of 2) gets a replacement worker back at its next cycle
  boundary: the run stops there with a checkpoint and the job continues on 2 workers from it.

Each completes with every step once in metrics.jsonl and the loss curve of an uninterrupted run
(1e-4 relative).
"""
import os
import signal
import sys
import time

from cluster_e2e import Cluster, assert_curves_match, losses, main
from fault_e2e import FaultTestCase, steps_logged

STEPS = 64
CYCLE = 20  # boundaries: low_rank_start 4, cycle_end 24 and 44, job_end 64
DOWNTIME = 10  # seconds the coordinator stays dead


def runs_of(events):
    """How many runs the job had (one `scheduled` event each)."""
    return sum(1 for e in events if e["kind"] == "scheduled")


class ZeroLoss(FaultTestCase):
    def start_in_first_cycle(self, cluster, name):
        """Runs the uninterrupted reference, then submits the job and waits until it trains inside
        its first cycle (steps 8..19 of 4..24); returns the job id, its checkpoint directory, the
        reference's and the step reached."""
        _, ref_ckpt = self.run_reference(cluster, workers=2, grad_accum=1, cycle_steps=CYCLE)
        job, ckpt = self.write_job(name, workers=2, grad_accum=1, cycle_steps=CYCLE)
        job_id = cluster.cli_json("submit", job)["job_id"]
        return job_id, ckpt, ref_ckpt, self.wait_step(cluster, job_id, 8, 20)

    def wait_step(self, cluster, job_id, at_least, below):
        """Polls until the job's reported step is in [at_least, below); returns it."""
        deadline = time.time() + 120
        while time.time() < deadline:
            step = cluster.cli_json("status", job_id)["step"]
            if at_least <= step < below:
                return step
            self.assertLess(step, below, f"the job passed step {below} before the fault")
            time.sleep(0.02)
        self.fail(f"the job never reached step {at_least}")

    def assert_adopted_without_retraining(self, cluster, job_id, ckpt, ref_ckpt, note):
        status = self.watch_to_completion(cluster, job_id)
        self.assertEqual(status["world_size"], 2)
        self.assertEqual(status["restarts"], 0)
        events = self.events(cluster, job_id)
        kinds = [e["kind"] for e in events]
        self.assertIn("reattaching", kinds)
        self.assertIn("reattached", kinds)
        self.assertNotIn("requeued", kinds)
        self.assertNotIn("restarting", kinds)
        # One run from start to end: no step was trained twice.
        self.assertEqual(runs_of(events), 1, kinds)
        self.assertEqual(steps_logged(ckpt), list(range(1, STEPS + 1)))
        assert_curves_match(self, losses(ckpt), losses(ref_ckpt), 1e-4, note)
        merges = [e for e in events if e["kind"] == "command" and "merge" in e["message"]]
        self.assertEqual(sorted(int(e["step"]) for e in merges), [24, 44], merges)
        print(f"\n  {note}: 1 run, 0 steps trained twice, {len(merges)} merges", file=sys.stderr)

    def test_coordinator_killed_mid_cycle_is_reattached_without_retraining(self):
        cluster = Cluster(self.root, workers=2)
        try:
            job_id, ckpt, ref_ckpt, killed_at = self.start_in_first_cycle(cluster, "mid-cycle")
            cluster.kill_coordinator()
            time.sleep(DOWNTIME)  # the ranks train on to the boundary at 24 and wait there
            cluster.start_coordinator()
            self.assert_adopted_without_retraining(cluster, job_id, ckpt, ref_ckpt,
                                                   f"coordinator killed at step {killed_at}, down {DOWNTIME} s")
        finally:
            cluster.close()

    def test_coordinator_killed_while_the_ranks_wait_at_a_boundary_is_reattached(self):
        cluster = Cluster(self.root, workers=2)
        try:
            job_id, ckpt, ref_ckpt, _ = self.start_in_first_cycle(cluster, "at-boundary")
            # Frozen, the coordinator collects no boundary: the ranks stop at 24 and wait for it.
            cluster.coordinator.send_signal(signal.SIGSTOP)
            self.assertTrue(self.ranks_stopped_at(ckpt, 24), "the ranks never stopped at step 24")
            cluster.coordinator.send_signal(signal.SIGKILL)
            cluster.coordinator.wait()
            time.sleep(DOWNTIME)
            cluster.start_coordinator()
            self.assert_adopted_without_retraining(cluster, job_id, ckpt, ref_ckpt,
                                                   f"coordinator killed with the ranks at the boundary of step 24, "
                                                   f"down {DOWNTIME} s")
            resent = 0
            for i in range(2):
                with open(os.path.join(self.root, f"worker-{i}.log")) as f:
                    resent += "sending the pending boundary for step 24 again" in f.read()
            self.assertEqual(resent, 2, "both ranks should have sent their boundary again")
        finally:
            cluster.close()

    def test_a_replacement_worker_joins_the_job_at_its_next_boundary(self):
        # Long enough that the replacement process (a LibTorch start: seconds on a loaded machine)
        # registers well before the last boundary: 100 steps after the warm start, cycles of 10,
        # 32 sequences per micro-batch (each step 8x the other tests' work).
        steps, cycle, shape = 104, 10, {"micro_batch": 32}
        cluster = Cluster(self.root, workers=2)
        try:
            _, ref_ckpt = self.run_reference(cluster, workers=2, grad_accum=1, steps=steps, cycle_steps=cycle,
                                             **shape)
            job, ckpt = self.write_job("regroup", workers=2, grad_accum=1, cluster_extra=", min_workers: 1",
                                       steps=steps, cycle_steps=cycle, **shape)
            job_id = cluster.cli_json("submit", job)["job_id"]
            killed_at = self.kill_a_rank_after_first_checkpoint(cluster, job_id)
            deadline = time.time() + 60
            while runs_of(self.events(cluster, job_id)) < 2:  # the restart on the worker left
                self.assertLess(time.time(), deadline, "the job did not restart on one worker")
                time.sleep(0.05)
            cluster.start_worker()
            self.wait_workers(cluster, 3)  # the killed one stays listed (lost)
            joined_at = cluster.cli_json("status", job_id)["step"]
            self.assertLess(joined_at, steps - cycle, "the replacement registered after the job's last boundary")

            status = self.watch_to_completion(cluster, job_id, steps=steps)
            self.assertEqual(status["world_size"], 2)  # what `relora status` shows
            self.assertEqual(status["restarts"], 1)  # the lost worker; a regroup is not a restart
            events = self.events(cluster, job_id)
            scheduled = [e for e in events if e["kind"] == "scheduled"]
            self.assertEqual(len(scheduled), 3, [e["kind"] for e in events])
            self.assertIn("1 of 2 workers (elastic)", scheduled[1]["message"])
            self.assertNotIn("elastic", scheduled[2]["message"])
            regroups = [e for e in events if e["kind"] == "regrouping"]
            self.assertEqual(len(regroups), 1)
            grown_at = int(regroups[0]["step"])
            self.assertEqual(int(scheduled[2]["step"]), grown_at)  # continued from the boundary itself
            self.assertEqual(steps_logged(ckpt), list(range(1, steps + 1)))
            assert_curves_match(self, losses(ckpt), losses(ref_ckpt), 1e-4,
                                f" (rank 1 killed near step {killed_at}, back to 2 workers at step {grown_at})")
            print(f"\n  rank 1 killed near step {killed_at}; 1 worker from the checkpoint; a new worker registered "
                  f"at step {joined_at}; 2 again from the boundary at step {grown_at}", file=sys.stderr)
        finally:
            cluster.close()


if __name__ == "__main__":
    sys.exit(main(__name__))
