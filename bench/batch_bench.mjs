#!/usr/bin/env node
// batch_bench.mjs: `moe batch` against `moe serve` on the same requests: N completions of P-token
// prompts generating exactly G tokens each (token-id prompts, each starting with its own number so no
// two share a KV block; greedy; ignore_eos), answered (a) by `moe batch` from a JSONL file and (b) by
// `moe serve` to C concurrent clients (the official `openai` client, non-streamed requests). Runs
// alternate a, b, a, b, ... so that a machine shared with other work slows both alike; the report gives
// the median of each and their ratio.
//
//   node bench/batch_bench.mjs MODEL [--requests 256] [--prompt-tokens 128] [--max-tokens 64]
//        [--clients 16] [--rounds 3] [-t N] [--max-num-seqs 16] [--vocab 32000] [--bin build/moe] [--json]
//
// Times: `moe batch` reports its own answering time (model load excluded: from the first request
// submitted to the last answer in the journal); for the server, the first request sent to the last
// answer received, after a warm-up request (the server is started once per round, load excluded too).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  const o = { model: null, requests: 256, promptTokens: 128, maxTokens: 64, clients: 16, rounds: 3, threads: null,
              maxNumSeqs: 16, vocab: 32000, bin: process.env.MOE_BIN || path.join(ROOT, 'build/moe'), json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === '--requests') o.requests = Number(next());
    else if (a === '--prompt-tokens') o.promptTokens = Number(next());
    else if (a === '--max-tokens') o.maxTokens = Number(next());
    else if (a === '--clients') o.clients = Number(next());
    else if (a === '--rounds') o.rounds = Number(next());
    else if (a === '-t') o.threads = next();
    else if (a === '--max-num-seqs') o.maxNumSeqs = Number(next());
    else if (a === '--bin') o.bin = next();
    else if (a === '--vocab') o.vocab = Number(next());
    else if (a === '--json') o.json = true;
    else if (!a.startsWith('-') && !o.model) o.model = a;
    else throw new Error(`batch_bench: unknown argument ${a}`);
  }
  if (!o.model) throw new Error('batch_bench: give the MODEL');
  return o;
}

async function loadOpenAI() {
  const require = createRequire(path.join(ROOT, 'tests/server/package.json'));
  const mod = await import(pathToFileURL(require.resolve('openai')).href);
  return mod.OpenAI ?? mod.default?.OpenAI ?? mod.default;
}

function bodies(o) {
  const out = [];
  for (let i = 0; i < o.requests; i++) {
    // Token ids below --vocab: the request number first (no two prompts share a block), then filler.
    const prompt = [1, 3 + (i % (o.vocab - 3))];
    for (let k = 2; k < o.promptTokens; k++) prompt.push(3 + ((i * 7919 + k * 104729) % (o.vocab - 3)));
    out.push({ prompt, max_tokens: o.maxTokens, temperature: 0, ignore_eos: true });
  }
  return out;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function common(o) {
  const a = ['--max-num-seqs', String(o.maxNumSeqs)];
  if (o.threads) a.push('-t', o.threads);
  return a;
}

function runBatch(o, dir, input, round) {
  const out = path.join(dir, `out${round}.jsonl`);
  const r = spawnSync(o.bin, ['batch', o.model, input, out, '--progress', 'none', ...common(o)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`moe batch failed:\n${r.stderr}`);
  const m = r.stderr.match(/answered (\d+) requests in ([\d.]+) s: [\d.]+ requests\/s, (\d+) generated tokens/);
  if (!m) throw new Error(`no summary from moe batch:\n${r.stderr}`);
  return { seconds: Number(m[2]), requests: Number(m[1]), tokens: Number(m[3]) };
}

async function runServe(o, OpenAI, reqs) {
  const proc = spawn(o.bin, ['serve', o.model, '--port', '0', ...common(o)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const port = await new Promise((resolve, reject) => {
    proc.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', () => reject(new Error(`moe serve exited:\n${err}`)));
  });
  try {
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'x', maxRetries: 0, timeout: 600000 });
    await client.completions.create({ ...reqs[0], max_tokens: 8 });  // warm-up: pages in the weights
    let next = 0;
    let tokens = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: o.clients }, async () => {
      while (next < reqs.length) {
        const r = await client.completions.create(reqs[next++]);
        tokens += r.usage.completion_tokens;
      }
    }));
    return { seconds: (performance.now() - t0) / 1000, requests: reqs.length, tokens };
  } finally {
    proc.kill('SIGKILL');
  }
}

const o = parseArgs(process.argv.slice(2));
const OpenAI = await loadOpenAI();
const dir = mkdtempSync(path.join(os.tmpdir(), 'moe-batch-bench-'));
const reqs = bodies(o);
const input = path.join(dir, 'input.jsonl');
writeFileSync(input, reqs.map((body, i) => JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/completions', body })).join('\n') + '\n');
// Warm the page cache with the model once so the first measured run is not a cold read.
spawnSync(o.bin, ['info', o.model], { stdio: 'ignore' });
const batch = [];
const serve = [];
try {
  for (let r = 0; r < o.rounds; r++) {
    batch.push(runBatch(o, dir, input, r));
    serve.push(await runServe(o, OpenAI, reqs));
    if (!o.json) console.error(`round ${r + 1}: batch ${batch.at(-1).seconds.toFixed(2)} s, serve ${serve.at(-1).seconds.toFixed(2)} s`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const summary = (runs) => ({
  seconds: median(runs.map((x) => x.seconds)),
  requests_per_s: median(runs.map((x) => x.requests / x.seconds)),
  generated_tokens_per_s: median(runs.map((x) => x.tokens / x.seconds)),
  runs,
});
const report = { options: o, batch: summary(batch), serve: summary(serve) };
report.ratio = report.batch.generated_tokens_per_s / report.serve.generated_tokens_per_s;
if (o.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const row = (name, s) =>
    `| ${name} | ${s.seconds.toFixed(2)} | ${s.requests_per_s.toFixed(2)} | ${s.generated_tokens_per_s.toFixed(1)} |`;
  console.log('| path | wall s (median) | requests/s | generated tokens/s |');
  console.log('|---|---|---|---|');
  console.log(row('moe batch', report.batch));
  console.log(row(`moe serve, ${o.clients} clients`, report.serve));
  console.log(`\nbatch / serve: ${report.ratio.toFixed(2)}x (generated tokens/s, medians of ${o.rounds} interleaved rounds)`);
}
