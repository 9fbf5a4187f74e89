"""Soak test (ctest label `long`, not in the default suite): 8 workers on a tiny model, a 404-step
ReLoRA job, and seeded random faults until it completes:

- ranks of the job SIGKILLed (a replacement worker started after a random delay),
- the coordinator SIGKILLed and restarted after a random delay,
- the coordinator SIGKILLed while the ranks wait at a cycle boundary (frozen with SIGSTOP first),
- rank 0 crashing in the middle of a checkpoint save (RELORA_FAILPOINT=checkpoint-save@40 on the
  first worker, which is rank 0 of the first run).

The job must complete with every step once in metrics.jsonl, and a loss curve equal to an
uninterrupted run's (1e-4 relative). It prints the faults, the steps trained twice (steps the
rank 0 of some run trained beyond the 404: work lost to restarts from checkpoints) and the time.

    RELORA_SOAK_SEED=7 python3 tests/e2e/soak_e2e.py     # or: ctest -L long -R E2eSoak
"""
import os
import random
import re
import signal
import sys
import time

from cluster_e2e import Cluster, assert_curves_match, losses, main
from fault_e2e import CHECKPOINT_EVERY, FaultTestCase, steps_logged

STEPS = 404  # warm start 4 + 8 cycles of 50
CYCLE = 50
WORKERS = 8
MIN_FAULTS = 10
SEED = int(os.environ.get("RELORA_SOAK_SEED", "2026"))


def boundaries():
    """The cycle boundaries (low-rank start at 4, then every CYCLE steps)."""
    return [4] + list(range(4 + CYCLE, STEPS, CYCLE))


def rank0_steps(root, job_name):
    """Optimizer steps trained by the rank 0 of every run of `job_name`, from the worker logs
    (each run's rank 0 logs every step: training.log_every_steps 1)."""
    total = 0
    for name in sorted(os.listdir(root)):
        if not (name.startswith("worker-") and name.endswith(".log")):
            continue
        rank = None
        with open(os.path.join(root, name), errors="replace") as f:
            for line in f:
                m = re.search(r"job \S+ \((\S+)\): rank (\d+) of \d+", line)
                if m:
                    rank = int(m.group(2)) if m.group(1) == job_name else None
                elif rank == 0 and re.search(rf"step \d+/{STEPS} \|", line):
                    total += 1
    return total


