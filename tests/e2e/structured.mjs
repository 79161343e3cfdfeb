// structured.mjs - structured outputs through the official `openai`
// client: 20 chat completions at temperature 1 with response_format
// json_schema (nested objects, arrays, enums, required fields), streamed and
// not, each of which must parse and validate against the schema (the small
// validator below covers the keywords used); json_object; the grammar
// field; and the 400s for an unsupported keyword and a bad grammar. Usage:
//   node structured.mjs BASE_URL API_KEY MODEL
// Exits non-zero on the first failed check.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [base, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: apiKey || 'none', maxRetries: 0, timeout: 120000 });

let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${model})`);
  } catch (e) {
    console.error(`FAIL ${name} (${model}): ${e.stack || e}`);
    process.exit(1);
  }
}

const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 10 },
    age: { type: 'integer', minimum: 1, maximum: 120 },
    mood: { enum: ['happy', 'sad', 'angry'] },
    pets: {
      type: 'array', maxItems: 2,
      items: {
        type: 'object',
        properties: { kind: { enum: ['dog', 'cat'] }, legs: { type: 'integer', minimum: 0, maximum: 8 } },
        required: ['kind', 'legs'], additionalProperties: false,
      },
    },
    home: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 8 }, big: { type: 'boolean' } },
      required: ['city'], additionalProperties: false,
    },
  },
  required: ['name', 'age', 'mood', 'pets', 'home'],
  additionalProperties: false,
};

// Returns null when v validates, else what is wrong (JSON Schema counts
// string length in code points).
function invalid(v, s, at = '$') {
  const types = { object: (x) => x && typeof x === 'object' && !Array.isArray(x), array: Array.isArray,
    string: (x) => typeof x === 'string', integer: Number.isInteger, number: (x) => typeof x === 'number',
    boolean: (x) => typeof x === 'boolean', null: (x) => x === null };
  if (s.type && !types[s.type](v)) return `${at} is not of type ${s.type}`;
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) return `${at} is not in the enum`;
  if (s.minimum !== undefined && v < s.minimum) return `${at} is below ${s.minimum}`;
  if (s.maximum !== undefined && v > s.maximum) return `${at} is above ${s.maximum}`;
  if (typeof v === 'string') {
    const n = [...v].length;
    if (s.minLength !== undefined && n < s.minLength) return `${at} is shorter than ${s.minLength}`;
    if (s.maxLength !== undefined && n > s.maxLength) return `${at} is longer than ${s.maxLength}`;
  }
  if (Array.isArray(v)) {
    if (s.maxItems !== undefined && v.length > s.maxItems) return `${at} has over ${s.maxItems} items`;
    for (let i = 0; i < v.length && s.items; i++) {
      const w = invalid(v[i], s.items, `${at}[${i}]`);
      if (w) return w;
    }
  }
  if (types.object(v) && (s.properties || s.required)) {
    for (const r of s.required || []) if (!(r in v)) return `${at} lacks ${r}`;
    for (const [k, x] of Object.entries(v)) {
      if (!s.properties[k]) return `${at} has the extra property ${k}`;
      const w = invalid(x, s.properties[k], `${at}.${k}`);
      if (w) return w;
    }
  }
  return null;
}

const format = { type: 'json_schema', json_schema: { name: 'person', strict: true, schema } };
const messages = [{ role: 'user', content: 'Describe a person as JSON.' }];

function validDocument(text, finish) {
  assert.equal(finish, 'stop', `finish_reason ${finish}: ${text}`);
  let doc;
  assert.doesNotThrow(() => { doc = JSON.parse(text); }, `not JSON: ${text}`);
  assert.equal(invalid(doc, schema), null, `${invalid(doc, schema)}: ${text}`);
  return doc;
}

await check('20 json_schema chat completions at temperature 1 validate', async () => {
  const texts = new Set();
  for (let i = 0; i < 20; i++) {
    const r = await client.chat.completions.create({
      model, messages, temperature: 1, seed: 100 + i, max_tokens: 1500, response_format: format,
    });
    const c = r.choices[0];
    validDocument(c.message.content, c.finish_reason);
    texts.add(c.message.content);
  }
  assert.ok(texts.size > 10, `only ${texts.size} distinct documents`);
});

await check('streamed json_schema choices (n=3) validate and match their non-streamed twins', async () => {
  const req = { model, messages, temperature: 1, seed: 7, n: 3, max_tokens: 1500, response_format: format };
  const whole = await client.chat.completions.create(req);
  const stream = await client.chat.completions.create({ ...req, stream: true });
  const text = ['', '', ''], finish = [];
  for await (const chunk of stream)
    for (const ch of chunk.choices) {
      text[ch.index] += ch.delta.content || '';
      if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
    }
  for (let i = 0; i < 3; i++) {
    validDocument(text[i], finish[i]);
    assert.equal(text[i], whole.choices[i].message.content, `choice ${i}`);
  }
});

await check('json_object gives one JSON object', async () => {
  const r = await client.completions.create({
    model, prompt: 'Once upon a time', temperature: 1, seed: 3, max_tokens: 1500,
    response_format: { type: 'json_object' },
  });
  const t = r.choices[0].text;
  if (r.choices[0].finish_reason === 'stop') assert.equal(typeof JSON.parse(t), 'object', t);
  else assert.equal(r.choices[0].finish_reason, 'length', 'only max_tokens may cut it short');
  assert.equal(t[0], '{');
});

await check('the grammar field (GBNF)', async () => {
  const r = await client.completions.create({
    model, prompt: 'x', temperature: 1, seed: 1, max_tokens: 50,
    grammar: 'root ::= ("yes" | "no") "," [0-9]{1,3}',
  });
  assert.match(r.choices[0].text, /^(yes|no),[0-9]{1,3}$/);
  assert.equal(r.choices[0].finish_reason, 'stop');
});

await check('an unsupported schema keyword and a bad grammar are 400s naming them', async () => {
  const bad = { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', uniqueItems: true } } };
  await assert.rejects(client.chat.completions.create({ model, messages, response_format: bad }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.error.message, 'response_format.json_schema.schema: "uniqueItems": true at # is not supported');
    assert.equal(e.error.param, 'response_format');
    return true;
  });
  await assert.rejects(client.completions.create({ model, prompt: 'x', grammar: 'root ::= (' }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.error.message, "grammar: line 1 column 10: '(' is not closed");
    assert.equal(e.error.param, 'grammar');
    return true;
  });
});

console.log(`structured: ${passed} checks passed (${model})`);
