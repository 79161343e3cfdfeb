// concurrency.mjs BASE KEY N MAX_TOKENS - N concurrent greedy completions
// with different prompts must each equal the same request run alone (a
// batch must not change results). Run against a server whose KV pool is
// too small for all of them at once, it shows preemption loses nothing.
const [base, key, n = '32', maxTokens = '48'] = process.argv.slice(2);
const words = ['Lily', 'Tom', 'a dog', 'the sun', 'Ben', 'a red ball', 'Mom', 'a little bird'];
const prompt = (i) => `${i % 2 ? 'Once upon a time,' : 'One day,'} ${words[i % 8]} and ${words[(i >> 3) % 8]}`;
const headers = { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) };

async function complete(i) {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers,
    body: JSON.stringify({ prompt: prompt(i), max_tokens: Number(maxTokens), temperature: 0 }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`request ${i}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.choices[0];
}

const count = Number(n);
const alone = [];
for (let i = 0; i < count; i++) alone.push(await complete(i));
const together = await Promise.all(Array.from({ length: count }, (_, i) => complete(i)));
let bad = 0;
for (let i = 0; i < count; i++) {
  if (alone[i].text.length < 20) { bad++; console.error(`request ${i}: almost no text`); }
  if (together[i].text !== alone[i].text || together[i].finish_reason !== alone[i].finish_reason) {
    bad++;
    console.error(`request ${i} differs in a batch:\n  alone:    ${JSON.stringify(alone[i].text)}\n  together: ${JSON.stringify(together[i].text)}`);
  }
}
if (bad) process.exit(1);
console.log(`ok   ${count} concurrent greedy requests each equal the request alone`);
