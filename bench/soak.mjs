#!/usr/bin/env node
// soak.mjs: minutes of mixed valid, hostile and slow clients against `moe serve`, checking what issue 12
// asks of the HTTP layer under that load: every valid request answered correctly (greedy answers equal
// the ones the server gave alone, at the start), /health answering within 100 ms throughout, resident
// memory at the end within 10 % of what it was after the first minute, and exit 0 on SIGTERM within
// the drain deadline. Prints a summary; exits 1 when a check fails.
//
// Usage (raw sockets and fetch only; no npm packages needed):
//   node bench/soak.mjs [MODEL] [--minutes 5] [--seconds S] [--bin build/moe] [-t 1] [--shutdown-timeout 10]
//
// Clients, all at once for the whole run:
//   valid:   4 loops of greedy completions and chats (non-streamed, and SSE streams read to the end),
//            each compared with its reference text; one loop of pipelined and half-closed requests
//   hostile: 2 loops of smuggling attempts (CL+TE, a GET whose body is a request), bad Content-Length,
//            unknown codings, over-limit bodies, bodies nested 500,000 deep, random bytes, bodies cut off
//            mid-way, streams aborted mid-way
//   slow:    50 slowloris connections (a header byte per second, reopened when the deadline closes
//            them), 5 slow bodies (a byte per second), 2 slow readers (a stream read with 3 s pauses)
// /health is probed every 250 ms on a fresh connection (from a worker thread); RSS is read from /proc
// every second.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { exchange, parseResponses, post, req } from '../tests/server/raw.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
function opt(name, def) {
  const i = args.indexOf(name);
  if (i < 0) return def;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
}
const minutes = Number(opt('--minutes', '5'));
const seconds = Number(opt('--seconds', String(minutes * 60)));
const bin = opt('--bin', process.env.MOE_BIN || path.join(ROOT, 'build/moe'));
const threads = opt('-t', '1');
const shutdownTimeout = Number(opt('--shutdown-timeout', '10'));
const model = args.find((a) => !a.startsWith('-'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const stats = {
  valid: { ok: 0, wrong: [], byKind: {} },
  hostile: { done: 0, unexpected: [] },
  slow: { slowloris_opened: 0, slowloris_closed_by_server: 0, slow_bodies: 0, slow_reads_ok: 0, slow_reads_bad: 0 },
  health: { n: 0, failed: 0, over100: 0, max: 0, times: [] },
  rss: [],
};

// ---- the server --------------------------------------------------------------------------------
const serverArgs = ['serve', ...(model ? [model] : []), '--host', '127.0.0.1', '--port', '0', '-t', threads, '-np', '8',
  '--request-timeout', '10', '--shutdown-timeout', String(shutdownTimeout), '--max-connections-per-ip', '512'];
const proc = spawn(bin, serverArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
let stderr = '';
const exited = new Promise((r) => proc.on('exit', (code, sig) => r(code ?? sig)));
const port = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`moe serve did not start:\n${stderr}`)), 60000);
  proc.stderr.on('data', (d) => {
    stderr += d;
    const m = stderr.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
    if (m) {
      clearTimeout(timer);
      resolve(Number(m[1]));
    }
  });
  exited.then((c) => reject(new Error(`moe serve exited (${c}):\n${stderr}`)));
});
process.on('exit', () => proc.kill('SIGKILL'));
const base = `http://127.0.0.1:${port}`;
const rssMiB = () => Number(readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;

async function api(route, body, signal) {
  const r = await fetch(base + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
  return { status: r.status, text: await r.text() };
}

// ---- references: each valid request alone, before the load -------------------------------------
const PROMPTS = ['Once upon a time', 'The little dog', 'Lily went to the park', 'One day, a bird', 'Tom had a red ball'];
const completionBody = (p, n) => ({ prompt: p, max_tokens: n, temperature: 0 });
const chatBody = (p, n) => ({ messages: [{ role: 'user', content: p }], max_tokens: n, temperature: 0 });
const reference = { completion: {}, chat: {} };
for (const p of PROMPTS) {
  reference.completion[p] = JSON.parse((await api('/v1/completions', completionBody(p, 24))).text).choices[0].text;
  reference.chat[p] = JSON.parse((await api('/v1/chat/completions', chatBody(p, 24))).text).choices[0].message.content;
}

let running = true;
const deadline = performance.now() + seconds * 1000;
const t0 = performance.now();

function wrong(kind, what) {
  if (stats.valid.wrong.length < 20) stats.valid.wrong.push(`${kind}: ${what}`);
}
function counted(kind) {
  stats.valid.ok++;
  stats.valid.byKind[kind] = (stats.valid.byKind[kind] ?? 0) + 1;
}

async function sseText(route, body) {
  const r = await fetch(base + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
  const text = await r.text();
  let out = '';
  let done = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: ')) continue;
    if (line === 'data: [DONE]') {
      done = true;
      continue;
    }
    const c = JSON.parse(line.slice(6)).choices?.[0];
    out += c?.delta?.content ?? c?.text ?? '';
  }
  return { status: r.status, out, done };
}

// ---- valid clients ----------------------------------------------------------------------------
async function validLoop(id) {
  let i = id;
  while (running) {
    const p = PROMPTS[i % PROMPTS.length];
    try {
      switch (i % 4) {
        case 0: {
          const r = await api('/v1/completions', completionBody(p, 24));
          const got = r.status === 200 ? JSON.parse(r.text).choices[0].text : `status ${r.status}`;
          got === reference.completion[p] ? counted('completion') : wrong('completion', `${p}: ${got}`);
          break;
        }
        case 1: {
          const r = await api('/v1/chat/completions', chatBody(p, 24));
          const got = r.status === 200 ? JSON.parse(r.text).choices[0].message.content : `status ${r.status}`;
          got === reference.chat[p] ? counted('chat') : wrong('chat', `${p}: ${got}`);
          break;
        }
        case 2: {
          const r = await sseText('/v1/completions', completionBody(p, 24));
          r.status === 200 && r.done && r.out === reference.completion[p] ? counted('completion stream') : wrong('completion stream', `${p}: ${r.status} ${r.out}`);
          break;
        }
        case 3: {
          const r = await sseText('/v1/chat/completions', chatBody(p, 24));
          r.status === 200 && r.done && r.out === reference.chat[p] ? counted('chat stream') : wrong('chat stream', `${p}: ${r.status} ${r.out}`);
          break;
        }
      }
    } catch (e) {
      wrong('valid', String(e));
    }
    i += 4;
  }
}

async function rawValidLoop() {
  let i = 0;
  while (running) {
    const p = PROMPTS[i++ % PROMPTS.length];
    try {
      // Three pipelined requests in one write, the last closing the connection.
      const r = await exchange(port, [
        req(['GET /health HTTP/1.1', 'Host: x']) + post('/v1/completions', completionBody(p, 24)) + post('/tokenize', { prompt: p }, ['Connection: close']),
      ], { timeoutMs: 20000 });
      const res = parseResponses(r.data);
      const ok = res.length === 3 && res.every((x) => x.status === 200) && JSON.parse(res[1].body).choices[0].text === reference.completion[p];
      ok ? counted('pipelined') : wrong('pipelined', `${res.map((x) => x.status)}`);
      // A request then a half-close.
      const h = await exchange(port, post('/v1/completions', completionBody(p, 24)), { halfClose: true, timeoutMs: 20000 });
      const hr = parseResponses(h.data);
      hr[0]?.status === 200 && JSON.parse(hr[0].body).choices[0].text === reference.completion[p] ? counted('half-close') : wrong('half-close', h.data.toString().slice(0, 200));
    } catch (e) {
      wrong('raw', String(e));
    }
  }
}

// ---- hostile clients --------------------------------------------------------------------------
const deepBody = `{"prompt":"Hi","x":${'['.repeat(500000)}${']'.repeat(500000)}}`;
const HOSTILE = [
  [req(['POST /v1/completions HTTP/1.1', 'Host: x', 'Content-Length: 5', 'Transfer-Encoding: chunked'], '0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n'), [400]],
  [req(['GET /health HTTP/1.1', 'Host: x', 'Content-Length: 35'], 'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n'), [400]],
  [req(['POST /v1/completions HTTP/1.1', 'Host: x', 'Content-Length: -1']), [400]],
  [req(['POST /v1/completions HTTP/1.1', 'Host: x', 'Content-Length: 3', 'Content-Length: 4'], '{}{}'), [400]],
  [req(['POST /v1/completions HTTP/1.1', 'Host: x', 'Transfer-Encoding: gzip'], 'x'), [501]],
  [req(['POST /v1/completions HTTP/1.1', 'Host: x', 'Content-Encoding: br', 'Content-Length: 2'], '{}'), [415]],
  [req(['POST /v1/completions HTTP/1.1', 'Host: x', `Content-Length: ${1 << 30}`]), [413]],
  [post('/v1/completions', deepBody, ['Connection: close']), [400]],
  [post('/v1/completions', { prompt: 'Hi', max_tokens: 4, temperature: 0 }, ['Range: bytes=0-3', 'Connection: close']), [200]],
];
async function hostileLoop(id) {
  let i = id;
  while (running) {
    try {
      const k = i % (HOSTILE.length + 3);
      if (k < HOSTILE.length) {
        const [bytes, want] = HOSTILE[k];
        const r = await exchange(port, bytes, { timeoutMs: 15000 });
        const res = parseResponses(r.data);
        if (res.length !== 1 || !want.includes(res[0].status)) stats.hostile.unexpected.push(`#${k}: ${res.map((x) => x.status)}`);
      } else if (k === HOSTILE.length) {
        // Random bytes: any 4xx answer or a close, never a 2xx or a hang.
        const junk = Buffer.from(Array.from({ length: 200 + (i % 800) }, () => Math.floor(Math.random() * 256)));
        const r = await exchange(port, junk, { timeoutMs: 15000 });
        const res = (() => { try { return parseResponses(r.data); } catch { return [{ status: 0 }]; } })();
        if (!r.closed || res.some((x) => x.status < 400)) stats.hostile.unexpected.push(`junk: ${res.map((x) => x.status)} closed=${r.closed}`);
      } else if (k === HOSTILE.length + 1) {
        // A body cut off half-way.
        await new Promise((resolve) => {
          const s = net.connect({ port, host: '127.0.0.1' }, () => {
            s.write(req(['POST /v1/completions HTTP/1.1', 'Host: x', 'Content-Length: 1000'], '{"prompt":'));
            setTimeout(() => { s.destroy(); resolve(); }, 50);
          });
          s.on('error', resolve);
        });
      } else {
        // A stream aborted after its first bytes.
        const ac = new AbortController();
        const r = await fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: 'Once', max_tokens: 400, stream: true }), signal: ac.signal });
        const reader = r.body.getReader();
        await reader.read();
        ac.abort();
        await reader.read().catch(() => {});
      }
      stats.hostile.done++;
    } catch (e) {
      if (e.name !== 'AbortError') stats.hostile.unexpected.push(String(e));
    }
    i += 2;
    await sleep(20);
  }
}

