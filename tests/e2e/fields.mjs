// fields.mjs - every row of docs/API.md's table of request fields, through
// the official `openai` client: the table is read from the file, and each
// row's example (on top of a small request) must be refused with exactly
// the row's message and param (refused), answered (accepted), or do what
// the field says (honoured: each such field has a check below that shows
// its effect; a row without one fails, so the table and the checks cannot
// drift). Run against a server on stories260K with a tools-capable chat
// template (tools rows). Usage:
//   node fields.mjs BASE_URL API_KEY MODEL API_MD
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const [base, apiKey, model, apiMd] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: apiKey || 'none', maxRetries: 0, timeout: 120000 });

// ---- the table ----
function readTable() {
  const lines = readFileSync(apiMd, 'utf8').split('\n');
  const at = lines.findIndex((l) => l === '| field | endpoint | status | example | notes |');
  assert.ok(at >= 0, 'docs/API.md has the field table');
  const rows = [];
  for (let i = at + 2; lines[i] && lines[i].startsWith('|'); i++) {
    const cells = lines[i].slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim());
    assert.equal(cells.length, 5, `five cells: ${lines[i]}`);
    const span = (c) => (c.match(/`([^`]*)`/) || [null, c])[1];
    rows.push({ field: span(cells[0]), endpoint: cells[1], status: cells[2], example: JSON.parse(span(cells[3])),
      message: span(cells[4]) });
  }
  return rows;
}

const BASE = {
  completions: { prompt: 'Once upon a time', max_tokens: 4 },
  chat: { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 },
};
const PROMPT = 'Once upon a time';

function body(endpoint, extra) {
  const b = { model, ...BASE[endpoint] };
  if ('max_tokens' in extra || 'max_completion_tokens' in extra) delete b.max_tokens;
  return { ...b, ...extra };
}

async function call(endpoint, extra) {
  const b = body(endpoint, extra);
  const api = endpoint === 'chat' ? client.chat.completions : client.completions;
  if (!b.stream) return api.create(b);
  const chunks = [];
  for await (const c of await api.create(b)) chunks.push(c);
  return chunks;
}

const text = (endpoint, r, i = 0) => (endpoint === 'chat' ? r.choices[i].message.content : r.choices[i].text);
const streamedText = (endpoint, chunks) =>
  chunks.flatMap((c) => c.choices.map((ch) => (endpoint === 'chat' ? ch.delta?.content ?? '' : ch.text))).join('');

// ---- what each honoured field does ----
const greedyCache = {};
async function greedy(endpoint, n = 12) {
  const key = `${endpoint}/${n}`;
  if (!greedyCache[key]) greedyCache[key] = text(endpoint, await call(endpoint, { temperature: 0, max_tokens: n }));
  return greedyCache[key];
}
const weather = {
  type: 'function',
  function: { name: 'get_weather', description: 'The weather',
    parameters: { type: 'object', properties: { city: { type: 'string', description: 'a city', maxLength: 8 } },
      required: ['city'] } },
};
function validCity(call) {
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  const a = JSON.parse(call.function.arguments);
  assert.deepEqual(Object.keys(a), ['city']);
  assert.equal(typeof a.city, 'string');
  assert.ok([...a.city].length <= 8, `city ${a.city} is at most 8 characters`);
}

const both = {
  max_tokens: async (ep) => {
    const r = await call(ep, { max_tokens: 3, temperature: 0 });
    assert.equal(r.usage.completion_tokens, 3);
    assert.equal(r.choices[0].finish_reason, 'length');
  },
  temperature: async (ep) => {
    assert.equal(text(ep, await call(ep, { temperature: 0, max_tokens: 12 })), await greedy(ep));
    assert.notEqual(text(ep, await call(ep, { temperature: 2, seed: 3, max_tokens: 12 })), await greedy(ep));
  },
  top_p: async (ep) => assert.equal(text(ep, await call(ep, { top_p: 1e-9, seed: 1, max_tokens: 12 })), await greedy(ep)),
  top_k: async (ep) => assert.equal(text(ep, await call(ep, { top_k: 1, seed: 1, max_tokens: 12 })), await greedy(ep)),
  min_p: async (ep) => assert.equal(text(ep, await call(ep, { min_p: 1, seed: 1, max_tokens: 12 })), await greedy(ep)),
  n: async (ep) => {
    const r = await call(ep, { n: 2, seed: 5, max_tokens: 6 });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
    assert.equal(r.usage.completion_tokens, 12);
  },
  stream: async (ep) => assert.equal(streamedText(ep, await call(ep, { stream: true, temperature: 0, max_tokens: 12 })),
    await greedy(ep)),
  stream_options: async (ep) => {
    const chunks = await call(ep, { stream: true, stream_options: { include_usage: true }, max_tokens: 5 });
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 5);
    assert.equal(typeof last.usage.prompt_tokens_details.cached_tokens, 'number');
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
  },
  stop: async (ep) => {
    const g = await greedy(ep, 40), stop = g.slice(g.length >> 1, (g.length >> 1) + 3);
    assert.ok(g.length > 8, `a greedy text to cut: ${g}`);
    const r = await call(ep, { stop: [stop], temperature: 0, max_tokens: 40 });
    assert.equal(text(ep, r), g.slice(0, g.indexOf(stop)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  },
  presence_penalty: async (ep) =>
    assert.notEqual(text(ep, await call(ep, { presence_penalty: 2, temperature: 0, max_tokens: 40 })), await greedy(ep, 40)),
  frequency_penalty: async (ep) =>
    assert.notEqual(text(ep, await call(ep, { frequency_penalty: 2, temperature: 0, max_tokens: 40 })), await greedy(ep, 40)),
  repetition_penalty: async (ep) =>
    assert.notEqual(text(ep, await call(ep, { repetition_penalty: 2, temperature: 0, max_tokens: 40 })), await greedy(ep, 40)),
  logit_bias: async (ep) => {
    const r = await call(ep, { logit_bias: { 403: 100 }, temperature: 0, max_tokens: 3 }); // " Once"
    assert.match(text(ep, r), /^ ?Once Once Once$/);
  },
  seed: async (ep) => {
    const a = text(ep, await call(ep, { seed: 7, temperature: 1, max_tokens: 12 }));
    assert.equal(text(ep, await call(ep, { seed: 7, temperature: 1, max_tokens: 12 })), a);
    assert.notEqual(text(ep, await call(ep, { seed: 8, temperature: 1, max_tokens: 12 })), a);
  },
  response_format: async (ep) => {
    const schema = { type: 'object', properties: { done: { type: 'boolean' }, mood: { enum: ['happy', 'sad'] } },
      required: ['done', 'mood'], additionalProperties: false };
    const r = await call(ep, { response_format: { type: 'json_schema', json_schema: { name: 'state', schema } },
      max_tokens: 200, seed: 2 });
    assert.equal(r.choices[0].finish_reason, 'stop');
    const v = JSON.parse(text(ep, r));
    assert.equal(typeof v.done, 'boolean');
    assert.ok(['happy', 'sad'].includes(v.mood));
  },
  grammar: async (ep) => {
    const r = await call(ep, { grammar: 'root ::= "yes" | "no"', max_tokens: 10 });
    assert.ok(['yes', 'no'].includes(text(ep, r)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  },
  min_tokens: async (ep) => {
    const eos = { logit_bias: { 2: 100 }, temperature: 0, max_tokens: 10 };
    assert.equal((await call(ep, eos)).usage.completion_tokens, 1);
    const r = await call(ep, { ...eos, min_tokens: 3 });
    assert.equal(r.usage.completion_tokens, 4, 'three tokens, then EOS');
    assert.equal(r.choices[0].finish_reason, 'stop');
  },
  stop_token_ids: async (ep) => {
    const once = { logit_bias: { 403: 100 }, temperature: 0, max_tokens: 3 };
    const r = await call(ep, { ...once, stop_token_ids: [403] });
    assert.equal(text(ep, r), '');
    assert.equal(r.usage.completion_tokens, 1);
    assert.equal(r.choices[0].finish_reason, 'stop');
  },
  ignore_eos: async (ep) => {
    const r = await call(ep, { logit_bias: { 2: 100 }, ignore_eos: true, temperature: 0, max_tokens: 5 });
    assert.equal(r.usage.completion_tokens, 5);
    assert.equal(r.choices[0].finish_reason, 'length');
  },
};

const honoured = {
  'completions:prompt': async () => {
    const a = await call('completions', { prompt: PROMPT, temperature: 0, max_tokens: 12 });
    const b = await call('completions', { prompt: [1, 403, 407, 261, 378], temperature: 0, max_tokens: 12 });
    assert.equal(a.choices[0].text, b.choices[0].text);
    assert.equal(a.usage.prompt_tokens, 5);
  },
  'completions:best_of': async () => {
    const r = await call('completions', { best_of: 2, n: 2, max_tokens: 3 });
    assert.equal(r.choices.length, 2);
  },
  'completions:echo': async () => {
    const r = await call('completions', { echo: true, temperature: 0, max_tokens: 12 });
    assert.equal(r.choices[0].text, PROMPT + (await greedy('completions')));
  },
  'completions:logprobs': async () => {
    const r = await call('completions', { logprobs: 2, max_tokens: 6, temperature: 0 });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, 6);
    assert.equal(lp.tokens.join(''), r.choices[0].text);
    assert.ok(lp.top_logprobs.every((t) => Object.keys(t).length === 2));
    let at = 0;
    lp.tokens.forEach((t, i) => { assert.equal(lp.text_offset[i], at); at += Buffer.byteLength(t); });
  },
  'chat:messages': async () => {
    const a = await call('chat', { messages: [{ role: 'user', content: 'Hi' }] });
    const b = await call('chat', { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello' }] });
    assert.ok(b.usage.prompt_tokens > a.usage.prompt_tokens, 'the messages are in the prompt');
  },
  'chat:max_completion_tokens': async () => {
    const r = await call('chat', { max_completion_tokens: 3, temperature: 0 });
    assert.equal(r.usage.completion_tokens, 3);
  },
  'chat:logprobs': async () => {
    const r = await call('chat', { logprobs: true, max_tokens: 5, temperature: 0 });
    assert.equal(r.choices[0].logprobs.content.length, 5);
    assert.equal(r.choices[0].logprobs.content.map((t) => t.token).join(''), r.choices[0].message.content);
  },
  'chat:top_logprobs': async () => {
    const r = await call('chat', { logprobs: true, top_logprobs: 2, max_tokens: 5, temperature: 0 });
    for (const t of r.choices[0].logprobs.content) {
      assert.equal(t.top_logprobs.length, 2);
      assert.equal(t.top_logprobs[0].token, t.token);
    }
  },
  'chat:tools': async () => {
    const r = await call('chat', { tools: [weather], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 300, seed: 4 });
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.equal(r.choices[0].message.tool_calls.length, 1);
    validCity(r.choices[0].message.tool_calls[0]);
  },
  'chat:tool_choice': async () => {
    const r = await call('chat', { tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } },
      max_tokens: 300, seed: 5 });
    assert.equal(r.choices[0].message.tool_calls.length, 1);
    validCity(r.choices[0].message.tool_calls[0]);
    const none = await call('chat', { tools: [weather], tool_choice: 'none', max_tokens: 8, temperature: 0 });
    assert.equal(none.choices[0].message.tool_calls, undefined);
    assert.equal(typeof none.choices[0].message.content, 'string');
  },
  'chat:parallel_tool_calls': async () => {
    for (let seed = 1; seed <= 3; seed++) {
      const r = await call('chat', { tools: [weather], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 300, seed });
      assert.equal(r.choices[0].message.tool_calls.length, 1, 'one call at most');
    }
  },
  'chat:modalities': async () => {
    const r = await call('chat', { modalities: ['text'] });
    assert.equal(typeof r.choices[0].message.content, 'string');
  },
  'chat:chat_template_kwargs': async () => {
    const a = await call('chat', {});
    const b = await call('chat', { chat_template_kwargs: { add_generation_prompt: false } });
    assert.ok(b.usage.prompt_tokens < a.usage.prompt_tokens, 'the variable reached the template');
  },
  'chat:add_generation_prompt': async () => {
    const a = await call('chat', {});
    const b = await call('chat', { add_generation_prompt: false });
    assert.ok(b.usage.prompt_tokens < a.usage.prompt_tokens);
  },
};

// ---- the walk ----
let n = 0;
for (const row of readTable()) {
  for (const ep of ['completions', 'chat']) {
    if (row.endpoint !== 'both' && row.endpoint !== ep) continue;
    const name = `${ep} ${row.field} ${JSON.stringify(row.example).slice(0, 60)}: ${row.status}`;
    try {
      if (row.status === 'refused') {
        await assert.rejects(call(ep, row.example), (e) => {
          assert.equal(e.status, 400, `${name}: status ${e.status}`);
          assert.deepEqual(e.error, { message: row.message, type: 'invalid_request_error', param: row.field, code: null });
          return true;
        });
      } else if (row.status === 'accepted') {
        const r = await call(ep, row.example);
        assert.equal(r.model, model, 'the answer names this server\'s model');
      } else {
        assert.equal(row.status, 'honoured');
        const check = honoured[`${ep}:${row.field}`] || both[row.field];
        assert.ok(check, `no check shows what ${ep} ${row.field} does`);
        await call(ep, row.example); // the example itself is answered
        await check(ep);
      }
      n++;
      console.log(`ok   ${name}`);
    } catch (e) {
      console.error(`FAIL ${name}: ${e.stack || e}`);
      process.exit(1);
    }
  }
}
console.log(`fields: ${n} rows behave as docs/API.md says`);
