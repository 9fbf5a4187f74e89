"""Checkpoint faults with real processes (relora-worker --standalone):

1. The process crashes in the middle of saving the step-30 checkpoint (RELORA_FAILPOINT, which
   ends it with _exit after the tensors are written and before the commit): the step-10 and
   step-20 checkpoints stay complete, step 30 does not exist, only its temporary directory.
2. The step-20 checkpoint is then corrupted (one byte of its tensor file flipped).
3. A rerun detects the corruption (checksum), says so in an event, resumes from step 10, removes
   the interrupted save's leftovers and completes all 44 steps: every step once in metrics.jsonl,
   the final checkpoint at step 44, and the loss curve equal to an uninterrupted run's.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import unittest

from cluster_e2e import WORKER, assert_curves_match, job_yaml, losses, main

STEPS = 44  # warm start 4, then 8 cycles of 5


def run_worker(job, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([WORKER, "--standalone", job, "--threads", "1"], capture_output=True, text=True,
                          timeout=300, env=env)


class CheckpointFaults(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="relora-ckpt-faults-")
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write_job(self, name):
        path = os.path.join(self.root, name + ".yaml")
        ckpt = os.path.join(self.root, "runs", name)
        text = job_yaml(name, ckpt, os.path.join(self.root, "cache"), workers=1, grad_accum=2, steps=STEPS,
                        checkpoint_every=10)
        with open(path, "w") as f:
            f.write(text.replace("keep: 2", "keep: 5"))
        return path, ckpt

    def test_crash_during_save_and_corrupt_checkpoint_lose_no_completed_work(self):
        ref_job, ref_ckpt = self.write_job("reference")
        ref = run_worker(ref_job)
        self.assertEqual(ref.returncode, 0, ref.stderr[-3000:])

        job, ckpt = self.write_job("faulty")
        crashed = run_worker(job, {"RELORA_FAILPOINT": "checkpoint-save@30"})
        self.assertEqual(crashed.returncode, 86, crashed.stdout[-2000:] + crashed.stderr[-2000:])
        self.assertIn("failpoint checkpoint-save@30", crashed.stderr)
        complete = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(f"{ckpt}/step-*/COMPLETE"))
        self.assertEqual(complete, ["step-00000010", "step-00000020"])
        self.assertFalse(os.path.exists(f"{ckpt}/step-00000030"))
        self.assertEqual(len(glob.glob(f"{ckpt}/.step-00000030.tmp")), 1, os.listdir(ckpt))

        # Corrupt the newest complete checkpoint: one byte in the middle of its tensors.
        state = glob.glob(f"{ckpt}/step-00000020/*.safetensors")
        self.assertEqual(len(state), 1, os.listdir(f"{ckpt}/step-00000020"))
        with open(state[0], "r+b") as f:
            f.seek(os.path.getsize(state[0]) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))

        rerun = run_worker(job)
        log = rerun.stdout + rerun.stderr
        self.assertEqual(rerun.returncode, 0, log[-3000:])
        self.assertIn("corrupt checkpoint skipped", log)
        self.assertIn("step-00000020", log)
        self.assertIn("checksum mismatch", log)
        self.assertIn("resumed from " + f"{ckpt}/step-00000010", log)
        self.assertEqual(glob.glob(f"{ckpt}/.step-*.tmp"), [])
        self.assertTrue(os.path.exists(f"{ckpt}/step-{STEPS:08d}/COMPLETE"))
        with open(os.path.join(ckpt, "metrics.jsonl")) as f:
            steps = [json.loads(line)["step"] for line in f]
        self.assertEqual(steps, list(range(1, STEPS + 1)))
        assert_curves_match(self, losses(ckpt), losses(ref_ckpt), 1e-6)


if __name__ == "__main__":
    sys.exit(main(__name__))
