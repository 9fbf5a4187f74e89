#!/usr/bin/python3
"""The rendered GPU overlay's probes against the binaries they describe.

Starts relora-coordinator and relora-worker with the command, arguments and environment of their
containers in the rendered manifest (gpu.yaml from k8s-render.sh), then asks each startup,
readiness and liveness probe's gRPC port the standard health question, as the kubelet would
(health_probe, no credentials). It also checks that the worker, using the token file the manifest
mounts from the Secret, registered with the coordinator, by asking with the client token.

What cannot exist here is rewritten, and only that:
  - each container port -> a free local port (the same mapping for arguments and probes, so a
    probe aimed at a port the binary does not serve still fails);
  - volume mount paths -> temporary directories; Secret volumes get the Secret's decoded keys;
  - the Service name relora-coordinator and the pod's DNS name (--host) -> 127.0.0.1;
  - RELORA_DEVICE (cuda:0 in the GPU overlay) -> cpu: this machine has no GPU.

Usage: probe_integration.py RENDERED_GPU_YAML BUILD_DIR HEALTH_PROBE_BINARY
Exit 0 pass, 1 fail, 77 skipped (binaries or rendering missing).
"""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import yaml


def fail(message):
    print("FAIL " + message)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find(docs, kind, name):
    for d in docs:
        if d and d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    fail(f"rendered manifest has no {kind} {name}")


