// helpers.mjs: starts a real `moe serve` on a free loopback port (--port 0, the port read from its
// "listening on" line) and gives the tests an official `openai` client for it, raw HTTP, /metrics
// parsed into numbers, the process's resident memory, and a way to stop it and see its exit code.
// Every server a test starts is killed when the test process exits, whatever happened.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MOE_BIN = process.env.MOE_BIN || path.join(ROOT, 'build/moe');

const live = new Set();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export async function startServer(args = [], { startTimeoutMs = 60000, port: wantPort = 0 } = {}) {
  const proc = spawn(MOE_BIN, ['serve', '--host', '127.0.0.1', '--port', String(wantPort), ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  live.add(proc);
  let stderr = '';
  let exitCode = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      live.delete(proc);
      exitCode = code ?? signal;
      resolve(exitCode);
    });
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`moe serve did not start in time:\n${stderr}`)), startTimeoutMs);
    proc.stderr.on('data', (d) => {
      stderr += d;
      const m = stderr.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`moe serve exited (${code}) before listening:\n${stderr}`));
    });
  });
  const baseURL = `http://127.0.0.1:${port}`;
  const server = {
    proc,
    port,
    baseURL,
    exited,
    get stderr() {
      return stderr;
    },
    get exitCode() {
      return exitCode;
    },
    client({ apiKey = 'unused', timeout = 120000 } = {}) {
      return new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout });
    },
    // Raw HTTP (for invalid bodies and routes the client does not have).
    async fetch(route, { method = 'POST', body, headers = {}, signal } = {}) {
      const init = { method, headers: { 'content-type': 'application/json', ...headers }, signal };
      if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
      const res = await fetch(baseURL + route, init);
      const text = await res.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {}
      return { status: res.status, text, json, headers: res.headers };
    },
    // /metrics as { 'name{labels}': value }.
    async metrics(headers = {}) {
      const res = await fetch(`${baseURL}/metrics`, { headers });
      const text = await res.text();
      const out = {};
      for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        out[line.slice(0, i)] = Number(line.slice(i + 1));
      }
      return out;
    },
    rssKiB() {
      const m = readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
      return m ? Number(m[1]) : NaN;
    },
    async stop(signal = 'SIGTERM') {
      if (exitCode === null) proc.kill(signal);
      return exited;
    },
  };
  return server;
}

export async function modelName(server) {
  const list = await server.client().models.list();
  return list.data[0].id;
}

// Collects a streamed chat or completion: text per choice, finish reasons, usage, chunk count.
export async function collectStream(stream) {
  const text = {};
  const finish = {};
  const logprobs = {};
  let usage = null;
  let chunks = 0;
  let id = null;
  for await (const chunk of stream) {
    chunks++;
    id ??= chunk.id;
    if (chunk.id !== id) throw new Error(`chunk id changed: ${chunk.id} after ${id}`);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      const piece = c.delta ? c.delta.content ?? '' : c.text ?? '';
      text[c.index] = (text[c.index] ?? '') + piece;
      if (c.logprobs?.content) (logprobs[c.index] ??= []).push(...c.logprobs.content);
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, finish, usage, chunks, logprobs };
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export async function waitFor(predicate, { timeoutMs = 10000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return predicate();
}
