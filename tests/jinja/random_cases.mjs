// random_cases.mjs - writes N random templates (expressions over the
// value kinds, filters, tests, methods and operators; and text with
// whitespace control around tags) as fixtures into DIR, from a fixed seed,
// so run.sh can check shardlm against the reference beyond the real
// templates. The same seed gives the same files on every machine.
//   node random_cases.mjs DIR N SEED
import { mkdirSync, writeFileSync } from "node:fs";

const [dir, nArg, seedArg] = process.argv.slice(2);
let state = BigInt(seedArg ?? 1) || 1n;
const rnd = () => { // xorshift64*, for a stream that does not depend on the JavaScript engine
  state ^= state >> 12n; state ^= (state << 25n) & 0xffffffffffffffffn; state ^= state >> 27n;
  return Number(((state * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) >> 11n) / 2 ** 53;
};
const pick = (a) => a[Math.floor(rnd() * a.length)];

const atoms = ["1", "2", "0", "-3", "1.5", "2.0", "'a'", "'B c'", "''", "true", "false", "none", "x", "[1, 2]", "[]",
  "{'k': 1}", "{}", "messages", "messages[0]", "messages[1].content", "m.role", "undefinedv", "'  sp '", "'h\u00e9llo\u{1F600}'",
  "ns", "ns.a", "loop.index", "[1, 'a', none]", "x[1].y"];
const ops = [" + ", " - ", " * ", " / ", " // ", " % ", " ~ ", " == ", " != ", " < ", " >= ", " in ", " not in ", " and ", " or ", " ** "];
const filters = ["|length", "|string", "|tojson", "|trim", "|upper", "|first", "|last", "|list", "|int", "|float", "|abs",
  "|join(',')", "|items", "|sort", "|reverse", "|unique", "|default('d')", "|tojson(indent=1)", "|capitalize", "|title",
  "|lower", "|safe", "|count", "|selectattr('role')|list", "|map(attribute='role')|list", "|dictsort", "|indent(2)"];
const tests = [" is defined", " is none", " is string", " is number", " is iterable", " is mapping", " is sequence",
  " is odd", " is true", " is not defined", " is integer", " is boolean", " is lower"];
const methods = [".upper()", ".strip()", ".split()", ".split('a')", ".startswith('a')", ".replace('a', 'b')", ".length",
  ".get('k')", ".items()", ".keys()", "[0]", "[-1]", "[1:]", "[::-1]", ".title()", ".endswith(['a', 'c'])"];
const expr = (d = 0) => {
  const r = rnd();
  if (d > 2 || r < 0.3) return pick(atoms);
  if (r < 0.55) return expr(d + 1) + pick(ops) + expr(d + 1);
  if (r < 0.7) return expr(d + 1) + pick(filters);
  if (r < 0.8) return expr(d + 1) + pick(tests);
  if (r < 0.9) return "(" + expr(d + 1) + ")" + pick(methods);
  if (r < 0.95) return "not " + expr(d + 1);
  return expr(d + 1) + " if " + expr(d + 1) + " else " + expr(d + 1);
};
const texts = ["", " ", "  ", "\n", " \n", "\n  ", "\t", "a", " b ", "\n\n", "x\n", "  y", "\u00a0", "\r\n"];
const dash = () => pick(["", "-"]);
const tag = (d) => {
  const k = rnd(), l = dash(), r = dash();
  if (k < 0.3 || d > 1) return `{{${l} 'v' ${r}}}`;
  if (k < 0.5) return `{#${l} c ${r}#}`;
  if (k < 0.75) return `{%${l} if true ${r}%}${body(d + 1)}{%${dash()} endif ${dash()}%}`;
  return `{%${l} for i in [1, 2] ${r}%}${body(d + 1)}{%${dash()} endfor ${dash()}%}`;
};
const body = (d = 0) => {
  let out = "";
  for (let i = 0, n = 1 + Math.floor(rnd() * 3); i < n; i++) out += pick(texts) + (rnd() < 0.7 ? tag(d) : "");
  return out + pick(texts);
};

mkdirSync(dir, { recursive: true });
const messages = [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Hello!" }];
for (let i = 0; i < Number(nArg); i++) {
  const src = i % 2
    ? `{% set ns = namespace(a=2) %}{% for m in messages %}{% if loop.first %}{{ ${expr()} }}{% endif %}{% endfor %}|{{ ${expr()} }}`
    : body();
  writeFileSync(`${dir}/r${i}.jinja`, src);
  writeFileSync(`${dir}/r${i}.json`, JSON.stringify({ template: `r${i}.jinja`, now: 1721999100,
    cases: [{ name: "c", vars: { messages, x: [1, { y: 2 }], add_generation_prompt: true } }] }));
}
