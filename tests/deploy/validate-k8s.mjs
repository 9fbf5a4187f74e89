// Validates Kubernetes objects (multi-document YAML files, e.g. `kubectl kustomize` output)
// against the Kubernetes OpenAPI schemas that the npm package kubernetes-models bundles, and
// the Prometheus Operator's CRD schemas (@kubernetes-models/prometheus-operator) for
// ServiceMonitor. The models' validators accept unknown fields, as the API server's
// non-strict decoding does; a misspelt field (readinesProbe) would then be dropped silently,
// so every field is also checked against the model's declared properties (strict decoding,
// like `kubectl apply --validate=strict`). An object with no schema is an error.
//
//   node validate-k8s.mjs FILE...                  every object must be valid
//   node validate-k8s.mjs --expect-invalid FILE... every file must hold an invalid object;
//        a line "# expect-error: TEXT" in the file names a message that must be reported
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { Checks, loadDeps, objName, parseArgs, readText, yamlObjects } from "./lib.mjs";

const args = parseArgs(["expect-invalid"]);
const expectInvalid = args["expect-invalid"] === true;
const files = args._;
if (files.length === 0) {
  console.error("usage: node validate-k8s.mjs [--expect-invalid] FILE...");
  process.exit(2);
}
const deps = await loadDeps();

// ---- strict field check, from the models' TypeScript declarations --------------------------
const dtsCache = new Map();

function dtsPath(fromFile, spec) {
  const base = spec.replace(/\.js$/, "");
  return spec.startsWith(".") ? resolve(dirname(fromFile), `${base}.d.ts`) : join(deps.nodeModules, `${base}.d.ts`);
}

// { props: Map(field -> type text), imports: Map(identifier -> .d.ts path) } of the first
// interface in a declaration file, or null when it declares none (a type alias: Quantity...).
function parseDts(file) {
  if (dtsCache.has(file)) return dtsCache.get(file);
  let info = null;
  if (existsSync(file)) {
    const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
    const imports = new Map();
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
      for (const id of m[1].split(",").map((s) => s.trim()).filter(Boolean)) imports.set(id, dtsPath(file, m[2]));
    }
    const head = /export interface \w+(?:\s+extends\s+[^{]+)?\s*\{/.exec(text);
    if (head) {
      let depth = 1;
      let i = head.index + head[0].length;
      const start = i;
      for (; i < text.length && depth > 0; i++) {
        if (text[i] === "{") depth++;
        else if (text[i] === "}") depth--;
      }
      const body = text.slice(start, i - 1);
      const props = new Map();
      let d = 0;
      let cur = "";
      for (const ch of body) {
        if ("{<(".includes(ch)) d++;
        if ("}>)".includes(ch)) d--;
        if (ch === ";" && d === 0) {
          const m = /^\s*"([^"]+)"\??\s*:\s*([\s\S]*)$/.exec(cur);
          if (m) props.set(m[1], m[2].trim());
          cur = "";
        } else {
          cur += ch;
        }
      }
      info = { props, imports };
    }
  }
  dtsCache.set(file, info);
  return info;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function strictCheck(value, file, path, errors, top = false) {
  const info = parseDts(file);
  if (!info || !isObject(value)) return;
  for (const [key, v] of Object.entries(value)) {
    if (top && (key === "apiVersion" || key === "kind")) continue;
    const type = info.props.get(key);
    if (type === undefined) {
      errors.push(`${path}/${key}: unknown field "${key}"`);
      continue;
    }
    const ref = (id, val, p) => {
      if (info.imports.has(id) && (isObject(val) || Array.isArray(val))) strictCheck(val, info.imports.get(id), p, errors);
    };
    let m;
    if ((m = /^Array<(\w+)>$/.exec(type))) {
      if (Array.isArray(v)) v.forEach((item, i) => ref(m[1], item, `${path}/${key}/${i}`));
    } else if ((m = /^\{\s*\[key: string\]:\s*(\w+);?\s*\}$/.exec(type))) {
      if (isObject(v)) for (const [k2, v2] of Object.entries(v)) ref(m[1], v2, `${path}/${key}/${k2}`);
    } else if ((m = /^(\w+)$/.exec(type))) {
      ref(m[1], v, `${path}/${key}`);
    }
  }
}

// ---- validation --------------------------------------------------------------------------------
async function validateObject(obj) {
  const errors = [];
  if (!isObject(obj) || typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
    return ["not a Kubernetes object (apiVersion and kind must be strings)"];
  }
  const Model = await deps.loadModel(obj.apiVersion, obj.kind);
  if (!Model) return [`no schema for ${obj.apiVersion} ${obj.kind} (add its model package to tests/deploy/package.json)`];
  try {
    new Model(structuredClone(obj)).validate();
  } catch (e) {
    errors.push(String(e.message ?? e).replace(/\s+/g, " "));
  }
  strictCheck(obj, join(deps.nodeModules, `${deps.modelModule(obj.apiVersion, obj.kind)}.d.ts`), "", errors, true);
  return errors;
}

const checks = new Checks(expectInvalid ? "validate-k8s (expect invalid)" : "validate-k8s");
for (const file of files) {
  const text = readText(file);
  let objects;
  try {
    objects = yamlObjects(deps.YAML, text, file);
  } catch (e) {
    checks.fail(file, e.message);
    continue;
  }
  if (!expectInvalid) {
    checks.ok(objects.length > 0, `${file}: holds objects`, "no objects");
    for (const obj of objects) {
      const errors = await validateObject(obj);
      checks.ok(errors.length === 0, `${file}: ${obj?.apiVersion} ${objName(obj)}`, errors.join("; "));
    }
    console.log(`${file}: ${objects.length} objects`);
  } else {
    const expected = [...text.matchAll(/^#\s*expect-error:\s*(.+?)\s*$/gm)].map((m) => m[1]);
    const reported = [];
    for (const obj of objects) reported.push(...(await validateObject(obj)));
    console.log(`${file}: rejected with: ${reported.join("; ") || "(nothing)"}`);
    checks.ok(reported.length > 0, `${file}: rejected`, "the validator accepted an invalid object");
    for (const e of expected) {
      checks.ok(reported.some((r) => r.includes(e)), `${file}: reports "${e}"`, `got: ${reported.join("; ")}`);
    }
  }
}
checks.finish();
