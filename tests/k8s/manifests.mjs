// manifests.mjs - checks rendered deploy/k8s manifests (ctest k8s_manifests)
// and reads the pod environment out of them (tests/netns/k8s.sh):
//   node manifests.mjs validate cpu|gpu TAG FILE   every object against the Kubernetes
//                                                  schemas (kubernetes-models), then what
//                                                  shardlm needs of them; exit 1 naming each fault
//   node manifests.mjs env FILE                    the StatefulSet container's env as
//                                                  NAME=VALUE lines, "#from NAME" for a
//                                                  valueFrom, "#arg A" for each argument,
//                                                  "#mount PATH VOLUME" for each mount
// Run with NODE_PATH-free imports: the caller sets the working directory to
// where kubernetes-models and yaml are installed (tests/k8s/run.sh).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(pathToFileURL(process.cwd() + "/"));
const { parseAllDocuments } = await import(pathToFileURL(require.resolve("yaml")));
const modelsDir = require.resolve("kubernetes-models/package.json").replace(/package\.json$/, "");

function load(file) {
  return parseAllDocuments(readFileSync(file, "utf8"))
    .map((d) => {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      return d.toJS();
    })
    .filter(Boolean);
}

// kubernetes-models lays its classes out as GROUP/VERSION/KIND.js ("v1/Service.js" for the core group).
async function schemaCheck(obj) {
  // kustomize folds a long Secret value over lines; the API server's base64
  // decoder skips newlines, the schema's "byte" format does not
  if (obj.kind === "Secret" && obj.data)
    obj = { ...obj, data: Object.fromEntries(Object.entries(obj.data).map(([k, v]) => [k, String(v).replace(/\n/g, "")])) };
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : [null, obj.apiVersion];
  const path = `${modelsDir}${group ? group + "/" : ""}${version}/${obj.kind}.js`;
  let mod;
  try {
    mod = await import(pathToFileURL(path));
  } catch {
    return `${obj.kind} ${obj.metadata?.name}: no schema for ${obj.apiVersion} ${obj.kind}`;
  }
  try {
    new mod[obj.kind](obj).validate();
    return null;
  } catch (e) {
    return `${obj.kind} ${obj.metadata?.name}: ${e.message}`;
  }
}

function only(objs, kind) {
  const found = objs.filter((o) => o.kind === kind);
  return found;
}

