// shutdown.test.mjs: SIGTERM drains with a deadline (--shutdown-timeout): work still running at the
// deadline is cancelled and the server exits 0 soon after, however slow its clients; a second SIGTERM
// or SIGINT during the drain exits at once. (load.test.mjs checks that a drain within the deadline
// finishes every in-flight request.)
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { startServer, waitFor } from './helpers.mjs';

// A non-streamed request of 8 choices x 2000 tokens: tens of seconds of work on a small machine.
function longRequest(server) {
  const ac = new AbortController();
  const p = server.fetch('/v1/completions', {
    body: { prompt: 'Once upon a time', n: 8, max_tokens: 2000, temperature: 1, seed: 1, ignore_eos: true },
    signal: ac.signal,
  });
  p.catch(() => {});
  return { p, ac };
}

async function generating(server) {
  return waitFor(async () => (await server.metrics()).moe_num_requests_running >= 8, { timeoutMs: 20000 });
}

test('the drain deadline cancels what is still running; a slow client does not hold it open', async (t) => {
  const server = await startServer(['--shutdown-timeout', '2', '--max-num-seqs', '16', '--no-enable-prefix-caching']);
  const slow = net.connect({ port: server.port, host: '127.0.0.1' });
  slow.on('error', () => {});
  slow.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n');  // and never more
  const { p } = longRequest(server);
  assert.ok(await generating(server), 'the long request did not start');
  const t0 = performance.now();
  server.proc.kill('SIGTERM');
  const code = await server.exited;
  const ms = performance.now() - t0;
  t.diagnostic(`exited ${code} ${ms.toFixed(0)} ms after SIGTERM with --shutdown-timeout 2`);
  assert.equal(code, 0, server.stderr);
  assert.ok(ms < 6000, `took ${ms} ms`);
  assert.match(server.stderr, /deadline/);
  await p.catch(() => {});
  slow.destroy();
});

test('a second signal during the drain exits at once', async (t) => {
  const server = await startServer(['--shutdown-timeout', '60', '--max-num-seqs', '16', '--no-enable-prefix-caching']);
  const { p } = longRequest(server);
  assert.ok(await generating(server), 'the long request did not start');
  server.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(server.exitCode, null, 'the first signal drains: the process is still there');
  const t0 = performance.now();
  server.proc.kill('SIGINT');
  const code = await server.exited;
  const ms = performance.now() - t0;
  t.diagnostic(`exited ${code} ${ms.toFixed(0)} ms after the second signal`);
  assert.equal(code, 130);  // 128 + SIGINT
  assert.ok(ms < 2000, `took ${ms} ms`);
  assert.match(server.stderr, /second SIGINT: exiting now/);
  await p.catch(() => {});
});
