// compare.mjs - compares the reference's renders with shardlm's, byte for
// byte. A case the reference cannot render (it throws) must fail in shardlm
// too, unless the fixture gives "jinja2": the text Jinja2 (transformers'
// Python renderer) gives, which shardlm must then produce instead.
//   node compare.mjs REF.json OURS.json FIXTURE.json...
import { readFileSync } from "node:fs";
import { basename } from "node:path";

const [refFile, oursFile, ...fixtures] = process.argv.slice(2);
const ref = JSON.parse(readFileSync(refFile, "utf8"));
const ours = JSON.parse(readFileSync(oursFile, "utf8"));
let bad = 0, n = 0;
const perTemplate = {};
for (const file of fixtures) {
  const fx = JSON.parse(readFileSync(file, "utf8"));
  for (const c of fx.cases) {
    const key = `${basename(file, ".json")}/${c.name}`;
    const r = ref[key], o = ours[key];
    n++;
    perTemplate[fx.template] = (perTemplate[fx.template] ?? 0) + 1;
    let why = null;
    if (!r || !o) why = "missing output";
    else if (c.jinja2 !== undefined) {
      if (!("error" in r)) why = `the reference now renders it: ${JSON.stringify(r.text)}`;
      else if (o.text !== c.jinja2) why = `want (Jinja2) ${JSON.stringify(c.jinja2)}\n  got ${JSON.stringify(o)}`;
    } else if ("error" in r) {
      if (!("error" in o)) why = `the reference fails (${r.error}) but shardlm renders ${JSON.stringify(o.text)}`;
      else if (c.error_is_raise && o.error !== r.error) why = `raise_exception text differs: ${o.error} vs ${r.error}`;
    } else if (o.text !== r.text) {
      why = `want ${JSON.stringify(r.text)}\n   got ${JSON.stringify(o.text ?? o)}`;
    }
    if (why) { bad++; console.log(`FAIL ${key}: ${why}`); }
  }
}
for (const [t, k] of Object.entries(perTemplate)) console.log(`${String(k).padStart(3)} cases  ${t}`);
console.log(`${n - bad}/${n} cases match`);
process.exit(bad ? 1 : 0);
