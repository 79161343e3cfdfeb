// openai_client.mjs - drives a running `shardlm serve` with the official
// `openai` npm package (completions and chat, streamed and not, n, stop,
// logprobs) and with plain fetch for bad requests, whose status and error
// JSON are checked exactly. Usage:
//   node openai_client.mjs BASE_URL API_KEY MODEL REFERENCE_TEXT_FILE
// Exits non-zero on the first failed check.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const [base, apiKey, model, refFile] = process.argv.slice(2);
const PROMPT = 'Once upon a time';
// run.c's greedy continuation of the prompt, without the prompt and the newline
const reference = readFileSync(refFile, 'utf8').replace(/\n$/, '').slice(PROMPT.length);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 60000 });

let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    console.error(`FAIL ${name}: ${e.stack || e}`);
    process.exit(1);
  }
}

async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

await check('models.list names the model', async () => {
  const page = await client.models.list();
  assert.deepEqual(page.data.map((m) => m.id), [model]);
});

await check('completion (greedy) equals the reference text', async () => {
  const r = await client.completions.create({ model, prompt: PROMPT, max_tokens: 60, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(r.choices[0].text, reference);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.deepEqual(r.usage,
    { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65, prompt_tokens_details: { cached_tokens: 0 } });
});

await check('streamed completion equals the reference text, with usage', async () => {
  const stream = await client.completions.create({
    model, prompt: PROMPT, max_tokens: 60, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  const chunks = await collect(stream);
  const text = chunks.flatMap((c) => c.choices.map((ch) => ch.text)).join('');
  assert.equal(text, reference);
  const ends = chunks.flatMap((c) => c.choices).filter((ch) => ch.finish_reason);
  assert.equal(ends.length, 1);
  assert.equal(ends[0].finish_reason, 'length');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage,
    { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65, prompt_tokens_details: { cached_tokens: 0 } });
  assert.ok(chunks.every((c) => c.object === 'text_completion'));
});

await check('stop string ends the completion with finish_reason stop', async () => {
  const r = await client.completions.create({ model, prompt: PROMPT, max_tokens: 60, temperature: 0, stop: [' girl'] });
  assert.equal(r.choices[0].text, ', there was a little');
  assert.equal(r.choices[0].finish_reason, 'stop');
});

await check('token-id prompt gives the same text', async () => {
  const r = await client.completions.create({ model, prompt: [1, 403, 407, 261, 378], max_tokens: 60, temperature: 0 });
  assert.equal(r.choices[0].text, reference);
});

let chatText;
await check('chat completion', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 24, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  chatText = r.choices[0].message.content;
});

await check('streamed chat equals the non-streamed answer', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 24, temperature: 0, stream: true,
  });
  const chunks = await collect(stream);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, chatText);
  assert.ok(['stop', 'length'].includes(chunks[chunks.length - 1].choices[0].finish_reason));
});

await check('n=3 seeded choices, reproducible', async () => {
  const req = { model, prompt: PROMPT, max_tokens: 12, temperature: 1, seed: 7, n: 3 };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(a.usage.completion_tokens, 36);
});

await check('chat logprobs with top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.equal(t.top_logprobs[0].token, t.token, 'greedy picks the most likely token');
  }
});

await check('streamed logprobs equal the non-streamed ones, field by field (text_offset too)', async () => {
  const req = { model, prompt: PROMPT, max_tokens: 24, temperature: 0, logprobs: 3 };
  const whole = (await client.completions.create(req)).choices[0].logprobs;
  const got = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const c of await collect(await client.completions.create({ ...req, stream: true })))
    for (const ch of c.choices) if (ch.logprobs) for (const k of Object.keys(got)) got[k].push(...ch.logprobs[k]);
  assert.deepEqual(got, whole);
  assert.deepEqual(whole.text_offset.slice(0, 5), [0, 1, 7, 11, 13], 'each token where its text starts');
  const creq = { model, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 16, temperature: 0,
    logprobs: true, top_logprobs: 2 };
  const cwhole = (await client.chat.completions.create(creq)).choices[0].logprobs.content;
  const cgot = [];
  for (const c of await collect(await client.chat.completions.create({ ...creq, stream: true })))
    for (const ch of c.choices) if (ch.logprobs) cgot.push(...ch.logprobs.content);
  assert.deepEqual(cgot, cwhole);
});

await check('usage counts the prompt tokens the prefix cache served', async () => {
  const long = `${PROMPT}, there was a little girl named Lily. She loved to play outside in the park.`;
  const a = await client.completions.create({ model, prompt: long, max_tokens: 2 });
  const b = await client.completions.create({ model, prompt: long, max_tokens: 2 });
  assert.ok(a.usage.prompt_tokens > 16);
  assert.equal(b.usage.prompt_tokens_details.cached_tokens, Math.floor((b.usage.prompt_tokens - 1) / 16) * 16);
});

