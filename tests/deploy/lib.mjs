// Helpers shared by the tests/deploy scripts: no npm packages here (see loadDeps for those).
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

export const SKIP = 77; // ctest SKIP_RETURN_CODE

// Arguments: --name value (repeatable), --flag (one of `booleans`) and plain ones.
export function parseArgs(booleans = [], argv = process.argv.slice(2)) {
  const opts = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--")) {
      const [k, v] = a.includes("=") ? [a.slice(2, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a.slice(2), undefined];
      const value = v !== undefined ? v : booleans.includes(k) || argv[i + 1] === undefined ? true : argv[++i];
      if (opts[k] === undefined) opts[k] = value;
      else opts[k] = [].concat(opts[k], value);
    } else {
      opts._.push(a);
    }
  }
  return opts;
}

export const list = (v) => (v === undefined ? [] : [].concat(v));

// The validators installed by npm-install.sh (deps.mjs in RELORA_DEPLOY_NPM_DIR).
export async function loadDeps() {
  const dir = process.env.RELORA_DEPLOY_NPM_DIR;
  if (!dir) throw new Error("RELORA_DEPLOY_NPM_DIR is not set (ctest sets it; see tests/deploy/CMakeLists.txt)");
  const entry = join(resolve(dir), "deps.mjs");
  if (!existsSync(join(resolve(dir), "node_modules")) || !existsSync(entry)) {
    if (!which("npm")) {
      console.log(`npm not found and no validators in ${dir}: skipped (apt-get install npm)`);
      process.exit(SKIP);
    }
    throw new Error(`the deploy validators are not installed in ${dir}: run the DeployNpmInstall test first`);
  }
  return import(pathToFileURL(entry).href);
}

export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, ...opts });
  if (r.error && r.error.code === "ENOENT") return { status: 127, stdout: "", stderr: `${cmd}: not found` };
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

export function which(cmd) {
  return run("sh", ["-c", `command -v ${cmd}`]).status === 0;
}

// Collects named checks; finish() prints the summary line ctest and CI read and exits.
export class Checks {
  constructor(title) {
    this.title = title;
    this.passed = 0;
    this.failed = [];
    this.skipped = [];
  }
  ok(cond, what, detail = "") {
    if (cond) {
      this.passed++;
    } else {
      this.failed.push(detail ? `${what}: ${detail}` : what);
      console.log(`FAIL ${what}${detail ? `: ${detail}` : ""}`);
    }
    return cond;
  }
  fail(what, detail = "") {
    return this.ok(false, what, detail);
  }
  skip(what) {
    this.skipped.push(what);
    console.log(`SKIP ${what}`);
  }
  note(line) {
    console.log(line);
  }
  finish({ skipIfEmpty = false } = {}) {
    if (skipIfEmpty && this.passed === 0 && this.failed.length === 0) {
      console.log(`${this.title}: nothing to check`);
      process.exit(SKIP);
    }
    console.log(`${this.title}: ${this.passed} passed, ${this.failed.length} failed` +
      (this.skipped.length ? `, ${this.skipped.length} skipped` : ""));
    process.exit(this.failed.length ? 1 : 0);
  }
}

export function readText(path) {
  return readFileSync(path, "utf8");
}

// Every object of a multi-document YAML text (Lists flattened); throws on YAML errors.
export function yamlObjects(YAML, text, source) {
  const docs = YAML.parseAllDocuments(text, { merge: true });
  const out = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${source}: ${d.errors.map((e) => e.message).join("; ")}`);
    const v = d.toJS({ maxAliasCount: 1000 });
    if (v === null || v === undefined) continue;
    if (v.kind === "List" && Array.isArray(v.items)) out.push(...v.items);
    else out.push(v);
  }
  return out;
}

export const objName = (o) => `${o?.kind ?? "?"}/${o?.metadata?.name ?? "?"}`;