function checkStatefulSet(objs, flavour, tag, errs) {
  const sets = only(objs, "StatefulSet");
  if (sets.length !== 1) return errs.push(`expected one StatefulSet, found ${sets.length}`), null;
  const ss = sets[0], spec = ss.spec, pod = spec.template.spec;
  const c = pod.containers.find((x) => x.name === "shardlm");
  if (!c) return errs.push("StatefulSet: no container named shardlm"), null;
  const env = Object.fromEntries((c.env || []).map((e) => [e.name, e]));
  const r = spec.replicas;
  if (!Number.isInteger(r) || r < 1 || (r & (r - 1)) !== 0) errs.push(`replicas ${r} is not a power of two`);
  const ws = env.SHARDLM_WORLD_SIZE?.value;
  if (ws !== String(r)) errs.push(`SHARDLM_WORLD_SIZE is ${JSON.stringify(ws)} but replicas is ${r}`);
  const img = c.image || "";
  if (!/:[^:/]+$/.test(img) || img.endsWith(":latest")) errs.push(`image ${img}: pin a tag (not latest)`);
  else if (!img.endsWith(":" + tag)) errs.push(`image ${img}: expected the tag ${tag}`);
  const probe = c.readinessProbe;
  if (!probe?.exec || probe.exec.command?.[1] !== "probe" || !/shardlm-entrypoint$/.test(probe.exec.command[0]))
    errs.push("readinessProbe: expected exec [shardlm-entrypoint, probe] (only rank 0 serves /health)");
  if (c.livenessProbe?.httpGet || probe?.httpGet) errs.push("an httpGet probe on every pod: workers serve no HTTP");
  for (const v of pod.volumes || [])
    if (v.persistentVolumeClaim) errs.push(`volume ${v.name}: a claim shared by every pod (use volumeClaimTemplates)`);
  const claims = (spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  const mounts = Object.fromEntries((c.volumeMounts || []).map((m) => [m.mountPath, m.name]));
  const mountOf = (p) => Object.keys(mounts).filter((m) => p === m || p.startsWith(m + "/")).sort().pop();
  for (const k of ["SHARDLM_MODEL", "SHARDLM_WEIGHTS_CACHE"]) {
    const p = env[k]?.value, m = p && mountOf(p);
    if (!m || !claims.includes(mounts[m])) errs.push(`${k}=${p} is not on a per-pod volume (volumeClaimTemplates)`);
  }
  if (pod.enableServiceLinks !== false) errs.push("enableServiceLinks must be false (SHARDLM_* service variables)");
  const th = env.SHARDLM_THREADS?.valueFrom?.resourceFieldRef;
  if (th?.resource !== "limits.cpu" || !c.resources?.limits?.cpu) errs.push("SHARDLM_THREADS must follow limits.cpu");
  const gpus = Number(c.resources?.limits?.["nvidia.com/gpu"] || 0), args = (c.args || []).join(" ");
  if (flavour === "gpu") {
    if (gpus < 1) errs.push("gpu: no nvidia.com/gpu limit");
    if (!/--device cuda\b/.test(args) || !/--comm nccl\b/.test(args)) errs.push(`gpu: args "${args}" lack --device cuda --comm nccl`);
  } else if (gpus || /--comm nccl/.test(args)) errs.push("cpu: asks for a GPU or NCCL");
  return { ss, pod, c, env, mounts, mountOf };
}

function checkSecret(objs, s, errs) {
  const vol = (s.pod.volumes || []).find((v) => v.secret);
  const secret = only(objs, "Secret").find((x) => x.metadata.name === vol?.secret.secretName);
  if (!vol || !secret) return errs.push("no Secret volume, or its Secret is not in the manifests");
  for (const [k, file] of [["SHARDLM_CLUSTER_TOKEN_FILE", "cluster-token"], ["SHARDLM_API_KEY_FILE", "api-key"]]) {
    const p = s.env[k]?.value || "", m = s.mountOf(p);
    if (!m || s.mounts[m] !== vol.name || p !== `${m}/${file}`) errs.push(`${k}=${p} is not the Secret's ${file}`);
    if (!(secret.data || {})[file] && !(secret.stringData || {})[file]) errs.push(`Secret ${secret.metadata.name} has no ${file}`);
  }
}

function checkServices(objs, s, errs) {
  const labels = s.ss.spec.template.metadata.labels || {};
  const selects = (sel) => sel && Object.entries(sel).every(([k, v]) => labels[k] === v || k === "statefulset.kubernetes.io/pod-name");
  const svcs = only(objs, "Service");
  const head = svcs.find((x) => x.metadata.name === s.ss.spec.serviceName);
  if (!head || head.spec.clusterIP !== "None") errs.push(`no headless Service named ${s.ss.spec.serviceName}`);
  else {
    if (head.spec.publishNotReadyAddresses !== true) errs.push("headless Service: publishNotReadyAddresses must be true (no rank is Ready before all have joined)");
    if (!selects(head.spec.selector)) errs.push("headless Service does not select the pods");
    const svc = s.env.SHARDLM_SERVICE?.value;
    if (svc !== head.metadata.name) errs.push(`SHARDLM_SERVICE=${svc} but the headless Service is ${head.metadata.name}`);
  }
  const api = svcs.find((x) => x.spec.selector?.["statefulset.kubernetes.io/pod-name"]);
  const want = `${s.ss.metadata.name}-0`;
  if (!api || api.spec.selector["statefulset.kubernetes.io/pod-name"] !== want || !selects(api.spec.selector))
    errs.push(`no Service selecting pod ${want} alone (only rank 0 serves HTTP)`);
  const ports = new Set((s.c.ports || []).map((p) => p.name));
  for (const svc of svcs)
    for (const p of svc.spec.ports || [])
      if (typeof p.targetPort === "string" && !ports.has(p.targetPort)) errs.push(`Service ${svc.metadata.name}: no container port ${p.targetPort}`);
}

async function validate(flavour, tag, file) {
  const objs = load(file), errs = [];
  for (const o of objs) {
    const e = await schemaCheck(o);
    if (e) errs.push(e);
  }
  const s = checkStatefulSet(objs, flavour, tag, errs);
  if (s) {
    checkSecret(objs, s, errs);
    checkServices(objs, s, errs);
  }
  if (errs.length) {
    for (const e of errs) console.error(`FAIL ${file}: ${e}`);
    process.exit(1);
  }
  const kinds = objs.map((o) => `${o.kind}/${o.metadata.name}`).join(", ");
  console.log(`ok   ${flavour}: ${objs.length} objects valid against the schemas (${kinds}); world size ${s.ss.spec.replicas} = replicas`);
}

function env(file) {
  const ss = load(file).find((o) => o.kind === "StatefulSet");
  const c = ss.spec.template.spec.containers.find((x) => x.name === "shardlm");
  for (const e of c.env || []) console.log(e.valueFrom ? `#from ${e.name}` : `${e.name}=${e.value}`);
  for (const a of c.args || []) console.log(`#arg ${a}`);
  for (const m of c.volumeMounts || []) console.log(`#mount ${m.mountPath} ${m.name}`);
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === "validate" && rest.length === 3) await validate(...rest);
else if (cmd === "env" && rest.length === 1) env(rest[0]);
else {
  console.error("usage: manifests.mjs validate cpu|gpu TAG FILE | env FILE");
  process.exit(2);
}