await check('the client sees a 400 as BadRequestError', async () => {
  await assert.rejects(
    client.completions.create({ model, prompt: PROMPT, temperature: 5 }),
    (e) => e.status === 400 && e.error?.param === 'temperature',
  );
});

// ---- bad requests over real HTTP: status and the exact error JSON ----
const auth = { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' };
const err = (message, param, code = null, type = 'invalid_request_error') => ({ error: { message, type, param, code } });
const bad = [
  ['/v1/completions', '{"prompt":', 400, err('the body is not valid JSON', null)],
  ['/v1/completions', '"just a string"', 400, err('the body must be a JSON object', null)],
  ['/v1/completions', '{}', 400, err('prompt is required', 'prompt')],
  ['/v1/completions', '{"prompt":"x","max_tokens":-5}', 400, err('max_tokens must be in [1, 1000000000], got -5', 'max_tokens')],
  ['/v1/completions', '{"prompt":"x","temperature":1e999}', 400, err('temperature must be a finite number', 'temperature')],
  ['/v1/completions', '{"prompt":"x","temperature":"warm"}', 400, err('temperature must be a number', 'temperature')],
  ['/v1/completions', '{"prompt":"x","top_p":0}', 400, err('top_p must be in (0, 1], got 0', 'top_p')],
  ['/v1/completions', '{"prompt":"x","top_p":1.01}', 400, err('top_p must be in (0, 1], got 1.01', 'top_p')],
  ['/v1/completions', '{"prompt":"x","n":17}', 400, err('n must be in [1, 16], got 17', 'n')],
  ['/v1/completions', '{"prompt":"x","stop":["a","b","c","d","e"]}', 400, err('stop takes at most 4 strings', 'stop')],
  ['/v1/completions', '{"prompt":"x","logit_bias":{"99999":1}}', 400,
    err("logit_bias key '99999' is not a token id in [0, 512)", 'logit_bias')],
  ['/v1/completions', '{"prompt":"x","presence_penalty":9}', 400, err('presence_penalty must be in [-2, 2], got 9', 'presence_penalty')],
  ['/v1/completions', '{"prompt":[1,2,99999]}', 400, err('prompt token ids must be integers in [0, 512)', 'prompt')],
  ['/v1/completions', JSON.stringify({ prompt: Array(3000).fill(261) }), 400,
    err('the prompt is 3000 tokens, but this model\'s context holds 2048 (KV pool: %POOL% tokens)', 'prompt',
      'context_length_exceeded')],
  ['/v1/chat/completions', '{"messages":[]}', 400, err('messages must not be empty', 'messages')],
  ['/v1/chat/completions', '{"messages":[{"role":"robot","content":"x"}]}', 400,
    err("messages[0].role 'robot' is not one of system, developer, user, assistant, tool", 'messages[0].role')],
  ['/v1/chat/completions', '{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}', 400,
    err('top_logprobs needs logprobs to be true', 'top_logprobs')],
  ['/v1/chat/completions', '{"messages":[{"role":"user","content":"x"}],"stream":1}', 400,
    err('stream must be a boolean', 'stream')],
  ['/v1/completions', '{"prompt":"x","temprature":0.5}', 400,
    err('Unrecognized request argument supplied: temprature', 'temprature')],
  ['/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x' }], tool_choice: 'required',
    tools: [{ type: 'function', function: { name: 'f' } }] }), 400,
    err('this server\'s chat template renders no tool-call format it can parse (Hermes/Qwen <tool_call>, Llama 3 ' +
      'JSON, Mistral [TOOL_CALLS], Granite <|tool_call|>): start serve with --chat-template naming a template for ' +
      'tool calling, or send tool_choice "none"', 'tools')],
  ['/v1/nothing', '{}', 404, err('no such endpoint: /v1/nothing', null, 'not_found')],
];

await check(`${bad.length} bad requests: status and error JSON`, async () => {
  const pool = Number(process.env.KV_POOL_TOKENS);
  for (const [path, body, status, want] of bad) {
    const r = await fetch(`${base}${path}`, { method: 'POST', headers: auth, body });
    const got = await r.json();
    want.error.message = want.error.message.replace('%POOL%', String(pool));
    assert.equal(r.status, status, `${path} ${body.slice(0, 80)}: ${JSON.stringify(got)}`);
    assert.match(r.headers.get('content-type'), /application\/json/);
    assert.deepEqual(got, want, `${path} ${body.slice(0, 80)}`);
  }
  const g = await fetch(`${base}/v1/completions`, { headers: auth });
  assert.equal(g.status, 405);
  assert.equal((await g.json()).error.code, 'method_not_allowed');
});

await check('still serving after the bad requests', async () => {
  const r = await client.completions.create({ model, prompt: PROMPT, max_tokens: 60, temperature: 0 });
  assert.equal(r.choices[0].text, reference);
});

console.log(`openai_client: ${passed} checks passed`);
