"""The Compose stack in real containers (issue 19): images built from deploy/docker/Dockerfile with
the command docs/deploy.md gives, deploy/compose/docker-compose.yml started as documented
(coordinator, two workers, Prometheus), the demo job submitted with the CLI inside the stack and
followed to `completed`, Prometheus inside the stack queried for the job's series, the model
exported to the data volume; then, while a second job runs, the coordinator container killed and
started again 10 s later, and a worker's process killed (its container restarted by the restart
policy): the job completes.

Runs with podman by default (Docker's CLI and API; Debian's docker-compose 1.29 talks to `podman
system service`), as root, offline: tests/deploy/podman/base-images.sh makes the base images once.
Podman runs no health checks by itself without systemd, so a thread here runs `podman healthcheck
run` for the stack's containers every few seconds, as Docker's daemon would. Grafana is not
started: its image cannot be fetched here and Debian has no package for it.
RELORA_CONTAINER_ENGINE=docker RELORA_COMPOSE="docker compose" runs it with Docker instead.

Environment: RELORA_BUILD_DIR (binaries for the `prebuilt` image build, default ../../build);
RELORA_E2E_IMAGE_BUILD=prebuilt (default: scripts/stage-prebuilt.sh, then the Dockerfile with
--build-arg RELORA_BINARIES=prebuilt) or full (the Dockerfile compiles the project: ~1 h on 2
cores). Exit 77 (skipped) where the engine, the compose tool or (podman) debootstrap or root is
missing.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.path.abspath(os.environ.get("RELORA_BUILD_DIR", os.path.join(REPO, "build")))
IMAGE_BUILD = os.environ.get("RELORA_E2E_IMAGE_BUILD", "prebuilt")
ENGINE = os.environ.get("RELORA_CONTAINER_ENGINE", "podman")
COMPOSE = shlex.split(os.environ.get("RELORA_COMPOSE", "docker-compose"))
PODMAN = ENGINE == "podman"
PODMAN_DIR = os.path.join(REPO, "tests/deploy/podman")
COMPOSE_FILE = os.path.join(REPO, "deploy/compose/docker-compose.yml")
PROJECT = "relora-e2e"
PROMETHEUS = "http://127.0.0.1:9090"
SERVICES = ["coordinator", "worker-0", "worker-1", "prometheus"]
FINISHED = ("completed", "failed", "cancelled")


def log(msg):
    print(f"[compose-e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, timeout=600, check=True, env=None, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def engine_env():
    return dict(os.environ, CONTAINERS_CONF=os.path.join(PODMAN_DIR, "containers.conf")) if PODMAN else dict(os.environ)


class Stack:
    """Compose against the engine; with podman: its API service on a private socket and the health ticker."""

    def __init__(self, workdir):
        self.env = engine_env()
        if PODMAN:
            self._start_podman_service(workdir)

    def _start_podman_service(self, workdir):
        self.socket = os.path.join(workdir, "podman.sock")
        self.service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                                        env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env["DOCKER_HOST"] = f"unix://{self.socket}"
        for _ in range(100):
            if os.path.exists(self.socket):
                break
            time.sleep(0.1)
        self.stop_ticker = threading.Event()
        self.ticker = threading.Thread(target=self._health_ticker, daemon=True)
        self.ticker.start()

    def compose(self, *args, timeout=600, check=True):
        return run([*COMPOSE, "-p", PROJECT, "-f", COMPOSE_FILE, *args], timeout=timeout, check=check,
                   env=self.env, cwd=REPO)

    def cli(self, *args, volumes=(), timeout=120):
        extra = [a for v in volumes for a in ("-v", v)]
        return self.compose("run", "--rm", "-T", *extra, "cli", *args, timeout=timeout).stdout

    def cli_json(self, *args, **kw):
        return json.loads(self.cli("-o", "json", *args, **kw))

    def engine(self, *args, timeout=600, check=True):
        return run([ENGINE, *args], timeout=timeout, check=check, env=self.env)

    def container(self, service):
        # compose v1 and v2 name containers differently; ask compose (stopped ones too).
        ids = self.compose("ps", "-a", "-q", service, check=False).stdout.split()
        return ids[0] if ids else f"{PROJECT}_{service}_1"

    def crash(self, service):
        """SIGKILLs the relora process under the container's tini from the host, as the OOM killer
        would: the container exits by itself (137) and its restart policy applies, which it does
        not after `kill` through the engine (a user's stop)."""
        pid = self.engine("inspect", "--format", "{{.State.Pid}}", self.container(service)).stdout.strip()
        run(["pkill", "-KILL", "-P", pid])

    def restarts(self, service):
        return int(self.engine("inspect", "--format", "{{.RestartCount}}", self.container(service)).stdout.strip())

    def state(self, service):
        p = self.engine("inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", self.container(service),
                        check=False)
        return p.stdout.strip() if p.returncode == 0 else "absent"

    def _health_ticker(self):
        # What Docker's daemon does on the HEALTHCHECK interval; podman needs systemd timers for it.
        # A check that hangs (a loaded machine) is abandoned and tried again on the next round.
        while not self.stop_ticker.wait(3):
            try:
                names = run(["podman", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                             "--format", "{{.Names}}"], check=False, env=self.env, timeout=60).stdout.split()
                for name in names:
                    run(["podman", "healthcheck", "run", name], check=False, env=self.env, timeout=60)
            except subprocess.TimeoutExpired:
                continue

    def close(self):
        try:
            self.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        finally:
            if PODMAN:
                self.stop_ticker.set()
                self.service.terminate()
                self.service.wait(timeout=30)


def prometheus_query(expr):
    url = f"{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"]["result"]


