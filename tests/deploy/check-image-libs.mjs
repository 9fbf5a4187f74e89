// The runtime stages of deploy/docker/Dockerfile must install every shared library their
// binaries load. For each binary a runtime stage copies from the build stage, found in one of
// the given build trees (/src/build/X -> BIN_DIR/X): `ldd` it, map each resolved library to
// the Debian package that owns it (`dpkg -S`), and require that package in the stage's
// apt-get install list, in those packages' dependency closure (apt-cache depends, first
// alternative of each | group, as apt picks), or in what debian:*-slim itself holds (the
// Essential packages and apt, with their dependencies). A library owned by no package, or not
// found at all, fails too. Binaries not built in any given tree are reported and skipped;
// nothing built at all: the test is skipped.
//   node check-image-libs.mjs --src SOURCE_DIR --bin-dir DIR [--bin-dir DIR...]
import { existsSync, realpathSync } from "node:fs";
import { join, resolve } from "node:path";
import { Checks, SKIP, list, parseArgs, run } from "./lib.mjs";
import { stages, stagePackages } from "./dockerfile.mjs";

const args = parseArgs();
const src = resolve(args.src);
const binDirs = list(args["bin-dir"]).filter(Boolean).map((d) => resolve(d));
const c = new Checks("check-image-libs");

for (const tool of ["ldd", "dpkg", "apt-cache"]) {
  if (run(tool, ["--version"]).status === 127) {
    console.log(`${tool} not found: cannot map libraries to Debian packages here`);
    process.exit(SKIP);
  }
}

// ---- package closure ---------------------------------------------------------------------------
const depsCache = new Map();
// Direct dependencies (Depends, Pre-Depends) of packages, as apt resolves them: in a group of
// alternatives (a | b) the first real package; a virtual one stands for all its providers.
function directDeps(pkgs) {
  const todo = pkgs.filter((p) => !depsCache.has(p));
  if (todo.length) {
    const r = run("apt-cache", ["depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", ...todo]);
    let groups = null; // of the current package: [[{name, virtual, providers}]]
    let open = false; // the last group continues (its last line had a |)
    let current = null;
    const flush = () => {
      if (current === null) return;
      const deps = [];
      for (const g of groups) {
        const real = g.find((a) => !a.virtual);
        deps.push(...(real ? [real.name] : g.flatMap((a) => a.providers)));
      }
      depsCache.set(current, deps);
    };
    for (const line of r.stdout.split("\n")) {
      if (!line.trim()) continue;
      if (!line.startsWith(" ")) {
        flush();
        current = line.trim().replace(/^<|>$/g, "");
        groups = [];
        open = false;
        continue;
      }
      const dep = /^ {2}(\|)?(?:Depends|PreDepends): (<)?([^<>\s]+)/.exec(line);
      if (dep) {
        if (!open) groups.push([]);
        groups[groups.length - 1].push({ name: dep[3], virtual: !!dep[2], providers: [] });
        open = !!dep[1];
        continue;
      }
      const prov = /^ {4}(\S+)/.exec(line);
      if (prov && groups.length) {
        const g = groups[groups.length - 1];
        g[g.length - 1].providers.push(prov[1]);
      }
    }
    flush();
    for (const p of todo) if (!depsCache.has(p)) depsCache.set(p, null); // not a package
  }
  return pkgs.map((p) => depsCache.get(p));
}
function closure(roots) {
  const seen = new Set();
  let frontier = [...new Set(roots)];
  while (frontier.length) {
    frontier.forEach((p) => seen.add(p));
    const next = [];
    directDeps(frontier).forEach((deps) => (deps ?? []).forEach((d) => !seen.has(d) && next.push(d)));
    frontier = [...new Set(next)];
  }
  return seen;
}

// What debian:bookworm-slim holds before any apt-get install: Essential packages and apt.
const essential = run("dpkg-query", ["-W", "-f", "${Package} ${Essential}\\n"]).stdout
  .split("\n").filter((l) => l.endsWith(" yes")).map((l) => l.split(" ")[0]);
