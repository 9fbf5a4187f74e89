// Checks the Dockerfiles of deploy/docker without a container engine:
//  * every package they apt-get install exists in the distribution they name: Debian images
//    are checked with apt-cache on this Debian machine (the build stage's packages come from
//    scripts/setup.sh, which it runs); Ubuntu images (the CUDA one) cannot be checked here and
//    are reported as skipped;
//  * every path they COPY from the build context exists and is not excluded by .dockerignore;
//  * stages copied from exist; runtime stages (those that COPY --from another stage) run as a
//    non-root USER;
//  * .dockerignore keeps build trees, runs and secrets out of the context.
//   node check-dockerfiles.mjs --src SOURCE_DIR
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { Checks, parseArgs, readText, run } from "./lib.mjs";
import { stages } from "./dockerfile.mjs";

const args = parseArgs();
const src = resolve(args.src);
const c = new Checks("check-dockerfiles");

// ---- .dockerignore (the subset of its syntax our file uses: globs, **, trailing /, !) -------
const ignoreFile = join(src, ".dockerignore");
const ignoreRules = existsSync(ignoreFile)
  ? readText(ignoreFile).split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
  : [];
function globToRegex(glob) {
  let re = "";
  const g = glob.replace(/^\/+/, "").replace(/\/+$/, "");
  for (let i = 0; i < g.length; i++) {
    const ch = g[i];
    if (ch === "*" && g[i + 1] === "*") {
      re += ".*";
      i++;
      if (g[i + 1] === "/") i++;
    } else if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}(/.*)?$`);
}
const compiled = ignoreRules.map((r) => ({ negate: r.startsWith("!"), re: globToRegex(r.replace(/^!/, "")) }));
function ignored(path) {
  let result = false;
  for (const r of compiled) if (r.re.test(path)) result = !r.negate;
  return result;
}
if (c.ok(existsSync(ignoreFile), ".dockerignore exists")) {
  for (const p of [".git", "build", "build-release", "runs", "deploy/compose/secrets/client-token", "deploy/k8s/base/tokens/worker-token"]) {
    c.ok(ignored(p), `.dockerignore excludes ${p}`);
  }
  for (const p of ["CMakeLists.txt", "CMakePresets.json", "scripts/setup.sh", "scripts/build.sh", "proto", "common", "client", "coordinator", "worker", "cmake", "dashboards"]) {
    if (existsSync(join(src, p))) c.ok(!ignored(p), `.dockerignore keeps ${p} in the build context`);
  }
}

// ---- apt-cache on this machine ---------------------------------------------------------------
const osRelease = existsSync("/etc/os-release") ? readText("/etc/os-release") : "";
const hostCodename = /^VERSION_CODENAME=(\S+)/m.exec(osRelease)?.[1];
const hostIsDebian = /^ID=debian$/m.test(osRelease);
const aptCache = run("apt-cache", ["--version"]).status === 0;
function aptCheck(what, codename, pkgs) {
  if (!aptCache || !hostIsDebian || hostCodename !== codename) {
    c.skip(`${what}: packages of Debian ${codename} (this machine is ${hostIsDebian ? `Debian ${hostCodename}` : "not Debian"}${aptCache ? "" : ", no apt-cache"})`);
    return;
  }
  // One apt-cache call for all: it prints the records it finds (and fails for the others).
  const unique = [...new Set(pkgs)];
  const r = run("apt-cache", ["show", "--no-all-versions", ...unique]);
  const found = new Set([...r.stdout.matchAll(/^Package: (\S+)$/gm)].map((m) => m[1]));
  for (const p of unique) {
    c.ok(found.has(p), `${what}: ${p} is a Debian ${codename} package`, `apt-cache show ${p}: no such package`);
  }
}
function setupShPackages() {
  const text = readText(join(src, "scripts/setup.sh"));
  const m = /PACKAGES=\(([\s\S]*?)\n\)/.exec(text);
  if (!m) return [];
  return m[1].split("\n").map((l) => l.replace(/#.*/, "")).join(" ").split(/\s+/).filter(Boolean);
}

const dockerDir = join(src, "deploy/docker");
const dockerfiles = readdirSync(dockerDir).filter((f) => /^Dockerfile/.test(f) || f.endsWith(".Dockerfile"));
c.ok(dockerfiles.includes("Dockerfile") && dockerfiles.includes("Dockerfile.cuda"), "deploy/docker has the CPU and CUDA Dockerfiles", dockerfiles.join(","));
for (const f of dockerfiles) {
  const path = join(dockerDir, f);
  const list = stages(path);
  c.ok(list.length > 1, `${f}: is multi-stage`);
  for (const st of list) {
    const what = `${f} stage ${st.name}`;
    const pkgs = [...st.packages];
    if (st.runs.some((r) => /\bscripts\/setup\.sh\b/.test(r))) pkgs.push(...setupShPackages());
    if (st.distro.family === "debian") {
      if (pkgs.length) aptCheck(what, st.distro.codename, pkgs);
    } else if (pkgs.length) {
      c.skip(`${what}: ${pkgs.length} packages of ${st.distro.family} ${st.distro.release ?? ""} (${st.image}) cannot be checked on this machine`);
    }
    for (const cp of st.copies) {
      if (cp.from) {
        c.ok(list.some((s) => s.name === cp.from && s.index < st.index), `${what}: COPY --from=${cp.from} names an earlier stage`);
        continue;
      }
      for (const s of cp.sources) {
        const p = s.replace(/^\.\/?/, "").replace(/\/$/, "");
        c.ok(existsSync(join(src, s)), `${what}: COPY source ${s} exists in the repository`);
        if (p) c.ok(!ignored(p), `${what}: COPY source ${s} is not excluded by .dockerignore`);
      }
    }
    if (st.copies.some((cp) => cp.from)) {
      c.ok(!!st.user && !/^(0|root)(:|$)/.test(st.user), `${what}: runs as a non-root USER`, String(st.user));
    }
  }
}
c.finish();
