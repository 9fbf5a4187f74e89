// A small Dockerfile reader for the deploy tests: stages, their base and distribution, the
// packages their RUN lines apt-get install, their COPY instructions.
import { readFileSync } from "node:fs";

// Logical instructions: continuation lines joined, comment lines dropped.
export function instructions(text) {
  const out = [];
  let cur = null;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (/^\s*#/.test(line)) continue;
    if (cur === null) {
      if (!line.trim()) continue;
      cur = line.trim();
    } else {
      cur += ` ${line.trim()}`;
    }
    if (cur.endsWith("\\")) {
      cur = cur.slice(0, -1).trimEnd();
    } else {
      const m = /^(\w+)\s+([\s\S]*)$/.exec(cur);
      if (m) out.push({ op: m[1].toUpperCase(), rest: m[2] });
      cur = null;
    }
  }
  return out;
}

const substitute = (s, vars) => s.replace(/\$\{(\w+)(:-[^}]*)?\}|\$(\w+)/g, (all, a, dflt, b) => vars[a ?? b] ?? (dflt ? dflt.slice(2) : all));

// Packages named by `apt-get install` (and `apt install`) in a shell command.
export function aptInstalls(cmd) {
  const pkgs = [];
  const re = /\bapt(?:-get)?\s+(?:-\S+\s+)*install\b/g;
  let m;
  while ((m = re.exec(cmd))) {
    const tail = cmd.slice(m.index + m[0].length);
    for (const tok of tail.split(/\s+/)) {
      if (!tok) continue;
      if (["&&", "||", ";", "|", ")"].includes(tok) || /[;&|)]$/.test(tok)) {
        const word = tok.replace(/[;&|)]+$/, "");
        if (word && !word.startsWith("-")) pkgs.push(word);
        break;
      }
      if (tok.startsWith("-")) continue;
      if (/[$`"'<>]/.test(tok)) continue; // shell expansions: not a package name
      pkgs.push(tok);
    }
  }
  return pkgs;
}

// Stages of a Dockerfile: [{name, index, image, parent, distro, packages, copies, runs, user}].
export function stages(path) {
  const text = readFileSync(path, "utf8");
  const vars = {};
  const list = [];
  let st = null;
  for (const ins of instructions(text)) {
    if (ins.op === "ARG" && st === null) {
      const [k, v] = ins.rest.split("=");
      vars[k.trim()] = (v ?? "").trim().replace(/^"(.*)"$/, "$1");
    } else if (ins.op === "FROM") {
      const words = ins.rest.split(/\s+/).filter((w) => !w.startsWith("--"));
      const image = substitute(words[0], vars);
      const name = words[1]?.toUpperCase() === "AS" ? words[2] : String(list.length);
      const parent = list.find((s) => s.name === image) ?? null;
      st = { name, index: list.length, image, parent, distro: parent ? parent.distro : distroOf(image), packages: [], copies: [], runs: [], user: parent?.user ?? null };
      list.push(st);
    } else if (st && ins.op === "RUN") {
      st.runs.push(ins.rest);
      st.packages.push(...aptInstalls(ins.rest));
    } else if (st && (ins.op === "COPY" || ins.op === "ADD")) {
      const words = ins.rest.startsWith("[") ? JSON.parse(ins.rest) : ins.rest.split(/\s+/);
      const from = words.find((w) => w.startsWith("--from="))?.slice(7) ?? null;
      const paths = words.filter((w) => !w.startsWith("--"));
      st.copies.push({ op: ins.op, from, sources: paths.slice(0, -1), dest: paths[paths.length - 1] });
    } else if (st && ins.op === "USER") {
      st.user = ins.rest.trim();
    }
  }
  return list;
}

// {family, codename} of a base image; family "debian" for Debian images whose codename we know.
export function distroOf(image) {
  const m = /^(?:docker\.io\/)?(?:library\/)?debian:([a-z]+)/.exec(image);
  if (m) return { family: "debian", codename: m[1] };
  const u = /ubuntu[:-]?(\d\d\.\d\d)/.exec(image);
  if (u) return { family: "ubuntu", release: u[1] };
  return { family: "unknown", image };
}

// All packages a stage installs, its ancestors' included.
export function stagePackages(st) {
  return [...(st.parent ? stagePackages(st.parent) : []), ...st.packages];
}