// ---- slow clients -----------------------------------------------------------------------------
function slowloris() {
  if (!running) return;
  stats.slow.slowloris_opened++;
  const s = net.connect({ port, host: '127.0.0.1' });
  const text = 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(1000);
  let pos = 0;
  const timer = setInterval(() => { if (!s.destroyed) s.write(text[pos++ % text.length]); }, 1000);
  s.on('error', () => {});
  s.on('close', () => {
    clearInterval(timer);
    if (running) {
      stats.slow.slowloris_closed_by_server++;
      setTimeout(slowloris, 100);
    }
  });
  slowSockets.add(s);
}
function slowBody() {
  if (!running) return;
  const s = net.connect({ port, host: '127.0.0.1' });
  const body = JSON.stringify({ prompt: 'Hi', max_tokens: 1 });
  s.write(req(['POST /v1/completions HTTP/1.1', 'Host: x', `Content-Length: ${body.length}`]));
  let pos = 0;
  const timer = setInterval(() => { if (!s.destroyed && pos < body.length) s.write(body[pos++]); }, 1000);
  s.on('error', () => {});
  s.on('close', () => {
    clearInterval(timer);
    stats.slow.slow_bodies++;
    if (running) setTimeout(slowBody, 100);
  });
  slowSockets.add(s);
}
async function slowReader() {
  while (running) {
    try {
      const r = await fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...completionBody('Once upon a time', 24), stream: true }) });
      const reader = r.body.getReader();
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
        await sleep(3000);
      }
      text.includes('data: [DONE]') ? stats.slow.slow_reads_ok++ : stats.slow.slow_reads_bad++;
    } catch {
      stats.slow.slow_reads_bad++;
    }
  }
}
const slowSockets = new Set();

