// tools.mjs - tool calling through the official `openai` client, against a
// server whose chat template renders tool calls: tool_choice "required"
// answers at temperature 1 (one call, and several with
// parallel_tool_calls) whose arguments validate against each tool's
// schema, streamed and not (the stream's deltas put together are the same
// calls as the JSON answer for the same seed, logprobs included); a named
// tool_choice; "auto" and "none"; and a second turn carrying the tool's
// result. Usage:
//   node tools.mjs BASE_URL MODEL FORMAT [COUNT]
// FORMAT (hermes, llama3, mistral-args, ...) only changes what is expected
// of ids and of parallel calls. EOS_BIAS (environment) is a logit bias on
// the EOS token (id 2) for requests that allow several calls: stories260K
// rarely ends after a call (its EOS logit is about 14 below the newline
// that would start the next one), so without it every such answer would
// hold the most calls the grammar allows.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [base, model, format, countArg] = process.argv.slice(2);
const COUNT = Number(countArg || 10);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0, timeout: 300000 });
const parallelFormat = format !== 'llama3';

let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${model}, ${format})`);
  } catch (e) {
    console.error(`FAIL ${name} (${model}, ${format}): ${e.stack || e}`);
    process.exit(1);
  }
}

const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'The weather in a city',
    parameters: { type: 'object', properties: {
      city: { type: 'string', description: 'The city', minLength: 1, maxLength: 8 },
      unit: { type: 'string', description: 'The unit', enum: ['celsius', 'fahrenheit'] },
      days: { type: 'integer', description: 'How many days', minimum: 1, maximum: 5 } },
    required: ['city', 'unit'], additionalProperties: false } } },
  { type: 'function', function: { name: 'get_time', description: 'The time in a zone',
    parameters: { type: 'object', properties: { zone: { type: 'string', description: 'The zone', enum: ['UTC', 'CET'] } },
      required: ['zone'], additionalProperties: false } } },
];
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];

// Returns null when the call's arguments validate against its tool's schema.
function invalid(call) {
  if (call.type !== 'function') return `type ${call.type}`;
  const tool = tools.find((t) => t.function.name === call.function.name);
  if (!tool) return `unknown function ${call.function.name}`;
  let a;
  try { a = JSON.parse(call.function.arguments); } catch { return `arguments are not JSON: ${call.function.arguments}`; }
  const s = tool.function.parameters;
  if (!a || typeof a !== 'object' || Array.isArray(a)) return 'arguments are not an object';
  for (const r of s.required) if (!(r in a)) return `lacks ${r}`;
  for (const [k, v] of Object.entries(a)) {
    const p = s.properties[k];
    if (!p) return `extra argument ${k}`;
    if (p.enum && !p.enum.includes(v)) return `${k} not in the enum`;
    const chars = typeof v === 'string' ? [...v].length : -1;
    if (p.type === 'string' && (chars < (p.minLength ?? 0) || chars > (p.maxLength ?? Infinity)))
      return `${k}: bad string ${JSON.stringify(v)}`;
    if (p.type === 'integer' && (!Number.isInteger(v) || v < p.minimum || v > p.maximum)) return `${k}: bad integer ${v}`;
  }
  return null;
}

function checkId(id) {
  if (format.startsWith('mistral')) assert.match(id, /^[a-zA-Z0-9]{9}$/);
  else assert.match(id, /^call_[a-zA-Z0-9]{24}$/);
}

function checkAnswer(choice, { parallel }) {
  assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(choice));
  const calls = choice.message.tool_calls;
  assert.ok(calls.length >= 1);
  if (!parallel || !parallelFormat) assert.equal(calls.length, 1, 'one call without parallel_tool_calls');
  assert.ok(calls.length <= 16);
  for (const c of calls) {
    checkId(c.id);
    const why = invalid(c);
    assert.equal(why, null, `${why}: ${JSON.stringify(c)}`);
  }
  assert.equal(new Set(calls.map((c) => c.id)).size, calls.length, 'distinct ids');
}

// A stream's chunks put together as a client does.
function assemble(chunks) {
  const msg = { role: 'assistant', content: null, tool_calls: [] };
  let finish = null;
  const lp = [];
  for (const c of chunks) {
    for (const ch of c.choices) {
      const d = ch.delta || {};
      if (d.content) msg.content = (msg.content ?? '') + d.content;
      for (const t of d.tool_calls ?? []) {
        if (t.id) {
          assert.equal(t.index, msg.tool_calls.length, 'calls open in order, with their index');
          assert.equal(t.function.arguments, '', 'the opening delta has the name and empty arguments');
          msg.tool_calls.push({ id: t.id, type: t.type, function: { name: t.function.name, arguments: '' } });
        } else {
          assert.equal(t.function.name, undefined, 'later deltas carry arguments only');
          msg.tool_calls[t.index].function.arguments += t.function.arguments;
        }
      }
      if (ch.logprobs?.content) lp.push(...ch.logprobs.content);
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  return { message: msg, finish_reason: finish, logprobs: lp };
}

const EOS_BIAS = Number(process.env.EOS_BIAS || 0);
const req = (extra) => ({ model, messages, tools, tool_choice: 'required', max_tokens: 1500,
  ...(extra.parallel_tool_calls !== false && EOS_BIAS ? { logit_bias: { 2: EOS_BIAS } } : {}), ...extra });
const strip = (calls) => calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments }));

await check(`${COUNT} required answers at temperature 1 validate (one call, or several)`, async () => {
  let calls = 0;
  for (let i = 0; i < COUNT; i++) {
    const parallel = i % 2 === 0;
    const r = await client.chat.completions.create(req({ seed: 100 + i, parallel_tool_calls: parallel }));
    checkAnswer(r.choices[0], { parallel });
    assert.equal(r.choices[0].message.content, null, 'no text outside the calls');
    calls += r.choices[0].message.tool_calls.length;
  }
  console.log(`     ${calls} calls`);
  if (parallelFormat) assert.ok(calls > COUNT, 'some answers hold several calls');
});

await check('streamed answers are the JSON answers, call for call, logprobs included', async () => {
  for (let i = 0; i < 3; i++) {
    const extra = { seed: 200 + i, parallel_tool_calls: i === 1, logprobs: true, top_logprobs: 2 };
    const whole = await client.chat.completions.create(req(extra));
    const chunks = [];
    for await (const c of await client.chat.completions.create(req({ ...extra, stream: true }))) chunks.push(c);
    const s = assemble(chunks);
    checkAnswer({ message: s.message, finish_reason: s.finish_reason }, { parallel: i === 1 });
    assert.equal(s.finish_reason, whole.choices[0].finish_reason);
    assert.deepEqual(strip(s.message.tool_calls), strip(whole.choices[0].message.tool_calls));
    assert.equal(s.message.content, whole.choices[0].message.content);
    assert.deepEqual(s.logprobs, whole.choices[0].logprobs.content, 'logprobs field by field');
    assert.ok(s.logprobs.length >= whole.usage.completion_tokens - 1, 'every token but an ending one has logprobs');
  }
});

await check('a named tool_choice calls that tool once', async () => {
  for (let i = 0; i < 3; i++) {
    const r = await client.chat.completions.create(req({ seed: 300 + i,
      tool_choice: { type: 'function', function: { name: 'get_time' } } }));
    checkAnswer(r.choices[0], { parallel: false });
    assert.equal(r.choices[0].message.tool_calls[0].function.name, 'get_time');
  }
});

await check('auto answers text or calls; none answers text', async () => {
  const auto = await client.chat.completions.create(req({ tool_choice: 'auto', seed: 9, max_tokens: 40 }));
  const c = auto.choices[0];
  if (c.message.tool_calls) checkAnswer(c, { parallel: true });
  else assert.ok(['stop', 'length'].includes(c.finish_reason) && typeof c.message.content === 'string');
  const none = await client.chat.completions.create(req({ tool_choice: 'none', seed: 9, max_tokens: 40 }));
  assert.equal(none.choices[0].message.tool_calls, undefined);
  assert.equal(typeof none.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(none.choices[0].finish_reason));
});

await check('a second turn with the tool result is rendered and answered', async () => {
  const first = await client.chat.completions.create(req({ seed: 400, parallel_tool_calls: false }));
  const call = first.choices[0].message.tool_calls[0];
  const turn = [...messages, first.choices[0].message,
    { role: 'tool', tool_call_id: call.id, content: 'It is 21 degrees.' }];
  const r = await client.chat.completions.create({ model, messages: turn, tools, max_tokens: 20, temperature: 0 });
  assert.ok(r.usage.prompt_tokens > first.usage.prompt_tokens, 'the call and its result are in the prompt');
  assert.ok(['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason));
  const shown = await fetch(`${base}/apply-template`, { method: 'POST', body: JSON.stringify({ messages: turn, tools }) });
  const prompt = (await shown.json()).prompt;
  assert.ok(prompt.includes('It is 21 degrees.'), `the result is in the prompt: ${prompt.slice(-300)}`);
  assert.ok(prompt.includes(call.function.name));
});

console.log(`tools: ${passed} checks passed (${model}, ${format})`);