class Soak(FaultTestCase):
    def test_a_job_survives_random_faults_without_losing_its_curve(self):
        rng = random.Random(SEED)
        started = time.time()
        extra = ", min_workers: 1, max_restarts: 100"
        # A rank stuck in a collective whose peer died comes free after the collective timeout:
        # 30 s instead of 300 keeps the soak short.
        cluster = Cluster(self.root, workers=0, worker_args=("--collective-timeout", "30"))
        try:
            # The first worker registers first (rank 0 of the first run) and crashes in the
            # middle of saving the checkpoint of step 40.
            cluster.start_worker(env={"RELORA_FAILPOINT": f"checkpoint-save@{4 * CHECKPOINT_EVERY}"})
            self.wait_workers(cluster, 1)
            for _ in range(WORKERS - 1):
                cluster.start_worker()
            self.wait_workers(cluster, WORKERS)
            ref_job, ref_ckpt = self.write_job("reference", workers=WORKERS, grad_accum=1, steps=STEPS,
                                               cycle_steps=CYCLE)
            job, ckpt = self.write_job("soak", workers=WORKERS, grad_accum=1, steps=STEPS, cycle_steps=CYCLE,
                                       cluster_extra=extra)
            with open(job) as f:
                text = f.read().replace("seed: 11}", "seed: 11, log_every_steps: 1}")  # every step in the logs
            with open(job, "w") as f:
                f.write(text)
            job_id = cluster.cli_json("submit", job)["job_id"]
            faults = self.inject_faults(cluster, job_id, ckpt, rng)
            status = self.watch_to_completion(cluster, job_id, steps=STEPS)
            soak_seconds = time.time() - started

            # The uninterrupted reference, on the workers left (the world size does not change the
            # curve beyond rounding: sample order and global batch are the same).
            ref_id = cluster.cli_json("submit", ref_job)["job_id"]
            self.assertEqual(cluster.cli("watch", ref_id, check=False).returncode, 0)
            self.assertEqual(steps_logged(ckpt), list(range(1, STEPS + 1)))
            assert_curves_match(self, losses(ckpt), losses(ref_ckpt), 1e-4, " (soak)")
            trained = rank0_steps(self.root, "soak")
            kinds = [e["kind"] for e in self.events(cluster, job_id)]
            summary = (f"soak seed {SEED}: {len(faults)} faults ({', '.join(f for _, f in faults)}); "
                       f"{kinds.count('scheduled')} runs, {kinds.count('reattached')} reattached, "
                       f"{kinds.count('regrouping')} regroups, {status['restarts']} restarts; "
                       f"steps trained {trained} for {STEPS}: {trained - STEPS} trained twice; "
                       f"{soak_seconds:.0f} s")
            print("\n  " + summary, file=sys.stderr)
            with open(os.path.join(os.environ.get("RELORA_BUILD_DIR", "."), "soak-summary.txt"), "w") as f:
                f.write(summary + "\n")
            self.assertGreaterEqual(len(faults), MIN_FAULTS)
            for needed in ("checkpoint-save crash", "coordinator killed at a boundary"):
                self.assertIn(needed, [f for _, f in faults])
        finally:
            cluster.close()

    def job_workers(self, cluster, job_id):
        try:
            return cluster.cli_json("status", job_id)["job"]["worker_ids"]
        except Exception:  # the coordinator is down or restarting
            return []

    def process_of(self, cluster, worker_id):
        """The live worker process that registered as `worker_id`, if any."""
        for i, proc in enumerate(cluster.procs):
            if proc.poll() is not None:
                continue
            with open(os.path.join(cluster.root, f"worker-{i}.log"), errors="replace") as f:
                if f"as worker {worker_id} " in f.read():
                    return proc
        return None

    def step_of(self, cluster, job_id):
        try:
            return cluster.cli_json("status", job_id)["step"], cluster.cli_json("status", job_id)["state"]
        except Exception:  # the coordinator is down or restarting
            return None, None

    def inject_faults(self, cluster, job_id, ckpt, rng):
        """Faults at random times until at least MIN_FAULTS happened and the planned ones too;
        returns [(step, what)]."""
        faults = []
        boundary_done = False
        deadline = time.time() + 1500
        while time.time() < deadline:
            step, state = self.step_of(cluster, job_id)
            if state in ("completed", "failed", "cancelled"):
                break
            # The failpoint's crash is a fault of its own: note it once it happened.
            first = cluster.procs[0]
            if first.poll() is not None and not any(f == "checkpoint-save crash" for _, f in faults):
                faults.append((4 * CHECKPOINT_EVERY, "checkpoint-save crash"))
                cluster.start_worker()
            if len(faults) >= MIN_FAULTS and boundary_done:
                time.sleep(0.5)
                continue
            time.sleep(rng.uniform(2.0, 5.0))
            step, state = self.step_of(cluster, job_id)
            if state != "running" or step is None or step < 4 * CHECKPOINT_EVERY + 5:
                continue  # the first faults wait for the checkpoint-save crash
            choice = rng.random()
            if not boundary_done and step < STEPS - CYCLE and choice < 0.3:
                # Freeze the coordinator, let the ranks reach the next boundary and wait there.
                nxt = min(b for b in boundaries() + [STEPS] if b > step)
                cluster.coordinator.send_signal(signal.SIGSTOP)
                if self.ranks_stopped_at(ckpt, nxt):
                    boundary_done = True
                    faults.append((nxt, "coordinator killed at a boundary"))
                else:
                    faults.append((step, "coordinator killed (frozen)"))
                cluster.coordinator.send_signal(signal.SIGKILL)
                cluster.coordinator.wait()
                time.sleep(rng.uniform(1.0, 5.0))
                cluster.start_coordinator(("--reattach-timeout", "15s"))
            elif choice < 0.55:
                cluster.kill_coordinator()
                faults.append((step, "coordinator killed"))
                time.sleep(rng.uniform(1.0, 8.0))
                cluster.start_coordinator(("--reattach-timeout", "15s"))
            else:
                # A rank of the running job (an idle worker's death costs the job nothing).
                ranks = [p for p in (self.process_of(cluster, w) for w in self.job_workers(cluster, job_id)) if p]
                if not ranks:
                    continue
                victim = rng.choice(ranks)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                faults.append((step, "worker killed"))
                time.sleep(rng.uniform(0.0, 3.0))
                cluster.start_worker()
        return faults


if __name__ == "__main__":
    sys.exit(main(__name__))
