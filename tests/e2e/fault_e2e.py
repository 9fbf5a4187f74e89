"""Faults with real processes: a worker or the coordinator killed with SIGKILL mid-job.

- Elastic restart: a 2-worker job with cluster.min_workers 1 loses a worker after its first
  checkpoint; it restarts from that checkpoint on the one worker left (accumulation doubled, so
  the global batch and the sample order are unchanged) and completes with every step exactly
  once in metrics.jsonl, the final checkpoint at the last step, and the losses after the restart
  equal (1e-4 relative) to an uninterrupted run's: no sample skipped or repeated.
- Coordinator restart without reattaching (--reattach-timeout 0, the fallback when a run's ranks do
  not all come back): the coordinator killed after the job's first checkpoint and restarted on the
  same state; the workers reconnect, their stale runs are stopped, and the job resumes from its
  checkpoint and completes with the same curve; the finished job is not run again. (The default,
  a run adopted without retraining a step, is in zero_loss_e2e.py.)
- max_restarts: with cluster.max_restarts 0 a lost rank fails the job, saying why.
- Stall watchdog: a training thread blocked outside any collective makes its worker report the
  rank failed and exit (75); the job restarts from its checkpoint on another worker.
"""
import json
import os
import signal
import sys
import tempfile
import time
import unittest

from cluster_e2e import TEXT, Cluster, assert_curves_match, job_yaml, losses, main

STEPS = 64  # warm start 4 + 12 cycles of 5
CHECKPOINT_EVERY = 10