class Pod:
    """One container of a rendered workload, made runnable here."""

    def __init__(self, docs, workload, container_name, build_dir, work, pod_name, port_map):
        spec = workload["spec"]["template"]["spec"]
        self.container = next(c for c in spec["containers"] if c["name"] == container_name)
        self.name = pod_name
        self.port_map = port_map
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts = {}  # mountPath -> local directory
        for m in self.container.get("volumeMounts", []):
            local = os.path.join(work, pod_name, m["name"])
            os.makedirs(local, exist_ok=True)
            secret = volumes[m["name"]].get("secret")
            if secret:
                data = find(docs, "Secret", secret["secretName"]).get("data", {})
                items = secret.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    with open(os.path.join(local, item["path"]), "wb") as f:
                        f.write(base64.b64decode(data[item["key"]]))
            self.mounts[m["mountPath"]] = local
        self.env = {"POD_NAME": pod_name, "POD_NAMESPACE": workload["metadata"].get("namespace", "default")}
        for e in self.container.get("env", []):
            if "value" in e:
                self.env[e["name"]] = e["value"]
        if self.env.get("RELORA_DEVICE", "cpu") != "cpu":
            print(f"{pod_name}: RELORA_DEVICE={self.env['RELORA_DEVICE']} -> cpu (no GPU on this machine)")
            self.env["RELORA_DEVICE"] = "cpu"
        command = self.container["command"]
        # tini -- BINARY: the binary is what matters; run it directly.
        binary = command[command.index("--") + 1] if "--" in command else command[0]
        self.binary = {"relora-coordinator": f"{build_dir}/coordinator/relora-coordinator",
                       "relora-worker": f"{build_dir}/worker/relora-worker"}[binary]
        self.args = [self.rewrite(self.expand(a)) for a in self.container.get("args", [])]
        # --host names the pod in cluster DNS, which does not exist here.
        if "--host" in self.args:
            self.args[self.args.index("--host") + 1] = "127.0.0.1"

    def expand(self, arg):
        return re.sub(r"\$\((\w+)\)", lambda m: self.env.get(m.group(1), m.group(0)), arg)

    def rewrite(self, arg):
        for path, local in self.mounts.items():
            if arg == path or arg.startswith(path + "/"):
                return local + arg[len(path):]
        m = re.fullmatch(r"(.*?):?(\d+)", arg)
        if m and int(m.group(2)) in self.port_map:
            host = m.group(1)
            port = str(self.port_map[int(m.group(2))])
            if not host:
                return port
            return ("127.0.0.1" if host in ("relora-coordinator", "0.0.0.0") else host) + ":" + port
        return arg

    def start(self, log_dir):
        env = dict(os.environ)
        env.update(self.env)
        self.log = open(os.path.join(log_dir, self.name + ".log"), "w")
        print(f"start {self.name}: {os.path.basename(self.binary)} {' '.join(self.args)}")
        self.proc = subprocess.Popen([self.binary] + self.args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def probes(self):
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = self.container.get(kind)
            if not probe:
                fail(f"{self.name}: no {kind}")
            if "grpc" not in probe:
                fail(f"{self.name}: {kind} is not a gRPC probe: {probe}")
            yield kind, probe["grpc"]


def wait_serving(pod, kind, grpc_probe, health_probe, timeout_s=60):
    port = grpc_probe["port"]
    if port not in pod.port_map:
        fail(f"{pod.name}: {kind} port {port} is not a container port")
    address = f"127.0.0.1:{pod.port_map[port]}"
    args = [health_probe, address] + ([grpc_probe["service"]] if grpc_probe.get("service") else [])
    deadline = time.time() + timeout_s
    last = ""
    while time.time() < deadline:
        if pod.proc.poll() is not None:
            fail(f"{pod.name} exited with {pod.proc.returncode} before {kind} passed; log:\n" + open(pod.log.name).read())
        r = subprocess.run(args, capture_output=True, text=True)
        last = r.stdout.strip()
        if r.returncode == 0:
            print(f"ok {pod.name} {kind}: grpc port {port} (here {address}) {last}")
            return
        time.sleep(0.2)
    fail(f"{pod.name}: {kind} on port {port} never SERVING (last: {last}); log:\n" + open(pod.log.name).read())


def main():
    rendered, build_dir, health_probe = sys.argv[1:4]
    for path in (rendered, f"{build_dir}/coordinator/relora-coordinator", f"{build_dir}/worker/relora-worker",
                 f"{build_dir}/client/relora", health_probe):
        if not os.path.exists(path):
            print(f"SKIP {path} missing")
            sys.exit(77)
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    coordinator = find(docs, "Deployment", "relora-coordinator")
    worker = find(docs, "StatefulSet", "relora-worker")
    ports = {p["containerPort"] for w in (coordinator, worker) for c in w["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    port_map = {p: free_port() for p in sorted(ports)}
    work = tempfile.mkdtemp(prefix="relora-probes-")
    pods = []
    try:
        pods.append(Pod(docs, coordinator, "coordinator", build_dir, work, "relora-coordinator-0", port_map))
        pods.append(Pod(docs, worker, "worker", build_dir, work, "relora-worker-0", port_map))
        for pod in pods:
            pod.start(work)
            for kind, grpc_probe in pod.probes():
                wait_serving(pod, kind, grpc_probe, health_probe)
        # The worker's --token-file (mounted from the Secret) is the one the coordinator expects.
        client_token = os.path.join(pods[0].mounts["/var/run/secrets/relora"], "client-token")
        coordinator_address = f"127.0.0.1:{port_map[50051]}"
        deadline = time.time() + 30
        while True:
            r = subprocess.run([f"{build_dir}/client/relora", "workers", "-o", "json", "--coordinator",
                                coordinator_address, "--token-file", client_token], capture_output=True, text=True)
            registered = json.loads(r.stdout) if r.returncode == 0 else []
            if len(registered) == 1 and registered[0].get("host") == "127.0.0.1":
                print("ok the worker registered with the mounted worker token; the client token lists it")
                break
            if time.time() > deadline:
                fail(f"the worker never registered (relora workers: rc {r.returncode} {r.stdout} {r.stderr}); "
                     "worker log:\n" + open(pods[1].log.name).read())
            time.sleep(0.5)
        # And without the client token the coordinator refuses to answer.
        r = subprocess.run([f"{build_dir}/client/relora", "workers", "--coordinator", coordinator_address],
                           capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "RELORA_TOKEN"})
        if r.returncode != 2 or "token" not in r.stderr:
            fail(f"relora workers without a token: rc {r.returncode}, {r.stderr!r} (want 2 and a token error)")
        print("ok without the client token: " + r.stderr.strip())
    finally:
        for pod in reversed(pods):
            if getattr(pod, "proc", None) and pod.proc.poll() is None:
                pod.proc.terminate()
                try:
                    pod.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pod.proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print("PASS every probe of the GPU overlay is served by its binary")


if __name__ == "__main__":
    main()
