// render.mjs - renders every case of the chat-template fixtures with
// @huggingface/jinja, passing the variables as transformers.js's
// apply_chat_template does (messages, add_generation_prompt, tools,
// documents, the special tokens, then the case's other variables), with
// the clock fixed at the fixture's "now" so strftime_now is reproducible
// (run with TZ=UTC). Prints {"FIXTURE/CASE": {"text": ...} | {"error": ...}}.
//   node render.mjs TEMPLATE_DIR FIXTURE.json...
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { Template } from "@huggingface/jinja";

const [dir, ...files] = process.argv.slice(2);
const RealDate = Date;
let now = 0;
globalThis.Date = class extends RealDate {
  constructor(...a) { if (a.length) super(...a); else super(now * 1000); }
  static now() { return now * 1000; }
};

const out = {};
for (const file of files) {
  const fx = JSON.parse(readFileSync(file, "utf8"));
  const src = readFileSync(`${dir}/${fx.template}`, "utf8");
  let tpl = null, parseError = null;
  try { tpl = new Template(src); } catch (e) { parseError = String(e.message); }
  now = fx.now ?? 0;
  for (const c of fx.cases) {
    const { messages, add_generation_prompt = false, tools, documents, ...kwargs } = c.vars;
    const key = `${basename(file, ".json")}/${c.name}`;
    if (parseError !== null) { out[key] = { error: parseError }; continue; }
    try {
      out[key] = { text: tpl.render({ messages, add_generation_prompt, tools, documents,
        bos_token: fx.bos_token, eos_token: fx.eos_token, ...kwargs }) };
    } catch (e) {
      out[key] = { error: String(e.message) };
    }
  }
}
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