def steps_logged(ckpt_dir):
    with open(os.path.join(ckpt_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


class FaultTestCase(unittest.TestCase):
    """A temporary root per test and the helpers fault tests share (no tests of its own)."""

    def setUp(self):
        # RELORA_KEEP_TEST_DIRS=1 keeps the logs, checkpoints and state for a look afterwards.
        self.keep = bool(os.environ.get("RELORA_KEEP_TEST_DIRS"))
        self.tmp = None if self.keep else tempfile.TemporaryDirectory(prefix="relora-faults-")
        self.root = tempfile.mkdtemp(prefix="relora-faults-") if self.keep else self.tmp.name
        self.cache = os.path.join(self.root, "cache")

    def tearDown(self):
        if self.keep:
            print(f"kept {self.root}")
        else:
            self.tmp.cleanup()

    def write_job(self, name, workers, grad_accum, cluster_extra="", steps=STEPS, cycle_steps=5, micro_batch=4):
        path = os.path.join(self.root, name + ".yaml")
        ckpt = os.path.join(self.root, "runs", name)
        with open(path, "w") as f:
            f.write(job_yaml(name, ckpt, self.cache, workers, grad_accum, micro_batch=micro_batch, steps=steps,
                             checkpoint_every=CHECKPOINT_EVERY, cluster_extra=cluster_extra,
                             cycle_steps=cycle_steps))
        return path, ckpt

    def watch_to_completion(self, cluster, job_id, steps=STEPS):
        """Follows the job to its end; asserts it completed every step and checkpointed the last.
        Returns its final status."""
        watch = cluster.cli("watch", job_id, check=False)
        self.assertEqual(watch.returncode, 0, watch.stdout[-3000:] + watch.stderr)
        status = cluster.cli_json("status", job_id)
        self.assertEqual(status["state"], "completed")
        self.assertEqual(status["step"], steps)
        self.assertEqual(os.path.basename(status["checkpoint"]), f"step-{steps:08d}")
        return status

    def wait_workers(self, cluster, count):
        deadline = time.time() + 60
        while len(cluster.cli_json("workers")) < count:
            self.assertLess(time.time(), deadline, f"fewer than {count} workers registered")
            time.sleep(0.05)

    def events(self, cluster, job_id):
        events = cluster.cli_json("events", job_id)
        return events.get("events", []) if isinstance(events, dict) else events

    def kill_a_rank_after_first_checkpoint(self, cluster, job_id, rank=1, sig=signal.SIGKILL):
        """Send `sig` to the worker process of `rank` once the job has a checkpoint; returns the
        step. SIGKILL waits for the process to end; SIGSTOP leaves it frozen (alive, silent)."""
        deadline = time.time() + 240
        while time.time() < deadline:
            status = cluster.cli_json("status", job_id)
            if status["state"] != "running" and status["state"] != "queued":
                self.fail(f"the job ended before the fault could be injected: {status}")
            if status["checkpoint"]:
                victim = status["job"]["worker_ids"][rank]
                for i, proc in enumerate(cluster.procs):
                    with open(os.path.join(cluster.root, f"worker-{i}.log")) as f:
                        if f"as worker {victim}" in f.read():
                            proc.send_signal(sig)
                            if sig == signal.SIGKILL:
                                proc.wait()
                            self.frozen = proc if sig == signal.SIGSTOP else None
                            return status["step"]
                self.fail(f"no worker process logged the id {victim}")
            time.sleep(0.05)
        self.fail("the job never wrote a checkpoint")

    def ranks_stopped_at(self, ckpt, step, timeout=60):
        """True once metrics.jsonl ends at `step` and stays there for a second (the ranks wait at
        the boundary after it); False after `timeout`."""
        deadline = time.time() + timeout
        since = None
        while time.time() < deadline:
            logged = steps_logged(ckpt) if os.path.exists(os.path.join(ckpt, "metrics.jsonl")) else []
            if logged and logged[-1] == step:
                since = since or time.time()
                if time.time() - since >= 1.0:
                    return True
            else:
                since = None
            time.sleep(0.05)
        return False

    def run_reference(self, cluster, workers, grad_accum, **job_args):
        """The job uninterrupted, to completion; returns its job id and checkpoint directory."""
        ref_job, ref_ckpt = self.write_job("reference", workers=workers, grad_accum=grad_accum, **job_args)
        ref_id = cluster.cli_json("submit", ref_job)["job_id"]
        self.assertEqual(cluster.cli("watch", ref_id, check=False).returncode, 0)
        return ref_id, ref_ckpt


class WorkerFaults(FaultTestCase):
    def test_killed_worker_job_restarts_on_fewer_workers_and_completes(self):
        cluster = Cluster(self.root, workers=2)
        try:
            # The reference: the same job, uninterrupted (1 worker x accumulation 2 = 2 x 1).
            _, ref_ckpt = self.run_reference(cluster, workers=1, grad_accum=2)

            job, ckpt = self.write_job("elastic", workers=2, grad_accum=1, cluster_extra=", min_workers: 1")
            job_id = cluster.cli_json("submit", job)["job_id"]
            killed_at = self.kill_a_rank_after_first_checkpoint(cluster, job_id)
            status = self.watch_to_completion(cluster, job_id)
            self.assertEqual(status["restarts"], 1)
            self.assertEqual(status["world_size"], 1)
            kinds = [e["kind"] for e in self.events(cluster, job_id)]
            self.assertIn("restarting", kinds)
            restarting = [e for e in self.events(cluster, job_id) if e["kind"] == "restarting"][0]
            self.assertIn("restart 1 of 3, resuming from checkpoint", restarting["message"])
            scheduled = [e for e in self.events(cluster, job_id) if e["kind"] == "scheduled"]
            self.assertEqual(len(scheduled), 2)
            self.assertIn("1 of 2 workers (elastic)", scheduled[1]["message"])

            # Every step exactly once: the lost steps after the checkpoint were dropped and redone.
            self.assertEqual(steps_logged(ckpt), list(range(1, STEPS + 1)))
            # And the data order continued: the whole curve matches the uninterrupted run.
            ours, ref = losses(ckpt), losses(ref_ckpt)
            assert_curves_match(self, ours, ref, 1e-4, f" (killed near {killed_at})")
        finally:
            cluster.close()

    def test_coordinator_restarted_without_reattaching_resumes_from_the_checkpoint(self):
        # The fallback of a coordinator restart (zero_loss_e2e.py has the default: the run is
        # adopted): with --reattach-timeout 0 the running job is requeued at once, its ranks'
        # runs are stopped, and it resumes from its checkpoint.
        cluster = Cluster(self.root, workers=2)
        try:
            # The reference: the same job on the same two ranks, uninterrupted (the same world
            # size, so the same reduction order: the curves agree to rounding).
            ref_id, ref_ckpt = self.run_reference(cluster, workers=2, grad_accum=1)

            job, ckpt = self.write_job("survivor", workers=2, grad_accum=1)
            job_id = cluster.cli_json("submit", job)["job_id"]
            deadline = time.time() + 240
            while not cluster.cli_json("status", job_id)["checkpoint"]:
                self.assertLess(time.time(), deadline, "the job never wrote a checkpoint")
                time.sleep(0.05)
            cluster.kill_coordinator()
            time.sleep(1)  # the workers go on training, then find the coordinator gone
            # Same state dir, same port: the workers reconnect.
            cluster.start_coordinator(("--reattach-timeout", "0s"))

            self.watch_to_completion(cluster, job_id)
            kinds = [e["kind"] for e in self.events(cluster, job_id)]
            self.assertIn("requeued", kinds)
            # Both jobs are still known, each once; the finished one was not run again.
            listed = cluster.cli_json("list")
            jobs = listed if isinstance(listed, list) else listed.get("jobs", [])
            self.assertEqual(sorted(j["job_id"] for j in jobs), sorted([ref_id, job_id]))
            ref_events = [e["kind"] for e in self.events(cluster, ref_id)]
            self.assertEqual(ref_events.count("scheduled"), 1, ref_events)
            # Every step once in the log, and the same curve as the uninterrupted run.
            self.assertEqual(steps_logged(ckpt), list(range(1, STEPS + 1)))
            assert_curves_match(self, losses(ckpt), losses(ref_ckpt), 1e-4)
        finally:
            cluster.close()

    def test_frozen_worker_is_caught_by_the_timeouts_and_the_job_completes(self):
        # SIGSTOP: the process stays alive, its sockets open, but nothing runs (a hung host, a
        # collective that never returns). Its peer waits in an all-reduce until the collective
        # timeout; the coordinator hears no heartbeat and marks it lost; the job restarts on the
        # worker left and completes.
        cluster = Cluster(self.root, workers=2, worker_args=("--collective-timeout", "5"))
        try:
            job, ckpt = self.write_job("frozen", workers=2, grad_accum=1, cluster_extra=", min_workers: 1")
            self.wait_workers(cluster, 2)
            job_id = cluster.cli_json("submit", job)["job_id"]
            self.kill_a_rank_after_first_checkpoint(cluster, job_id, rank=1, sig=signal.SIGSTOP)
            started = time.time()
            status = self.watch_to_completion(cluster, job_id)
            self.assertEqual(status["world_size"], 1)
            self.assertGreaterEqual(status["restarts"], 1)
            events = self.events(cluster, job_id)
            # Whichever fires first: the peer's collective timeout (the all-reduce names it) or the
            # coordinator's heartbeat timeout (worker_lost).
            restarting = [e["message"] for e in events if e["kind"] == "restarting"]
            self.assertTrue(restarting, events)
            self.assertTrue("all-reduce" in restarting[0] or "no heartbeat" in restarting[0], restarting)
            self.assertEqual(steps_logged(ckpt), list(range(1, STEPS + 1)))
            self.assertLess(time.time() - started, 120)
        finally:
            if getattr(self, "frozen", None):
                self.frozen.send_signal(signal.SIGCONT)
            cluster.close()

    def test_a_stalled_training_thread_fails_its_rank_and_the_job_restarts(self):
        # RELORA_FAILPOINT=train-hang@12 blocks the training thread before step 13, outside any
        # collective (world 1 has none): only the stall watchdog can notice. The worker reports
        # the rank failed (retryable) and exits with status 75; the job restarts from its
        # checkpoint on the next worker and completes.
        cluster = Cluster(self.root, workers=0, worker_args=("--stall-timeout", "3"))
        try:
            hung = cluster.start_worker(env={"RELORA_FAILPOINT": "train-hang@12"})
            self.wait_workers(cluster, 1)
            job, ckpt = self.write_job("stall", workers=1, grad_accum=2)
            job_id = cluster.cli_json("submit", job)["job_id"]
            self.assertEqual(hung.wait(timeout=120), 75)
            cluster.start_worker()
            status = self.watch_to_completion(cluster, job_id)
            self.assertEqual(status["restarts"], 1)
            restarting = [e["message"] for e in self.events(cluster, job_id) if e["kind"] == "restarting"]
            self.assertEqual(len(restarting), 1, restarting)
            self.assertIn("stalled: the training thread made no progress for", restarting[0])
            self.assertIn("at step 12", restarting[0])
            self.assertEqual(steps_logged(ckpt), list(range(1, STEPS + 1)))
        finally:
            cluster.close()

    def test_worker_roots_reject_a_job_that_reaches_outside_them(self):
        data, runs = os.path.join(self.root, "data"), os.path.join(self.root, "runs")
        os.makedirs(data)
        os.makedirs(runs)
        cluster = Cluster(self.root, workers=1, worker_args=("--data-root", data, "--checkpoint-root", runs))
        try:
            # The job reads TEXT (in the build tree), which must stay outside `data`.
            self.assertNotEqual(os.path.commonpath([data, os.path.abspath(TEXT)]), data)
            job, _ = self.write_job("outside", workers=1, grad_accum=1)
            job_id = cluster.cli_json("submit", job)["job_id"]
            watch = cluster.cli("watch", job_id, check=False)
            self.assertEqual(watch.returncode, 1, watch.stdout[-3000:] + watch.stderr)
            status = cluster.cli_json("status", job_id)
            self.assertEqual(status["state"], "failed")
            self.assertIn("data.train[0]: ", status["error"])
            self.assertIn("outside the data roots", status["error"])
            self.assertEqual(status["restarts"], 0)  # bad input: not retried
        finally:
            cluster.close()

    def test_max_restarts_zero_fails_the_job_with_the_reason(self):
        cluster = Cluster(self.root, workers=2)
        try:
            job, _ = self.write_job("no-restarts", workers=2, grad_accum=1, cluster_extra=", max_restarts: 0")
            job_id = cluster.cli_json("submit", job)["job_id"]
            # Rank 0 this time: the rank that hosts the rendezvous store and writes checkpoints.
            self.kill_a_rank_after_first_checkpoint(cluster, job_id, rank=0)
            watch = cluster.cli("watch", job_id, check=False)
            self.assertEqual(watch.returncode, 1, watch.stdout[-3000:] + watch.stderr)
            status = cluster.cli_json("status", job_id)
            self.assertEqual(status["state"], "failed")
            self.assertIn("cluster.max_restarts is 0", status["error"])
            self.assertEqual(status["restarts"], 0)
        finally:
            cluster.close()


if __name__ == "__main__":
    sys.exit(main(__name__))
