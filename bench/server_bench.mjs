#!/usr/bin/env node
// server_bench.mjs: throughput and latency of `moe serve` at 1, 4, 8 and 16 concurrent streams, measured
// the way a client sees them, through the official `openai` npm client.
//
// Usage (from anywhere; the `openai` package is the one tests/server installs: run
// `bash scripts/test-server.sh` once, or `npm ci` in tests/server):
//
//   node bench/server_bench.mjs [MODEL] [options]          starts `moe serve [MODEL]` on a free port
//   node bench/server_bench.mjs --url http://HOST:PORT ...  measures a server that is already running
//
//   --bin PATH             moe binary to start (default: $MOE_BIN, else build/moe)
//   -t N                   --threads for the server it starts (default: the server's own default)
//   --max-num-seqs N       for the server it starts (default 16)
//   --serve-arg ARG        one more argument for `moe serve` (repeat for several)
//   --api-key KEY          sent as the bearer key
//   --concurrency LIST     concurrent streams per level (default 1,4,8,16)
//   --rounds N             rounds per level (default 3)
//   --prompt-tokens N      prompt length, chat template included (default 128)
//   --max-tokens N         tokens generated per stream (default 64; ignore_eos, so exactly that many)
//   --endpoint chat|completions   (default chat)
//   --json                 print the results as JSON instead of a markdown table
//   --table FILE           print the markdown table of a report saved with --json, and exit
//
// Every request is a streamed, greedy (temperature 0) request with `ignore_eos`, so each generates
// exactly --max-tokens tokens. Each prompt starts with its own request number, so no two share a KV
// block and prefix caching cannot make later rounds cheaper. One warm-up request (the full prompt, 8
// tokens) reads every weight page before timing. For each level C, each round sends C requests at once
// and waits for all of them; reported per level:
//   - decode tokens/s per stream: (completion tokens - 1) / (time of the last token - time of the first
//     token), the median over all streams of all rounds;
//   - aggregate tokens/s (whole round): all completion tokens of a round / the round's wall time (first
//     request sent to last token received), the median of the rounds (min–max), and its ratio to 1 stream;
//   - aggregate tokens/s (all decoding): tokens received while every stream of the round is between its
//     first and last token, per second of that window (median of the rounds): the batched decode rate
//     without the steps that prefill prompts, which a short generation after a long prompt is mostly;
//   - time to first token: request sent to the first content chunk, median over all streams;
//   - peak RSS: the server's peak resident memory so far (VmHWM, from /metrics), after the level;
//   - server CPU: the server's CPU seconds during the level / wall seconds (200 % = 2 cores busy), and
//     the same for this client (parsing the streams costs CPU that a small machine shares with the server).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function loadOpenAI() {
  const require = createRequire(path.join(ROOT, 'tests/server/package.json'));
  let entry;
  try {
    entry = require.resolve('openai');
  } catch {
    die('the openai package is not installed: run `npm ci` in tests/server (or bash scripts/test-server.sh)');
  }
  const mod = await import(pathToFileURL(entry).href);
  return mod.OpenAI ?? mod.default?.OpenAI ?? mod.default;
}