const baseImage = closure([...essential, "apt"]);

// ---- library -> package ------------------------------------------------------------------------
// Owners of files, looked up in one dpkg -S call; a library is tried as ldd names it, through
// its symlinks, and on either side of the /usr merge.
const toggle = (p) => (p.startsWith("/usr/") ? p.slice(4) : `/usr${p}`);
function candidates(path) {
  let real = path;
  try {
    real = realpathSync(path);
  } catch {}
  return [...new Set([path, toggle(path), real, toggle(real)])];
}
function owners(paths) {
  const all = [...new Set(paths.flatMap(candidates))];
  const byPath = new Map();
  for (let i = 0; i < all.length; i += 200) {
    const r = run("dpkg", ["-S", ...all.slice(i, i + 200)]);
    for (const line of r.stdout.split("\n")) {
      if (line.startsWith("diversion") || !line.includes(": ")) continue;
      const at = line.lastIndexOf(": ");
      byPath.set(line.slice(at + 2), line.slice(0, at).split(", ").map((p) => p.replace(/:.*$/, "")));
    }
  }
  const result = new Map();
  for (const p of paths) result.set(p, candidates(p).map((x) => byPath.get(x)).find(Boolean) ?? null);
  return result;
}

// ---- the stages --------------------------------------------------------------------------------
const dockerfile = join(src, "deploy/docker/Dockerfile");
const jobs = []; // {stage, pkgs, relPath, bin, ldd}
for (const st of stages(dockerfile)) {
  if (st.distro.family !== "debian") continue;
  const fromBuild = st.copies.filter((cp) => cp.from === "build");
  if (!fromBuild.length) continue;
  for (const cp of fromBuild) {
    for (const s of cp.sources) {
      if (!s.startsWith("/src/build/")) continue;
      const relPath = s.slice("/src/build/".length);
      const dir = binDirs.find((d) => existsSync(join(d, relPath)));
      if (!dir) {
        c.skip(`stage ${st.name}: ${relPath} is not built in ${binDirs.join(", ") || "(no build tree given)"}`);
        continue;
      }
      const bin = join(dir, relPath);
      jobs.push({ st, pkgs: stagePackages(st), relPath, bin, ldd: run("ldd", [bin]) });
    }
  }
}
if (jobs.length === 0) {
  console.log(`no relora binaries built in ${binDirs.join(", ") || "(none given)"}: build them first (scripts/build.sh)`);
  process.exit(SKIP);
}
const libLine = (line) => (/=>\s+(\/\S+)\s+\(0x/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line))?.[1];
const owner = owners(jobs.flatMap((j) => j.ldd.stdout.split("\n").map(libLine).filter(Boolean)));
const allowedFor = new Map();
for (const { st, pkgs, relPath, bin, ldd } of jobs) {
  if (!allowedFor.has(st.name)) allowedFor.set(st.name, new Set([...closure(pkgs), ...baseImage]));
  const allowed = allowedFor.get(st.name);
  if (!c.ok(ldd.status === 0, `stage ${st.name}: ldd ${bin}`, ldd.stderr.trim())) continue;
  let libs = 0;
  for (const line of ldd.stdout.split("\n")) {
    const nf = /^\s*(\S+) => not found/.exec(line);
    if (nf) {
      c.fail(`stage ${st.name}: ${relPath} needs ${nf[1]}`, "not found on this machine either");
      continue;
    }
    const lib = libLine(line);
    if (!lib) continue; // linux-vdso
    libs++;
    const pk = owner.get(lib);
    if (!pk) {
      c.fail(`stage ${st.name}: ${relPath} loads ${lib}`, "owned by no Debian package (a locally built library?)");
      continue;
    }
    c.ok(pk.some((p) => allowed.has(p)), `stage ${st.name}: ${relPath} loads ${lib} (${pk.join(", ")})`,
      `package ${pk.join(", ")} is neither installed by the stage nor a dependency of ${pkgs.join(" ")}`);
  }
  console.log(`stage ${st.name}: ${bin}: ${libs} libraries checked`);
}
c.finish();