// ---- probes -------------------------------------------------------------------------------------
// In a worker thread with its own event loop, so the probe's time is the server's, not this
// process's (which is busy parsing thousands of answers).
const healthWorker = new Worker(`
  const { parentPort, workerData } = require('node:worker_threads');
  const net = require('node:net');
  let running = true;
  parentPort.on('message', () => { running = false; });
  function probe() {
    return new Promise((resolve) => {
      const t = performance.now();
      const s = net.connect({ port: workerData.port, host: '127.0.0.1' });
      let data = '';
      const timer = setTimeout(() => { s.destroy(); resolve({ ok: false, ms: performance.now() - t }); }, 5000);
      s.on('connect', () => s.write('GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'));
      s.on('data', (d) => { data += d; });
      s.on('error', () => {});
      s.on('close', () => { clearTimeout(timer); resolve({ ok: data.startsWith('HTTP/1.1 200'), ms: performance.now() - t }); });
    });
  }
  (async () => {
    while (running) {
      parentPort.postMessage(await probe());
      await new Promise((r) => setTimeout(r, 250));
    }
    parentPort.postMessage('done');
  })();
`, { eval: true, workerData: { port } });
const healthDone = new Promise((resolve) => {
  healthWorker.on('message', (m) => {
    if (m === 'done') return resolve();
    stats.health.n++;
    if (!m.ok) stats.health.failed++;
    if (m.ms > 100) stats.health.over100++;
    stats.health.max = Math.max(stats.health.max, m.ms);
    stats.health.times.push(m.ms);
  });
});
async function healthLoop() {
  while (running) await sleep(200);
  healthWorker.postMessage('stop');
  await healthDone;
  await healthWorker.terminate();
}
const rssTimer = setInterval(() => stats.rss.push({ s: (performance.now() - t0) / 1000, mib: rssMiB() }), 1000);