function die(message) {
  console.error(`server_bench: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    model: null,
    url: null,
    bin: process.env.MOE_BIN || path.join(ROOT, 'build/moe'),
    threads: null,
    maxNumSeqs: 16,
    serveArgs: [],
    apiKey: 'unused',
    concurrency: [1, 4, 8, 16],
    rounds: 3,
    promptTokens: 128,
    maxTokens: 64,
    endpoint: 'chat',
    json: false,
    table: null,
  };
  const positive = (name, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) die(`${name} must be a positive integer, got '${v}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--url': o.url = value().replace(/\/+$/, ''); break;
      case '--bin': o.bin = value(); break;
      case '-t': case '--threads': o.threads = positive(a, value()); break;
      case '--max-num-seqs': o.maxNumSeqs = positive(a, value()); break;
      case '--serve-arg': o.serveArgs.push(value()); break;
      case '--api-key': o.apiKey = value(); break;
      case '--concurrency': o.concurrency = value().split(',').map((c) => positive(a, c)); break;
      case '--rounds': o.rounds = positive(a, value()); break;
      case '--prompt-tokens': o.promptTokens = positive(a, value()); break;
      case '--max-tokens': o.maxTokens = positive(a, value()); break;
      case '--endpoint': {
        o.endpoint = value();
        if (!['chat', 'completions'].includes(o.endpoint)) die(`--endpoint must be chat or completions`);
        break;
      }
      case '--json': o.json = true; break;
      case '--table': o.table = value(); break;
      case '-h': case '--help': {
        const text = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n');
        console.log(text.slice(1, text.findIndex((l) => l.startsWith('import'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
        process.exit(0);
      }
      default:
        if (a.startsWith('-') || o.model) die(`unexpected argument '${a}' (see --help)`);
        o.model = a;
    }
  }
  if (o.url && (o.model || o.threads || o.serveArgs.length)) die('--url measures a running server: MODEL, -t and --serve-arg are for one it starts');
  return o;
}

// Starts `moe serve` on a free loopback port; resolves once it listens.
async function startServer(o) {
  if (!existsSync(o.bin)) die(`${o.bin} does not exist (build moe, or pass --bin / set MOE_BIN)`);
  const args = ['serve', ...(o.model ? [o.model] : []), '--host', '127.0.0.1', '--port', '0', '--max-num-seqs', String(o.maxNumSeqs)];
  if (o.threads) args.push('-t', String(o.threads));
  if (o.apiKey !== 'unused') args.push('--api-key', o.apiKey);
  args.push(...o.serveArgs);
  const proc = spawn(o.bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  process.on('exit', () => proc.kill('SIGKILL'));
  let stderr = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));
  const port = await new Promise((resolve, reject) => {
    proc.stderr.on('data', (d) => {
      stderr += d;
      const m = stderr.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    exited.then((code) => reject(new Error(`moe serve exited (${code}) before listening:\n${stderr}`)));
  });
  return { proc, exited, url: `http://127.0.0.1:${port}`, args, get stderr() { return stderr; } };
}

async function metrics(o) {
  const res = await fetch(`${o.url}/metrics`, { headers: { authorization: `Bearer ${o.apiKey}` } });
  if (!res.ok) return {};
  const out = {};
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

const FILLER =
  'The little fox ran through the green forest and found a river. She looked at the water and saw ' +
  'a fish that was swimming fast. The fox wanted to play with the fish, so she sat on a rock and waited. ' +
  'After a while the sun went down, the sky turned red and the birds sang a song about the long day. ';

// Request numbers are 5 digits wide, so every prompt has the same length in tokens.
let nextRequest = 1;
const requestId = () => String(nextRequest++).padStart(5, '0');

function promptText(id, words) {
  const base = FILLER.repeat(Math.ceil((words + 8) / 40)).split(' ');
  return `Request ${id}. ${base.slice(0, words).join(' ')}`;
}

// The number of filler words that makes a prompt (template included) at most `target` tokens.
async function calibrate(o) {
  const count = async (words) => {
    const text = promptText('00000', words);
    const body = o.endpoint === 'chat' ? { messages: [{ role: 'user', content: text }] } : { prompt: text };
    const res = await fetch(`${o.url}/tokenize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${o.apiKey}` },
      body: JSON.stringify(body),
    });
    if (!res.ok) die(`/tokenize answered ${res.status}: ${await res.text()}`);
    return (await res.json()).count;
  };
  let lo = 0;
  let hi = 8 * o.promptTokens;
  if ((await count(0)) > o.promptTokens) die(`--prompt-tokens ${o.promptTokens} is shorter than the bare template`);
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((await count(mid)) <= o.promptTokens) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// One streamed request; times in ms from performance.now().
async function oneStream(client, o, model, id, words, maxTokens) {
  const text = promptText(id, words);
  const common = { model, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } };
  const sent = performance.now();
  const stream =
    o.endpoint === 'chat'
      ? await client.chat.completions.create({ ...common, messages: [{ role: 'user', content: text }] })
      : await client.completions.create({ ...common, prompt: text });
  let first = null;
  let last = null;
  const times = [];  // arrival of each chunk that carries text (one engine step's token)
  let usage = null;
  for await (const chunk of stream) {
    const now = performance.now();
    for (const c of chunk.choices) {
      const piece = o.endpoint === 'chat' ? c.delta?.content : c.text;
      if (piece) {
        first ??= now;
        last = now;
        times.push(now);
      }
      if (c.finish_reason) last = now;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  if (!usage) throw new Error(`request ${id}: the stream ended without usage`);
  if (first === null) first = last ?? performance.now();
  return { sent, first, last, times, promptTokens: usage.prompt_tokens, tokens: usage.completion_tokens };
}

// Tokens per second while every stream of a round is past its first token and not yet finished: the
// batched decode rate, without the steps spent on prompts. null when that window is too short to time.
function allDecoding(results) {
  const from = Math.max(...results.map((x) => x.first));
  const to = Math.min(...results.map((x) => x.last));
  let tokens = 0;
  for (const x of results) tokens += x.times.filter((t) => t > from && t <= to).length;
  return to > from && tokens >= 2 * results.length ? tokens / ((to - from) / 1000) : null;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function runLevel(client, o, model, words, c) {
  const m0 = await metrics(o);
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  const rounds = [];
  const streams = [];
  for (let r = 0; r < o.rounds; r++) {
    const results = await Promise.all(
      Array.from({ length: c }, () => oneStream(client, o, model, requestId(), words, o.maxTokens)),
    );
    const start = Math.min(...results.map((x) => x.sent));
    const end = Math.max(...results.map((x) => x.last));
    const tokens = results.reduce((s, x) => s + x.tokens, 0);
    rounds.push({ seconds: (end - start) / 1000, tokens, aggregate: tokens / ((end - start) / 1000), decode: allDecoding(results) });
    streams.push(...results);
  }
  const wall = (performance.now() - t0) / 1000;
  const clientCpu = process.cpuUsage(cpu);
  const m1 = await metrics(o);
  const decode = streams.filter((s) => s.tokens > 1 && s.last > s.first).map((s) => (s.tokens - 1) / ((s.last - s.first) / 1000));
  const aggregates = rounds.map((r) => r.aggregate);
  const decodeAll = rounds.map((r) => r.decode).filter((d) => d !== null);
  const cpu0 = m0.process_cpu_seconds_total;
  const cpu1 = m1.process_cpu_seconds_total;
  return {
    concurrency: c,
    rounds: rounds.length,
    prompt_tokens_mean: streams.reduce((s, x) => s + x.promptTokens, 0) / streams.length,
    completion_tokens_per_stream: median(streams.map((s) => s.tokens)),
    decode_tokens_per_s_per_stream: median(decode),
    decode_tokens_per_s_per_stream_min: Math.min(...decode),
    decode_tokens_per_s_per_stream_max: Math.max(...decode),
    aggregate_tokens_per_s: median(aggregates),
    aggregate_tokens_per_s_min: Math.min(...aggregates),
    aggregate_tokens_per_s_max: Math.max(...aggregates),
    decode_aggregate_tokens_per_s: decodeAll.length ? median(decodeAll) : null,
    decode_aggregate_rounds: decodeAll.length,
    ttft_ms_median: median(streams.map((s) => s.first - s.sent)),
    ttft_ms_max: Math.max(...streams.map((s) => s.first - s.sent)),
    peak_rss_bytes: m1.moe_process_peak_resident_memory_bytes ?? null,
    rss_bytes: m1.process_resident_memory_bytes ?? null,
    server_cpu_percent: cpu0 !== undefined && cpu1 !== undefined ? (100 * (cpu1 - cpu0)) / wall : null,
    client_cpu_percent: (clientCpu.user + clientCpu.system) / 1e4 / wall,
    preemptions: (m1.moe_preemptions_total ?? 0) - (m0.moe_preemptions_total ?? 0),
  };
}

function gitCommit() {
  try {
    const head = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no', 'src'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head} (src/ modified)` : head;
  } catch {
    return null;
  }
}

const fmt = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(digits));
const gb = (bytes) => (bytes ? `${(bytes / 1e9).toFixed(3)} GB` : '–');

function markdown(report) {
  const lines = [];
  lines.push(
    `model \`${report.model}\`, ${report.endpoint === 'chat' ? 'chat completions' : 'completions'}, prompt ${fmt(report.prompt_tokens_mean, 0)} tokens, ` +
      `${report.max_tokens} tokens per stream (greedy, ignore_eos), ${report.rounds} rounds per level` +
      (report.commit ? `, commit ${report.commit}` : '') +
      (report.server_args ? `; server: \`moe ${report.server_args.join(' ')}\`` : ''),
  );
  lines.push('');
  lines.push(
    '| streams | decode tokens/s per stream | aggregate tokens/s (whole round) | aggregate tokens/s (all decoding) | ' +
      'time to first token | peak RSS | server CPU | client CPU |',
  );
  lines.push('|---|---|---|---|---|---|---|---|');
  const one = report.levels.find((l) => l.concurrency === 1);
  const times = (v, base) => (v && base ? ` ×${(v / base).toFixed(2)}` : '');
  for (const l of report.levels) {
    lines.push(
      `| ${l.concurrency} | ${fmt(l.decode_tokens_per_s_per_stream)} | ` +
        `${fmt(l.aggregate_tokens_per_s)} (${fmt(l.aggregate_tokens_per_s_min)}–${fmt(l.aggregate_tokens_per_s_max)})${times(l.aggregate_tokens_per_s, one?.aggregate_tokens_per_s)} | ` +
        `${fmt(l.decode_aggregate_tokens_per_s)}${times(l.decode_aggregate_tokens_per_s, one?.decode_aggregate_tokens_per_s)} | ` +
        `${fmt(l.ttft_ms_median, 0)} ms | ${gb(l.peak_rss_bytes)} | ${fmt(l.server_cpu_percent, 0)} % | ${fmt(l.client_cpu_percent, 0)} % |`,
    );
  }
  return lines.join('\n');
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.table) {
    console.log(markdown(JSON.parse(readFileSync(o.table, 'utf8'))));
    return;
  }
  const OpenAI = await loadOpenAI();
  let server = null;
  if (!o.url) {
    server = await startServer(o);
    o.url = server.url;
  }
  try {
    const client = new OpenAI({ baseURL: `${o.url}/v1`, apiKey: o.apiKey, maxRetries: 0, timeout: 3600_000 });
    const model = (await client.models.list()).data[0].id;
    const words = await calibrate(o);
    const load = os.loadavg()[0];
    await oneStream(client, o, model, requestId(), words, 8);
    const levels = [];
    for (const c of o.concurrency) {
      const level = await runLevel(client, o, model, words, c);
      levels.push(level);
      if (!o.json) console.error(`server_bench: ${c} streams: aggregate ${fmt(level.aggregate_tokens_per_s)} tokens/s, TTFT ${fmt(level.ttft_ms_median, 0)} ms`);
    }
    const report = {
      model,
      url: o.url,
      server_args: server ? server.args : null,
      commit: gitCommit(),
      endpoint: o.endpoint,
      prompt_tokens_mean: levels.reduce((s, l) => s + l.prompt_tokens_mean, 0) / levels.length,
      max_tokens: o.maxTokens,
      rounds: o.rounds,
      load_average_before: load,
      cpus: os.cpus().length,
      levels,
    };
    console.log(o.json ? JSON.stringify(report, null, 2) : markdown(report));
  } finally {
    if (server) {
      server.proc.kill('SIGTERM');
      const code = await server.exited;
      if (code !== 0) console.error(`server_bench: moe serve exited with ${code}:\n${server.stderr}`);
    }
  }
}

main().catch((e) => die(e?.stack ?? String(e)));
