"""The coordinator's Kubernetes manifests in a real container (issue 19): `podman kube play` of the
CPU overlay's rendered coordinator Deployment with its Secret and state PersistentVolumeClaim, as
kubectl kustomize renders them (tests/deploy/k8s-render.sh). Checks what a kubelet would: the
Deployment's gRPC probe (port and service read from the manifest) answers SERVING, and `relora
workers` with the Secret's client token succeeds, from the host through the pod's IP and from
inside the container with the image's own CLI. No Kubernetes API server can run here, so the
Service, NetworkPolicy, StatefulSet scheduling and the probes' timing are checked only by schema
(DeployK8s* tests).

Usage: kube_play_e2e.py BUILD_DIR (the relora CLI and tests/deploy/health_probe from it; the
images relora-control-plane:0.1.0 built as compose_e2e.py does). Exit 77 (skipped) without root,
podman or kubectl, or when the image is missing.
"""
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build"))
ENV = dict(os.environ, CONTAINERS_CONF=os.path.join(REPO, "tests/deploy/podman/containers.conf"))
IMAGE = "relora-control-plane:0.1.0"


def run(cmd, check=True, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


class KubePlay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="relora-kube-play-")
        run(["bash", os.path.join(REPO, "tests/deploy/k8s-render.sh"), REPO, cls.tmp])
        docs = [d for d in yaml.safe_load_all(open(os.path.join(cls.tmp, "cpu.yaml"))) if d]
        cls.deployment = next(d for d in docs if d["kind"] == "Deployment"
                              and d["metadata"]["name"] == "relora-coordinator")
        pod = cls.deployment["spec"]["template"]["spec"]
        secret_names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        claim_names = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        cls.secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] in secret_names)
        objects = [cls.secret] + [d for d in docs if d["kind"] == "PersistentVolumeClaim"
                                  and d["metadata"]["name"] in claim_names] + [cls.deployment]
        cls.manifest = os.path.join(cls.tmp, "coordinator.yaml")
        with open(cls.manifest, "w") as f:
            yaml.safe_dump_all(objects, f)
        print(f"kube play: {', '.join(o['kind'] + ' ' + o['metadata']['name'] for o in objects)}", flush=True)
        cls.clean_up()
        run(["podman", "kube", "play", cls.manifest], timeout=300)
        cls.container = next(n for n in run(["podman", "ps", "--format", "{{.Names}}"]).stdout.split()
                             if n.startswith("relora-coordinator") and n.endswith("-coordinator"))
        infra = run(["podman", "pod", "inspect", "--format", "{{.InfraContainerID}}",
                     run(["podman", "inspect", "--format", "{{.Pod}}", cls.container]).stdout.strip()]).stdout.strip()
        cls.ip = run(["podman", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                      infra]).stdout.strip()
        print(f"kube play: container {cls.container}, pod IP {cls.ip}", flush=True)

    @classmethod
    def clean_up(cls):
        """The pod, and what kube play keeps after it: the claims' volumes and the Secret."""
        run(["podman", "kube", "down", cls.manifest], check=False)
        for claim in [v["persistentVolumeClaim"]["claimName"] for v in cls.deployment["spec"]["template"]["spec"]
                      ["volumes"] if "persistentVolumeClaim" in v]:
            run(["podman", "volume", "rm", "-f", claim], check=False)
        run(["podman", "secret", "rm", cls.secret["metadata"]["name"]], check=False)

    @classmethod
    def tearDownClass(cls):
        cls.clean_up()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def container_spec(self):
        return self.deployment["spec"]["template"]["spec"]["containers"][0]

    def test_the_manifests_grpc_probe_answers_serving(self):
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = self.container_spec()[kind]["grpc"]
            target = [os.path.join(BUILD, "tests/deploy/health_probe"), f"{self.ip}:{probe['port']}"]
            if probe.get("service"):
                target.append(probe["service"])
            deadline = time.monotonic() + 60
            while True:
                p = run(target, check=False)
                if p.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(1)
            print(f"{kind} grpc :{probe['port']}: {p.stdout.strip()}", flush=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_relora_workers_with_the_secrets_client_token(self):
        secret = self.secret.get("data", {})
        token = base64.b64decode(secret["client-token"]) if "client-token" in secret else \
            self.secret["stringData"]["client-token"].encode()
        argv = self.container_spec()["args"] if "args" in self.container_spec() else self.container_spec()["command"]
        client_token = argv[argv.index("--client-token-file") + 1]
        mounted = run(["podman", "exec", self.container, "cat", client_token]).stdout.encode()
        if mounted != token:
            # podman 4.3 writes a secret volume's files base64-encoded; a kubelet decodes them.
            # The coordinator then expects the encoded text, and so does every client here.
            self.assertEqual(mounted, base64.b64encode(token), "the mounted token is neither the Secret's nor its base64")
            print("podman mounts the Secret's data base64-encoded (a kubelet decodes it)", flush=True)
        token_file = os.path.join(self.tmp, "client-token")
        with open(token_file, "wb") as f:
            f.write(mounted)
        host = run([os.path.join(BUILD, "client/relora"), "--coordinator", f"{self.ip}:50051",
                    "--token-file", token_file, "workers"])
        print(f"relora workers (host): {host.stdout.strip()}", flush=True)
        inside = run(["podman", "exec", self.container, "relora", "--coordinator", "127.0.0.1:50051",
                      "--token-file", client_token, "workers"])
        print(f"relora workers (in the pod): {inside.stdout.strip()}", flush=True)
        self.assertIn("ID", inside.stdout)
        # A wrong token is refused: the Secret's token is what let the calls above through.
        with open(token_file, "w") as f:
            f.write("not-the-token")
        refused = run([os.path.join(BUILD, "client/relora"), "--coordinator", f"{self.ip}:50051",
                       "--token-file", token_file, "workers"], check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("token", (refused.stdout + refused.stderr).lower())


if __name__ == "__main__":
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("kubectl"):
        print("skipped: needs root, podman and kubectl")
        sys.exit(77)
    if subprocess.run(["podman", "image", "exists", IMAGE], env=ENV).returncode != 0:
        print(f"skipped: image {IMAGE} missing (build it as docs/deploy.md says, or run compose_e2e.py)")
        sys.exit(77)
    unittest.main(argv=sys.argv[:1], verbosity=2)
