// Checks on the rendered Kubernetes manifests (k8s-render.sh output) beyond the schemas: that
// the objects agree with each other and with the binaries' flags, what the GPU overlay must
// set, and that the dashboards ConfigMap holds dashboards/*.json byte for byte.
//   node k8s-checks.mjs --src SOURCE_DIR --rendered RENDER_DIR
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Checks, loadDeps, objName, parseArgs, readText, yamlObjects } from "./lib.mjs";

const args = parseArgs();
const src = args.src;
const renderedDir = args.rendered;
const { YAML } = await loadDeps();
const c = new Checks("k8s-checks");

const matches = (selector, labels) =>
  !!selector && Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => (labels ?? {})[k] === v);

// "--flag value" or "--flag=value" in an argument list.
function flag(argv, name) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i].startsWith(`${name}=`)) return argv[i].slice(name.length + 1);
  }
  return undefined;
}
const portOf = (hostPort) => Number(String(hostPort ?? "").split(":").pop());

const dashboardFiles = readdirSync(join(src, "dashboards")).filter((f) => f.endsWith(".json")).sort();
// Prometheus job names the dashboards and alert rules select on, e.g. up{job="relora-worker"}.
const jobNames = new Set();
for (const f of [...dashboardFiles.map((d) => join(src, "dashboards", d)), join(src, "deploy/prometheus/alerts.yml")]) {
  let text;
  try {
    text = readText(f);
  } catch {
    continue;
  }
  for (const m of text.matchAll(/job\s*=~?\s*\\?"([^"\\]+)\\?"/g)) for (const j of m[1].split("|")) jobNames.add(j);
}

