// abuse.mjs - the abuse half of tests/abuse/run.sh: a 100 MB body, 500 slow
// clients and 1000 idle connections held open against `shardlm serve`
// while good requests must still get the golden text within 2 s of their
// normal time. Node's own net/http only (no packages), one event loop.
//   node abuse.mjs HOST PORT KEY WANT_TEXT_FILE HTTP_TIMEOUT_S
import net from 'node:net';
import http from 'node:http';
import fs from 'node:fs';

const [host, portS, key, wantFile, timeoutS] = process.argv.slice(2);
const port = Number(portS);
const want = fs.readFileSync(wantFile, 'utf8');
const fail = (m) => { console.error(`abuse: FAIL: ${m}`); process.exit(1); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

// One greedy completion on a fresh connection; resolves {ms, status, body}.
function post(body, auth = key) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const data = JSON.stringify(body);
    const req = http.request({ host, port, method: 'POST', path: '/v1/completions', agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data),
                 authorization: `Bearer ${auth}` } }, (res) => {
      let s = '';
      res.on('data', (c) => { s += c; });
      res.on('end', () => resolve({ ms: performance.now() - t0, status: res.statusCode, body: s }));
    });
    req.setTimeout(60000, () => req.destroy(new Error('no answer in 60 s')));
    req.on('error', reject);
    req.end(data);
  });
}

async function good(label) {
  const r = await post({ prompt: 'Once upon a time', max_tokens: 60, temperature: 0 });
  if (r.status !== 200) fail(`${label}: status ${r.status}: ${r.body}`);
  const text = JSON.parse(r.body).choices[0].text;
  if (text !== want) fail(`${label}: text differs: ${JSON.stringify(text)}`);
  return r.ms;
}

// Opens n sockets that connect and then do `then(sock)`; resolves once all are up.
function openMany(n, then) {
  const socks = [];
  return new Promise((resolve, reject) => {
    let up = 0;
    for (let i = 0; i < n; i++) {
      const s = net.connect({ host, port });
      s.on('error', () => {});
      s.on('connect', () => { then(s); if (++up === n) resolve(socks); });
      s.setTimeout(30000, () => reject(new Error(`connection ${i} not up in 30 s`)));
      socks.push(s);
    }
  });
}

// Headers declaring 100 MB, then (pump) the bytes as fast as the socket
// takes them. The server must refuse without reading them all. With pump
// off the client waits for the answer, which must be 413; with pump on, the
// server's close may reach the client as a reset that discards the 413 it
// had already sent (TCP drops unread data on a RST), so a close before all
// 100 MB went out is what counts there.
function hugeBody(pump) {
  return new Promise((resolve) => {
    const total = 100 * 1024 * 1024, chunk = Buffer.alloc(1 << 20, 97);
    let sent = 0, reply = '';
    const s = net.connect({ host, port }, () => {
      s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
              `Content-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`);
      const more = () => { while (sent < total && s.writable) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', more); } };
      if (pump) more();
    });
    s.on('data', (d) => { reply += d; });
    s.on('error', () => {});
    s.on('close', () => resolve({ status: reply.slice(9, 12), sent }));
    setTimeout(() => s.destroy(), 30000);
  });
}

const base = [];
for (let i = 0; i < 5; i++) base.push(await good(`normal ${i}`));
const normal = median(base);
console.log(`normal latency: median ${normal.toFixed(0)} ms of ${base.map((x) => x.toFixed(0)).join(', ')}`);

const huge = hugeBody(true);
const idle = await openMany(1000, () => {});
const slow = await openMany(500, (s) => s.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n'));
const drip = setInterval(() => { for (const s of slow) if (s.writable) s.write('X'); }, 1000);
await sleep(1500);
console.log('holding 1000 idle and 500 slow connections, a 100 MB body in flight');

const under = [];
for (let i = 0; i < 3; i++) under.push(await good(`under abuse ${i}`));
const worst = Math.max(...under);
console.log(`under abuse: ${under.map((x) => x.toFixed(0)).join(', ')} ms (bound ${(normal + 2000).toFixed(0)} ms)`);
if (worst > normal + 2000) fail(`a good request took ${worst.toFixed(0)} ms under abuse, normal ${normal.toFixed(0)} ms`);

const h = await huge;
console.log(`100 MB body, sent flat out: ${h.status ? `answered ${h.status}` : 'reset'} after ` +
            `${(h.sent / 1048576).toFixed(0)} MiB written`);
if (h.status && h.status !== '413') fail(`the 100 MB body got ${h.status}, not 413`);
if (h.sent >= 100 * 1024 * 1024) fail('the server took all 100 MB of an over-limit body');
const declared = await hugeBody(false);
console.log(`100 MB body declared, client waiting: answered ${declared.status}`);
if (declared.status !== '413') fail(`the declared 100 MB body got "${declared.status}", not 413`);
const early = idle.filter((s) => s.destroyed).length;
if (early) fail(`${early} idle connections were closed before --http-timeout`);
// --http-timeout: the silent ones are closed; the slow ones still send, so stay
await sleep((Number(timeoutS) + 2) * 1000);
const closed = idle.filter((s) => s.destroyed).length;
console.log(`after --http-timeout ${timeoutS} s: ${closed} of 1000 idle connections closed by the server, ` +
            `${slow.filter((s) => s.destroyed).length} of 500 slow ones`);
if (closed !== 1000) fail(`only ${closed} of 1000 idle connections were closed after --http-timeout`);

clearInterval(drip);
for (const s of idle.concat(slow)) s.destroy();
await sleep(1000);
const after = [];
for (let i = 0; i < 3; i++) after.push(await good(`after ${i}`));
console.log(`after: ${after.map((x) => x.toFixed(0)).join(', ')} ms`);
if (Math.max(...after) > normal + 2000) fail('a good request after the abuse was more than 2 s slower');

const long = await post({ prompt: 'Once upon a time '.repeat(40), max_tokens: 4 });
if (long.status !== 400 || JSON.parse(long.body).error.code !== 'prompt_too_long')
  fail(`a prompt over --max-prompt-tokens got ${long.status}: ${long.body}`);
console.log(`over --max-prompt-tokens: 400 ${JSON.parse(long.body).error.message}`);
const bad = await post({ prompt: 'x', max_tokens: 1 }, 'wrong-key');
if (bad.status !== 401) fail(`a wrong key got ${bad.status}`);
console.log('wrong key: 401');
