#!/usr/bin/env node
// bench-serve.mjs - serving benchmark against a running `shardlm serve`:
// time to first token, inter-token latency and aggregate decode throughput
// at several concurrencies (streamed /v1/completions), plus the time to first
// token of a request whose long prefix is already in the prefix cache.
//   node scripts/bench-serve.mjs --url http://127.0.0.1:8080 [--concurrency 1,4,16]
//        [--max-tokens 64] [--rounds 2] [--prefix-tokens 512] [--json]
// Needs only Node.js 18+ (fetch with streaming bodies).

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
  return acc;
}, []));
const url = args.url || 'http://127.0.0.1:8080';
const levels = (args.concurrency || '1,4,16').split(',').map(Number);
const maxTokens = Number(args['max-tokens'] || 64);
const rounds = Number(args.rounds || 2);
const prefixTokens = Number(args['prefix-tokens'] || 512);
const words = ['time', 'little', 'girl', 'park', 'happy', 'ball', 'tree', 'dog', 'sun', 'play', 'big', 'red'];

function median(v) { const s = [...v].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; }
function pct(v, p) { const s = [...v].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; }

async function completion(prompt, maxTok) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTok, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const dec = new TextDecoder();
  let buf = '', first = 0, last = 0, chunks = 0, tokens = 0, promptTokens = 0;
  const gaps = [];
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const msg = JSON.parse(ev.slice(6));
      if (msg.usage) { tokens = msg.usage.completion_tokens; promptTokens = msg.usage.prompt_tokens; }
      if (!msg.choices || !msg.choices.length) continue;
      const now = performance.now();
      if (!first) first = now; else gaps.push(now - last);
      last = now; chunks++;
    }
  }
  return { ttft: (first - t0) / 1000, itl: gaps.map((g) => g / 1000), e2e: (performance.now() - t0) / 1000, tokens, promptTokens };
}

function promptFor(i) { return `Once upon a time ${words[i % words.length]} and ${words[(i * 7) % words.length]}`; }

async function level(c) {
  const all = [];
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++)
    all.push(...await Promise.all(Array.from({ length: c }, (_, i) => completion(promptFor(r * c + i), maxTokens))));
  const wall = (performance.now() - t0) / 1000;
  const tokens = all.reduce((a, x) => a + x.tokens, 0);
  return {
    concurrency: c, requests: all.length, tokens,
    ttft_median_s: median(all.map((x) => x.ttft)),
    itl_median_s: median(all.flatMap((x) => x.itl)), itl_p90_s: pct(all.flatMap((x) => x.itl), 0.9),
    e2e_median_s: median(all.map((x) => x.e2e)), throughput_tok_s: tokens / wall,
  };
}

async function prefixCase() {
  const long = Array.from({ length: prefixTokens }, (_, i) => words[(i * 5) % words.length]).join(' ');
  const cold = await completion(`${long} cold`, 1);
  const warm = await completion(`${long} warm`, 1);
  return { prefix_words: prefixTokens, prompt_tokens: cold.promptTokens, ttft_cold_s: cold.ttft, ttft_cached_s: warm.ttft, ratio: warm.ttft / cold.ttft };
}

const out = { url, max_tokens: maxTokens, rounds, levels: [] };
await completion('warm up', 4);
for (const c of levels) {
  const r = await level(c);
  out.levels.push(r);
  if (!args.json) console.error(`c=${c}: ttft ${r.ttft_median_s.toFixed(3)} s, itl ${(r.itl_median_s * 1000).toFixed(1)} ms, ${r.throughput_tok_s.toFixed(1)} tok/s`);
}
out.prefix = await prefixCase();
const base = out.levels.find((l) => l.concurrency === 1);
if (base) for (const l of out.levels) l.throughput_vs_c1 = l.throughput_tok_s / base.throughput_tok_s;
if (args.json) console.log(JSON.stringify(out));
else {
  console.log('| concurrency | requests | TTFT median s | ITL median ms | ITL p90 ms | e2e median s | decode tok/s | × c=1 |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const l of out.levels)
    console.log(`| ${l.concurrency} | ${l.requests} | ${l.ttft_median_s.toFixed(3)} | ${(l.itl_median_s * 1000).toFixed(1)} | ${(l.itl_p90_s * 1000).toFixed(1)} | ${l.e2e_median_s.toFixed(2)} | ${l.throughput_tok_s.toFixed(1)} | ${(l.throughput_vs_c1 || 0).toFixed(2)} |`);
  const p = out.prefix;
  console.log(`\nprompt of ${p.prompt_tokens} tokens (${p.prefix_words} words) sharing all but its last word: TTFT cold ${p.ttft_cold_s.toFixed(3)} s, cached ${p.ttft_cached_s.toFixed(3)} s (${(100 * p.ratio).toFixed(1)}% of cold)`);
}
