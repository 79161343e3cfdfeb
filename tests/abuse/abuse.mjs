// abuse.mjs - the abuse half of tests/abuse/run.sh: a 100 MB body, 500 slow
// clients and 1000 idle connections held open against `shardlm serve`
// while good requests must still get the golden text within 2 s of their
// normal time; the slow and idle ones must then be closed by the server at
// --http-header-timeout (between T and T + 5 s), however the slow ones
// trickle; a stream that outlives the deadline (a worker held by SIGSTOP
// delays its tokens) must finish with the golden text; connections from one
// address past --max-connections-per-ip are closed at once while the others
// stay. Node's own net/http only (no packages), one event loop.
//   node abuse.mjs HOST PORT KEY WANT_TEXT_FILE HEADER_TIMEOUT_S PER_IP_LIMIT WORKER_PID
import net from 'node:net';
import http from 'node:http';
import fs from 'node:fs';

const [host, portS, key, wantFile, headerS_, perIpS, workerS] = process.argv.slice(2);
const port = Number(portS), headerS = Number(headerS_), perIp = Number(perIpS), worker = Number(workerS);
const want = fs.readFileSync(wantFile, 'utf8');
const fail = (m) => { console.error(`abuse: FAIL: ${m}`); process.exit(1); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

// One greedy completion on a fresh connection; resolves {ms, status, body}.
function post(body, auth = key, localAddress = undefined) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const data = JSON.stringify(body);
    const req = http.request({ host, port, method: 'POST', path: '/v1/completions', agent: false, localAddress,
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

// A streamed completion: resolves {status, text (the choices' text joined), events, done, raw}.
function streamText(body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ host, port, method: 'POST', path: '/v1/completions', agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data),
                 authorization: `Bearer ${key}` } }, (res) => {
      let raw = '';
      res.on('data', (c) => { raw += c; });
      res.on('error', () => {});
      res.on('close', () => { if (!res.complete) reject(new Error(`cut after ${raw.length} bytes: ${raw.slice(0, 200)}`)); });
      res.on('end', () => {
        let text = '', events = 0, done = false;
        for (const line of raw.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          if (line === 'data: [DONE]') { done = true; continue; }
          const ev = JSON.parse(line.slice(6));
          events++;
          if (ev.choices && ev.choices[0]) text += ev.choices[0].text;
        }
        resolve({ status: res.statusCode, text, events, done, raw });
      });
    });
    req.setTimeout(60000, () => req.destroy(new Error('no stream end in 60 s')));
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

// An attacker's connections come from many loopback addresses, fewer than
// --max-connections-per-ip from each, so that limit does not refuse them.
const attackerAddr = (k) => `127.0.${1 + Math.floor(k / (perIp / 2))}.1`;

// Opens n sockets (the k-th from addr(k)) that connect and then do
// `then(sock)`; resolves once all are up. Each records when it was made
// (before the server can have accepted it) and when the server closed it.
function openMany(n, addr, then) {
  const socks = [];
  return new Promise((resolve, reject) => {
    let up = 0;
    for (let i = 0; i < n; i++) {
      const s = net.connect({ host, port, localAddress: addr(i) });
      s.made = performance.now();
      s.on('error', () => {});
      s.on('close', () => { s.closedAt = performance.now(); });
      s.on('connect', () => { s.setTimeout(0); then(s); if (++up === n) resolve(socks); });
      s.setTimeout(30000, () => reject(new Error(`connection ${i} not up in 30 s`)));
      socks.push(s);
    }
  });
}