function checkOverlay(name, objects, { gpu, dashboards }) {
  const P = `${name}:`;
  const find = (kind, n) => objects.find((o) => o.kind === kind && o.metadata?.name === n);
  const all = (kind) => objects.filter((o) => o.kind === kind);
  const workloads = objects.filter((o) => ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind));
  const podLabels = (w) => w.spec?.template?.metadata?.labels ?? {};

  // Namespaces: everything namespaced lands in one namespace.
  const namespaces = new Set(objects.map((o) => o.metadata?.namespace));
  c.ok(namespaces.size === 1 && !namespaces.has(undefined), `${P} one namespace for every object`, [...namespaces].join(","));

  // Every workload: selector matches its template; every container has requests and limits.
  for (const w of workloads) {
    c.ok(matches(w.spec?.selector?.matchLabels, podLabels(w)), `${P} ${objName(w)} selector matches its pod labels`);
    const spec = w.spec.template.spec;
    c.ok(spec.securityContext?.runAsNonRoot === true, `${P} ${objName(w)} runs as non-root`);
    for (const ct of spec.containers) {
      const r = ct.resources ?? {};
      c.ok(!!(r.requests?.cpu && r.requests?.memory && r.limits?.cpu && r.limits?.memory),
        `${P} ${objName(w)}/${ct.name} has cpu and memory requests and limits`, JSON.stringify(r));
    }
    // Volumes refer to objects that are rendered (the PVCs, the Secret, ConfigMaps).
    for (const v of spec.volumes ?? []) {
      if (v.persistentVolumeClaim) c.ok(!!find("PersistentVolumeClaim", v.persistentVolumeClaim.claimName), `${P} ${objName(w)} volume ${v.name}: PVC ${v.persistentVolumeClaim.claimName} exists`);
      if (v.secret) c.ok(!!find("Secret", v.secret.secretName), `${P} ${objName(w)} volume ${v.name}: Secret ${v.secret.secretName} exists`);
      if (v.configMap) c.ok(!!find("ConfigMap", v.configMap.name), `${P} ${objName(w)} volume ${v.name}: ConfigMap ${v.configMap.name} exists`);
    }
    for (const ct of spec.containers) {
      for (const m of ct.volumeMounts ?? []) c.ok((spec.volumes ?? []).some((v) => v.name === m.name), `${P} ${objName(w)}/${ct.name} mount ${m.mountPath} has a volume`);
    }
  }
  // Every Service selects some pods.
  for (const s of all("Service")) {
    c.ok(workloads.some((w) => matches(s.spec?.selector, podLabels(w))), `${P} Service ${s.metadata.name} selects a workload's pods`);
  }
  // A token file named by a flag lies in a mounted Secret volume that has that key.
  const tokenMounted = (w, ct, path, what) => {
    const mount = (ct.volumeMounts ?? []).find((m) => path?.startsWith(`${m.mountPath}/`));
    const vol = mount && (w.spec.template.spec.volumes ?? []).find((v) => v.name === mount.name);
    const secret = vol?.secret && find("Secret", vol.secret.secretName);
    const key = path?.slice(mount?.mountPath.length + 1);
    const items = vol?.secret?.items;
    const sourceKey = items ? items.find((i) => i.path === key)?.key : key;
    c.ok(!!secret && sourceKey !== undefined && secret.data?.[sourceKey] !== undefined,
      `${P} ${objName(w)} ${what} ${path} is a key of a mounted Secret`);
  };

  // ---- coordinator -------------------------------------------------------------------------
  const coord = find("Deployment", "relora-coordinator");
  let coordPort;
  if (c.ok(!!coord, `${P} Deployment relora-coordinator exists`)) {
    c.ok(coord.spec.replicas === 1, `${P} coordinator has 1 replica`, String(coord.spec.replicas));
    c.ok(coord.spec.strategy?.type === "Recreate", `${P} coordinator strategy is Recreate`);
    const ct = coord.spec.template.spec.containers.find((x) => x.name === "coordinator");
    const argv = [...(ct.command ?? []), ...(ct.args ?? [])];
    coordPort = portOf(flag(argv, "--listen"));
    c.ok(coordPort === 50051, `${P} coordinator --listen port is 50051`, String(flag(argv, "--listen")));
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      c.ok(ct[probe]?.grpc?.port === 50051, `${P} coordinator ${probe} is a grpc probe on 50051`, JSON.stringify(ct[probe]));
    }
    const stateDir = flag(argv, "--state-dir");
    const mount = (ct.volumeMounts ?? []).find((m) => m.mountPath === stateDir);
    const vol = mount && coord.spec.template.spec.volumes.find((v) => v.name === mount.name);
    c.ok(!!vol?.persistentVolumeClaim, `${P} coordinator --state-dir ${stateDir} is a PersistentVolumeClaim`);
    const pvc = vol?.persistentVolumeClaim && find("PersistentVolumeClaim", vol.persistentVolumeClaim.claimName);
    c.ok(pvc?.spec?.accessModes?.includes("ReadWriteOnce"), `${P} coordinator state PVC is ReadWriteOnce`);
    const metricsPort = Number(flag(argv, "--metrics-port"));
    c.ok((ct.ports ?? []).some((p) => p.name === "metrics" && p.containerPort === metricsPort), `${P} coordinator --metrics-port ${metricsPort} is the port named metrics`);
    tokenMounted(coord, ct, flag(argv, "--client-token-file"), "--client-token-file");
    tokenMounted(coord, ct, flag(argv, "--worker-token-file"), "--worker-token-file");
    c.ok(/^relora-control-plane(:|$)/.test(ct.image), `${P} coordinator image is relora-control-plane`, ct.image);
  }

  // ---- workers -----------------------------------------------------------------------------
  const sts = find("StatefulSet", "relora-worker");
  if (c.ok(!!sts, `${P} StatefulSet relora-worker exists`)) {
    const podSpec = sts.spec.template.spec;
    const ct = podSpec.containers.find((x) => x.name === "worker");
    const argv = [...(ct.command ?? []), ...(ct.args ?? [])];
    const env = Object.fromEntries((ct.env ?? []).map((e) => [e.name, e]));
    const headless = find("Service", sts.spec.serviceName);
    c.ok(headless?.spec?.clusterIP === "None", `${P} worker serviceName ${sts.spec.serviceName} is a headless Service`);
    c.ok(headless && matches(headless.spec.selector, podLabels(sts)), `${P} headless Service selects the workers`);
    // Rendezvous: rank 0 listens on --rendezvous-port at its stable name.
    const rdvPort = Number(flag(argv, "--rendezvous-port"));
    c.ok(rdvPort === 29500, `${P} worker --rendezvous-port is 29500`, String(flag(argv, "--rendezvous-port")));
    c.ok((headless?.spec?.ports ?? []).some((p) => p.port === rdvPort), `${P} headless Service exposes the rendezvous port`);
    c.ok((ct.ports ?? []).some((p) => p.containerPort === rdvPort), `${P} worker container declares the rendezvous port`);
    const host = flag(argv, "--host") ?? "";
    c.ok(host.startsWith(`$(POD_NAME).${sts.spec.serviceName}.$(POD_NAMESPACE).svc`), `${P} worker --host is its stable headless-Service name`, host);
    c.ok(env.POD_NAME?.valueFrom?.fieldRef?.fieldPath === "metadata.name" && env.POD_NAMESPACE?.valueFrom?.fieldRef?.fieldPath === "metadata.namespace",
      `${P} POD_NAME and POD_NAMESPACE come from the downward API`);
    // The coordinator address names the coordinator Service and its gRPC port.
    const [cHost, cPort] = String(flag(argv, "--coordinator") ?? "").split(":");
    const cSvc = find("Service", cHost);
    c.ok(!!cSvc && coord && matches(cSvc.spec.selector, podLabels(coord)), `${P} worker --coordinator ${cHost} is the coordinator's Service`);
    const svcPort = cSvc?.spec?.ports?.find((p) => p.port === Number(cPort));
    c.ok(!!svcPort && (svcPort.targetPort === Number(cPort) || svcPort.targetPort === "grpc" || svcPort.targetPort === undefined) && Number(cPort) === coordPort,
      `${P} worker --coordinator port ${cPort} reaches the coordinator's --listen port`);
    const healthPort = portOf(flag(argv, "--health-listen"));
    c.ok(healthPort === 9500, `${P} worker --health-listen port is 9500`);
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      c.ok(ct[probe]?.grpc?.port === 9500, `${P} worker ${probe} is a grpc probe on 9500`, JSON.stringify(ct[probe]));
    }
    const metricsPort = Number(flag(argv, "--metrics-port"));
    c.ok((ct.ports ?? []).some((p) => p.name === "metrics" && p.containerPort === metricsPort), `${P} worker --metrics-port ${metricsPort} is the port named metrics`);
    tokenMounted(sts, ct, flag(argv, "--token-file"), "--token-file");
    // /dev/shm: a memory emptyDir.
    const shm = (ct.volumeMounts ?? []).find((m) => m.mountPath === "/dev/shm");
    const shmVol = shm && podSpec.volumes.find((v) => v.name === shm.name);
    c.ok(shmVol?.emptyDir?.medium === "Memory", `${P} worker /dev/shm is a memory emptyDir`, JSON.stringify(shmVol));
    // Shared data: one ReadWriteMany claim.
    const data = (ct.volumeMounts ?? []).find((m) => m.mountPath === "/data");
    const dataVol = data && podSpec.volumes.find((v) => v.name === data.name);
    const dataPvc = dataVol?.persistentVolumeClaim && find("PersistentVolumeClaim", dataVol.persistentVolumeClaim.claimName);
    c.ok(dataPvc?.spec?.accessModes?.includes("ReadWriteMany"), `${P} worker /data is a shared ReadWriteMany claim`);

    const gpuReq = ct.resources?.requests?.["nvidia.com/gpu"];
    const gpuLim = ct.resources?.limits?.["nvidia.com/gpu"];
    if (gpu) {
      c.ok(Number(gpuLim) >= 1 && String(gpuReq) === String(gpuLim), `${P} worker requests and limits nvidia.com/gpu`, `requests ${gpuReq}, limits ${gpuLim}`);
      c.ok(!!env.NCCL_SOCKET_IFNAME?.value, `${P} worker sets NCCL_SOCKET_IFNAME`, JSON.stringify(env.NCCL_SOCKET_IFNAME));
      c.ok(env.NCCL_DEBUG?.value === "WARN", `${P} worker sets NCCL_DEBUG=WARN`, JSON.stringify(env.NCCL_DEBUG));
      c.ok(["0", "1"].includes(env.NCCL_IB_DISABLE?.value), `${P} worker sets NCCL_IB_DISABLE`, JSON.stringify(env.NCCL_IB_DISABLE));
      c.ok((podSpec.tolerations ?? []).some((t) => t.key === "nvidia.com/gpu"), `${P} worker tolerates the nvidia.com/gpu taint`);
      c.ok(/^cuda(:\d+)?$/.test(env.RELORA_DEVICE?.value ?? ""), `${P} worker trains on its GPU (RELORA_DEVICE=cuda:N)`, JSON.stringify(env.RELORA_DEVICE));
      c.ok(/^relora-worker-cuda:/.test(ct.image), `${P} worker image is relora-worker-cuda`, ct.image);
    } else {
      c.ok(gpuReq === undefined && gpuLim === undefined, `${P} CPU workers request no GPU`);
      c.ok(!Object.keys(env).some((k) => k.startsWith("NCCL_")), `${P} CPU workers set no NCCL variables`);
      c.ok(/^relora-worker(:|$)/.test(ct.image), `${P} worker image is relora-worker`, ct.image);
    }

    // PodDisruptionBudget covers the workers.
    c.ok(all("PodDisruptionBudget").some((p) => matches(p.spec?.selector?.matchLabels, podLabels(sts))), `${P} a PodDisruptionBudget selects the workers`);
  }

  // ---- NetworkPolicy: only workers and clients reach the coordinator's gRPC port -----------
  const cli = find("Deployment", "relora-cli");
  if (coord && sts && coordPort) {
    const policies = all("NetworkPolicy").filter((np) => matches(np.spec?.podSelector?.matchLabels, podLabels(coord)));
    c.ok(policies.length > 0 && policies.every((np) => np.spec.policyTypes?.includes("Ingress")), `${P} a NetworkPolicy restricts ingress to the coordinator`);
    const peers = policies.flatMap((np) => (np.spec.ingress ?? [])
      .filter((r) => !r.ports || r.ports.some((p) => p.port === coordPort || p.port === "grpc"))
      .flatMap((r) => r.from ?? [{ anything: true }]));
    const allowsPod = (labels) => peers.some((p) => !p.anything && !p.ipBlock && !p.namespaceSelector && matches(p.podSelector?.matchLabels, labels));
    c.ok(allowsPod(podLabels(sts)), `${P} NetworkPolicy lets workers reach port ${coordPort}`);
    c.ok(allowsPod({ "relora.dev/client": "true" }), `${P} NetworkPolicy lets relora.dev/client pods reach port ${coordPort}`);
    c.ok(!allowsPod({ "app.kubernetes.io/name": "something-else" }), `${P} NetworkPolicy keeps other pods out`);
    c.ok(peers.every((p) => !p.anything && !p.ipBlock && p.podSelector &&
      (matches(p.podSelector.matchLabels, podLabels(sts)) || p.podSelector.matchLabels?.["relora.dev/client"] === "true")),
    `${P} every peer allowed on port ${coordPort} is a worker or a client`, JSON.stringify(peers));
    if (c.ok(!!cli, `${P} Deployment relora-cli exists`)) c.ok(podLabels(cli)["relora.dev/client"] === "true", `${P} the CLI pod is labelled relora.dev/client`);
  }
  if (cli) {
    const ct = cli.spec.template.spec.containers[0];
    c.ok((ct.volumeMounts ?? []).some((m) => m.mountPath.startsWith("/var/run/secrets/relora")), `${P} the CLI pod mounts the client token`);
  }

  // ---- ServiceMonitor ----------------------------------------------------------------------
  const monitors = all("ServiceMonitor");
  if (c.ok(monitors.length > 0, `${P} a ServiceMonitor exists`)) {
    for (const svcName of ["relora-coordinator", "relora-worker"]) {
      const svc = find("Service", svcName);
      const sm = monitors.find((m) => matches(m.spec?.selector?.matchLabels, svc?.metadata?.labels));
      if (!c.ok(!!sm, `${P} a ServiceMonitor selects Service ${svcName}`)) continue;
      for (const ep of sm.spec.endpoints) c.ok((svc.spec.ports ?? []).some((p) => p.name === ep.port), `${P} Service ${svcName} has port ${ep.port}`);
      const job = sm.spec.jobLabel ? svc.metadata.labels?.[sm.spec.jobLabel] : svcName;
      c.ok(job === svcName, `${P} Prometheus job of ${svcName} is "${svcName}"`, String(job));
    }
    for (const j of jobNames) {
      c.ok(["relora-coordinator", "relora-worker"].includes(j), `${P} job "${j}" used by dashboards/alerts is scraped`);
    }
  }

  // ---- dashboards ConfigMap ----------------------------------------------------------------
  const cms = all("ConfigMap").filter((cm) => cm.metadata?.labels?.grafana_dashboard === "1");
  if (dashboards) {
    if (c.ok(cms.length === 1, `${P} one ConfigMap labelled grafana_dashboard: "1"`, String(cms.length))) {
      const cm = cms[0];
      const keys = Object.keys(cm.data ?? {}).sort();
      c.ok(JSON.stringify(keys) === JSON.stringify(dashboardFiles), `${P} dashboards ConfigMap has one key per dashboards/*.json`, `${keys} vs ${dashboardFiles}`);
      for (const f of dashboardFiles) {
        const want = readFileSync(join(src, "dashboards", f));
        const got = Buffer.from(cm.data?.[f] ?? "", "utf8");
        c.ok(want.equals(got), `${P} ConfigMap ${f} is byte-identical to dashboards/${f}`, `${got.length} vs ${want.length} bytes`);
      }
    }
  } else {
    c.ok(cms.length === 0, `${P} (base) renders without the dashboards component`);
  }
}

for (const [name, opts] of [["base", { gpu: false, dashboards: false }], ["cpu", { gpu: false, dashboards: true }], ["gpu", { gpu: true, dashboards: true }]]) {
  let objects;
  try {
    objects = yamlObjects(YAML, readText(join(renderedDir, `${name}.yaml`)), name);
  } catch (e) {
    c.fail(`${name}: rendered manifests`, e.message);
    continue;
  }
  checkOverlay(name, objects, opts);
}
c.finish();