def fault_job(path):
    """demo-cluster.yaml under another name and checkpoint dir, 180 steps (2 cycles after the warm
    start), checkpoints every 20 steps."""
    with open(os.path.join(REPO, "deploy/compose/jobs/demo-cluster.yaml")) as f:
        text = f.read()
    for old, new in [("name: demo-cluster", "name: demo-cluster-faults"),
                     ("dir: runs/demo-cluster", "dir: runs/demo-cluster-faults"),
                     ("steps: 300", "steps: 180"), ("every_steps: 60", "every_steps: 20")]:
        assert old in text, old
        text = text.replace(old, new, 1)
    with open(path, "w") as f:
        f.write(text)


class ComposeE2e(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.started = time.monotonic()
        cls.tmp = tempfile.mkdtemp(prefix="relora-compose-e2e-")
        os.chmod(cls.tmp, 0o755)
        env = engine_env()
        if PODMAN:
            t = time.monotonic()
            log(run(["bash", os.path.join(PODMAN_DIR, "base-images.sh")], timeout=1200, env=env).stdout.strip())
            log(f"base images ready in {time.monotonic() - t:.0f} s")
        build_args = []
        if IMAGE_BUILD == "prebuilt":
            log(run(["bash", "scripts/stage-prebuilt.sh", BUILD], cwd=REPO).stdout.strip())
            build_args = ["--build-arg", "RELORA_BINARIES=prebuilt"]
        cls.image_seconds = {}
        for target, tag in [("control-plane", "relora-control-plane:0.1.0"), ("worker", "relora-worker:0.1.0")]:
            # docs/deploy.md's command (podman: --format docker, or HEALTHCHECK is dropped).
            t = time.monotonic()
            run([ENGINE, "build", *(["--format", "docker"] if PODMAN else []), *build_args, "-f", "deploy/docker/Dockerfile",
                 "--target", target, "-t", tag, "."], timeout=7200, env=env, cwd=REPO)
            cls.image_seconds[target] = time.monotonic() - t
            size = run([ENGINE, "image", "inspect", "--format", "{{.Size}}", tag], env=env).stdout.strip()
            log(f"image {tag} ({IMAGE_BUILD}) built in {cls.image_seconds[target]:.0f} s, {int(size) / 1e6:.0f} MB")
        run(["bash", "deploy/compose/make-secrets.sh"], cwd=REPO)
        cls.stack = Stack(cls.tmp)
        cls.stack.compose("down", "-v", "--remove-orphans", check=False)
        t = time.monotonic()
        cls.stack.compose("up", "-d", *SERVICES, timeout=600)
        cls.wait_for(lambda: all("healthy" in cls.stack.state(s) for s in ("coordinator", "worker-0", "worker-1")),
                     180, "coordinator and workers healthy")
        log(f"stack up and healthy in {time.monotonic() - t:.0f} s")

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        log(f"total {time.monotonic() - cls.started:.0f} s")

    @staticmethod
    def wait_for(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout} s waiting for: {what}")

    def step_of(self, job_id):
        return int(self.stack.cli_json("status", job_id)["step"])

    def test_1_demo_job_completes_with_merges_on_both_workers_and_exports(self):
        workers = self.stack.cli_json("workers")
        self.assertEqual(sorted(w["host"] for w in workers if w["state"] != "lost"), ["worker-0", "worker-1"])
        t = time.monotonic()
        out = self.stack.cli("submit", "--watch", "demo-cluster.yaml", timeout=1800)
        log(f"demo job followed to its end in {time.monotonic() - t:.0f} s; last line: {out.strip().splitlines()[-1]}")
        job_id = [j for j in self.stack.cli_json("list") if j["name"] == "demo-cluster"][-1]["job_id"]
        status = self.stack.cli_json("status", job_id)
        self.assertEqual(status["state"], "completed", status["error"])
        self.assertEqual((status["step"], status["merges"]), (300, 3))
        # Both workers' metrics, scraped by the stack's Prometheus, show the job's three merges.
        expr = f'relora_worker_merges_total{{job_id="{job_id}"}}'
        self.wait_for(lambda: sorted((r["metric"]["instance"], r["value"][1]) for r in prometheus_query(expr))
                      == [("worker-0:9401", "3"), ("worker-1:9401", "3")], 60, f"Prometheus: {expr} == 3 on both")
        log(f"Prometheus {expr}: {[(r['metric']['instance'], r['value'][1]) for r in prometheus_query(expr)]}")
        # Both ranks' step gauges reached the last step (max over the job's life: an idle worker
        # drops its job's gauges).
        expr = f'max_over_time(relora_worker_step{{job_id="{job_id}"}}[30m])'
        steps = sorted((r["metric"]["instance"], r["value"][1]) for r in prometheus_query(expr))
        log(f"Prometheus {expr}: {steps}")
        self.assertEqual(steps, [("worker-0:9401", "300"), ("worker-1:9401", "300")])
        # Export into the data volume, then read it back from another container.
        out_dir = "/data/exports/demo-cluster"
        log(self.stack.cli("export", job_id, "--out", out_dir, timeout=600).strip())
        listing = self.stack.compose("run", "--rm", "-T", "--entrypoint", "ls", "cli", out_dir).stdout.split()
        for f in ("config.json", "model.safetensors", "tokenizer.model"):
            self.assertIn(f, listing)

    def test_2_job_survives_a_killed_coordinator_and_a_killed_worker(self):
        jobs_dir = os.path.join(self.tmp, "jobs")
        os.makedirs(jobs_dir)
        os.chmod(jobs_dir, 0o755)
        fault_job(os.path.join(jobs_dir, "faults.yaml"))
        os.chmod(os.path.join(jobs_dir, "faults.yaml"), 0o644)
        job_id = self.stack.cli("submit", "/faults/faults.yaml", volumes=[f"{jobs_dir}:/faults:ro"]).strip()
        self.wait_for(lambda: self.step_of(job_id) >= 30, 600, "step 30")

        # The coordinator killed and started again 10 s later (state in its volume).
        at = self.step_of(job_id)
        self.stack.engine("kill", self.stack.container("coordinator"))
        log(f"coordinator killed at step {at}; state {self.stack.state('coordinator')}")
        time.sleep(10)
        if not self.stack.state("coordinator").startswith("running"):
            self.stack.compose("start", "coordinator")
        self.wait_for(lambda: "healthy" in self.stack.state("coordinator"), 120, "coordinator healthy again")
        at = self.step_of(job_id)
        self.wait_for(lambda: self.step_of(job_id) >= max(at, 60) + 20, 600, "progress after the coordinator restart")

        # A worker's process killed: its container exits and its restart policy (unless-stopped)
        # brings it back; the job restarts from its checkpoint once both workers are there.
        at = self.step_of(job_id)
        self.stack.crash("worker-1")
        self.wait_for(lambda: self.stack.restarts("worker-1") >= 1 and "healthy" in self.stack.state("worker-1"),
                      120, "worker-1 restarted by its restart policy")
        log(f"worker-1 killed at step {at}, restarted by its policy: {self.stack.state('worker-1')}")
        self.wait_for(lambda: self.stack.cli_json("status", job_id)["state"] in FINISHED,
                      1200, "the fault job finished")
        status = self.stack.cli_json("status", job_id)
        events = [e["kind"] for e in self.stack.cli_json("events", job_id)]
        log(f"fault job: {status['state']} at step {status['step']}, restarts {status['restarts']}, "
            f"run {status['job'].get('run')}, events {sorted(set(events))}")
        self.assertEqual(status["state"], "completed", status["error"])
        self.assertEqual(status["step"], 180)
        self.assertTrue({"reattached", "requeued"} & set(events), events)
        self.assertIn("restarting", events)


if __name__ == "__main__":
    needs = [ENGINE, COMPOSE[0]] + (["debootstrap"] if PODMAN else [])
    if (PODMAN and os.geteuid() != 0) or not all(shutil.which(t) for t in needs):
        print(f"skipped: needs {', '.join(needs)}{' and root' if PODMAN else ''} "
              "(apt-get install podman docker-compose debootstrap runc; docs/deploy.md)")
        sys.exit(77)
    unittest.main(verbosity=2)