// Each socket of socks was closed by the server between T and T + 5 s
// after it was made (a few slow or idle clients never get longer).
function closedAtDeadline(label, socks) {
  const life = socks.map((s) => (s.closedAt ?? Infinity) - s.made);
  const open = life.filter((x) => x === Infinity).length;
  if (open) fail(`${label}: ${open} of ${socks.length} still open ${headerS + 5} s after they connected`);
  const lo = Math.min(...life), hi = Math.max(...life);
  console.log(`${label}: all ${socks.length} closed by the server ${(lo / 1000).toFixed(2)}-${(hi / 1000).toFixed(2)} s ` +
              `after they connected (--http-header-timeout ${headerS})`);
  if (lo < headerS * 1000) fail(`${label}: one was closed after ${lo.toFixed(0)} ms, before the deadline`);
  if (hi > (headerS + 5) * 1000) fail(`${label}: one was closed only after ${hi.toFixed(0)} ms`);
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
const idle = await openMany(1000, attackerAddr, () => {});
const slow = await openMany(500, (i) => attackerAddr(1000 + i),
                            (s) => s.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n'));
const drip = setInterval(() => { for (const s of slow) if (s.writable) s.write('X'); }, 1000);
await sleep(300);
console.log('holding 1000 idle and 500 slow connections, a 100 MB body in flight');

const under = [];
for (let i = 0; i < 3; i++) under.push(await good(`under abuse ${i}`));
const worst = Math.max(...under);
const held = idle.concat(slow).filter((s) => s.closedAt === undefined).length;
console.log(`under abuse: ${under.map((x) => x.toFixed(0)).join(', ')} ms (bound ${(normal + 2000).toFixed(0)} ms), ` +
            `${held} of 1500 abusive connections still held at the end`);
if (worst > normal + 2000) fail(`a good request took ${worst.toFixed(0)} ms under abuse, normal ${normal.toFixed(0)} ms`);
if (held !== 1500) fail(`only ${held} of 1500 abusive connections were still held while good requests were measured`);

const h = await huge;
console.log(`100 MB body, sent flat out: ${h.status ? `answered ${h.status}` : 'reset'} after ` +
            `${(h.sent / 1048576).toFixed(0)} MiB written`);
if (h.status && h.status !== '413') fail(`the 100 MB body got ${h.status}, not 413`);
if (h.sent >= 100 * 1024 * 1024) fail('the server took all 100 MB of an over-limit body');
const declared = await hugeBody(false);
console.log(`100 MB body declared, client waiting: answered ${declared.status}`);
if (declared.status !== '413') fail(`the declared 100 MB body got "${declared.status}", not 413`);

// --http-header-timeout: idle and slow alike (a byte a second does not help)
const lastMade = Math.max(...idle.concat(slow).map((s) => s.made));
await sleep(Math.max(0, lastMade + (headerS + 5) * 1000 - performance.now()) + 200);
clearInterval(drip);
closedAtDeadline('idle connections', idle);
closedAtDeadline('slow clients (a header byte a second)', slow);

const after = [];
for (let i = 0; i < 3; i++) after.push(await good(`after ${i}`));
console.log(`after: ${after.map((x) => x.toFixed(0)).join(', ')} ms`);
if (Math.max(...after) > normal + 2000) fail('a good request after the abuse was more than 2 s slower');

// A stream whose tokens come after the deadline: a worker stopped until
// then holds the engine's step. Its request was in, so it is never cut.
process.kill(worker, 'SIGSTOP');
const t0 = performance.now();
// (its failure is caught at once: it may come while this waits)
const streamed = streamText({ prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stream: true })
  .catch((e) => ({ error: e.message }));
await sleep((headerS + 2) * 1000);
process.kill(worker, 'SIGCONT');
const st = await streamed;
if (st.error) fail(`the delayed stream failed: ${st.error}`);
const lasted = (performance.now() - t0) / 1000;
console.log(`a stream delayed past the deadline: ${st.status}, ${lasted.toFixed(1)} s, ${st.events} events, ` +
            `${st.done ? '[DONE]' : 'no [DONE]'}`);
if (st.status !== 200 || !st.done) fail(`the delayed stream: status ${st.status}, done ${st.done}: ${st.raw.slice(0, 300)}`);
if (st.text !== want) fail(`the delayed stream's text differs: ${JSON.stringify(st.text)}`);
if (lasted < headerS + 1) fail(`the delayed stream took only ${lasted.toFixed(1)} s: it did not outlive the deadline`);

// --max-connections-per-ip: past the limit, MHD closes a new connection at
// once (no response: it never reads it); the first ones stay until the deadline.
const one = '127.0.250.1';
const full = await openMany(perIp + 10, () => one, () => {});
await sleep(1000);
const refused = full.filter((s) => s.closedAt !== undefined);
console.log(`${perIp + 10} connections from ${one}: ${refused.length} closed at once ` +
            `(after ${Math.max(...refused.map((s) => s.closedAt - s.made)).toFixed(0)} ms at most), ` +
            `${full.length - refused.length} held`);
if (refused.length !== 10) fail(`--max-connections-per-ip ${perIp}: ${refused.length} of ${perIp + 10} were closed, not 10`);
const blocked = await post({ prompt: 'x', max_tokens: 1 }, key, one).then((r) => `status ${r.status}`, (e) => e.code || e.message);
console.log(`a request from ${one} at its limit: ${blocked}`);
if (blocked.startsWith('status')) fail(`a request past --max-connections-per-ip was answered (${blocked})`);
await good('from 127.0.0.1 meanwhile');
for (const s of full) s.destroy();
await sleep(1000);
const back = await post({ prompt: 'Once upon a time', max_tokens: 60, temperature: 0 }, key, one);
if (back.status !== 200 || JSON.parse(back.body).choices[0].text !== want)
  fail(`${one} after its connections closed: ${back.status} ${back.body.slice(0, 200)}`);
console.log(`${one} once its connections closed: 200, golden text`);

const long = await post({ prompt: 'Once upon a time '.repeat(40), max_tokens: 4 });
if (long.status !== 400 || JSON.parse(long.body).error.code !== 'prompt_too_long')
  fail(`a prompt over --max-prompt-tokens got ${long.status}: ${long.body}`);
console.log(`over --max-prompt-tokens: 400 ${JSON.parse(long.body).error.message}`);
const bad = await post({ prompt: 'x', max_tokens: 1 }, 'wrong-key');
if (bad.status !== 401) fail(`a wrong key got ${bad.status}`);
console.log('wrong key: 401');