// ---- run ----------------------------------------------------------------------------------------
for (let i = 0; i < 50; i++) slowloris();
for (let i = 0; i < 5; i++) slowBody();
const loops = [validLoop(0), validLoop(1), validLoop(2), validLoop(3), rawValidLoop(), hostileLoop(0), hostileLoop(1),
  slowReader(), slowReader(), healthLoop()];
const progress = setInterval(() => {
  const rss = stats.rss.at(-1)?.mib ?? 0;
  process.stderr.write(`soak: ${((performance.now() - t0) / 1000).toFixed(0)} s: ${stats.valid.ok} valid ok, ${stats.valid.wrong.length} wrong, ` +
    `${stats.hostile.done} hostile, health max ${stats.health.max.toFixed(1)} ms, RSS ${rss.toFixed(0)} MiB\n`);
}, 30000);
while (performance.now() < deadline) await sleep(200);
running = false;
clearInterval(progress);
for (const s of slowSockets) s.destroy();
await Promise.race([Promise.all(loops), sleep(30000)]);
clearInterval(rssTimer);

// ---- shutdown -----------------------------------------------------------------------------------
// SIGTERM with requests in flight: exit 0 within the drain deadline (plus a second for the exit).
const inflight = [api('/v1/completions', { prompt: 'Once', max_tokens: 400, n: 4 }).catch(() => null),
  sseText('/v1/completions', { prompt: 'Once', max_tokens: 400 }).catch(() => null)];
await sleep(200);
const tStop = performance.now();
proc.kill('SIGTERM');
const code = await exited;
const stopMs = performance.now() - tStop;
await Promise.all(inflight);

// ---- summary ------------------------------------------------------------------------------------
const at = (sec) => stats.rss.find((x) => x.s >= sec) ?? stats.rss.at(-1);
const rssRef = at(Math.min(60, seconds / 2));
const rssEnd = stats.rss.at(-1);
const times = stats.health.times.sort((a, b) => a - b);
const pct = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? NaN;
const checks = {
  'every valid request answered correctly': stats.valid.wrong.length === 0 && stats.valid.ok > 0,
  'hostile requests got the expected refusals': stats.hostile.unexpected.length === 0,
  '/health within 100 ms throughout': stats.health.failed === 0 && stats.health.over100 === 0,
  'RSS at the end within 10 % of RSS after the first minute': Math.abs(rssEnd.mib - rssRef.mib) <= 0.1 * rssRef.mib,
  'exit 0 on SIGTERM within the drain deadline': code === 0 && stopMs <= shutdownTimeout * 1000 + 1000,
};
const summary = {
  seconds,
  server: serverArgs.join(' '),
  valid: { ok: stats.valid.ok, by_kind: stats.valid.byKind, wrong: stats.valid.wrong },
  hostile: { done: stats.hostile.done, unexpected: stats.hostile.unexpected.slice(0, 20) },
  slow: stats.slow,
  health: { probes: stats.health.n, failed: stats.health.failed, over_100ms: stats.health.over100,
    p50_ms: +pct(0.5).toFixed(1), p99_ms: +pct(0.99).toFixed(1), max_ms: +stats.health.max.toFixed(1) },
  rss_mib: { after_first_minute: +rssRef.mib.toFixed(1), end: +rssEnd.mib.toFixed(1), max: +Math.max(...stats.rss.map((x) => x.mib)).toFixed(1) },
  shutdown: { exit_code: code, ms: Math.round(stopMs) },
  checks,
};
console.log(JSON.stringify(summary, null, 2));
const failed = Object.entries(checks).filter(([, ok]) => !ok).map(([k]) => k);
console.log(failed.length ? `soak: FAILED: ${failed.join('; ')}` : 'soak: all checks passed');
process.exit(failed.length ? 1 : 0);
