// cancel.test.mjs: a client that goes away before its non-streamed answer is ready cancels the
// generation at once: the engine's running sequences drop to 0 and every KV block returns to the pool
// (prefix caching is off here, so the baseline is exactly 0 blocks used), far sooner than the requested
// tokens would take. The server keeps answering afterwards, in OpenAI's non-streamed shape.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { modelName, startServer, waitFor } from './helpers.mjs';

let server;
let client;
let model;

before(async () => {
  server = await startServer(['--max-num-seqs', '16', '--no-enable-prefix-caching']);
  client = server.client();
  model = await modelName(server);
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

// Starts `create(signal)` (8 choices × 2000 tokens: tens of seconds of work on this box), aborts it
// once tokens are being generated, and checks that the engine lets go of it within 2 s.
async function abortMidGeneration(t, create) {
  const m0 = await server.metrics();
  assert.equal(m0.moe_num_requests_running, 0);
  assert.equal(m0.moe_kv_blocks_used, 0);
  const ac = new AbortController();
  const pending = create(ac.signal);
  pending.catch(() => {});
  assert.ok(
    await waitFor(async () => {
      const m = await server.metrics();
      return m.moe_num_requests_running === 8 && m.moe_generation_tokens_total - m0.moe_generation_tokens_total >= 80;
    }),
    'the request did not start generating',
  );
  const atAbort = await server.metrics();
  ac.abort();
  const abortedAt = performance.now();
  await assert.rejects(pending, (e) => e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError');
  assert.ok(
    await waitFor(
      async () => {
        const m = await server.metrics();
        return m.moe_num_requests_running === 0 && m.moe_kv_blocks_used === 0;
      },
      { timeoutMs: 2000, intervalMs: 20 },
    ),
    'the sequences were not cancelled within 2 s of the disconnect',
  );
  const waited = performance.now() - abortedAt;
  const m = await server.metrics();
  const before = atAbort.moe_generation_tokens_total - m0.moe_generation_tokens_total;
  const total = m.moe_generation_tokens_total - m0.moe_generation_tokens_total;
  t.diagnostic(`cancelled ${waited.toFixed(0)} ms after the abort; ${before} tokens before it, ${total} in all (of 16000 asked)`);
  assert.ok(total < 8000, `${total} tokens generated: the request ran on after its client left`);
  assert.equal(m.moe_num_requests_waiting, 0);
}

test('aborting a non-streamed completion cancels its sequences and frees their KV blocks', async (t) => {
  await abortMidGeneration(t, (signal) =>
    client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 2000, n: 8, ignore_eos: true }, { signal }),
  );
});

test('aborting a non-streamed chat completion does the same', async (t) => {
  await abortMidGeneration(t, (signal) =>
    client.chat.completions.create(
      { model, messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 2000, n: 8, ignore_eos: true },
      { signal },
    ),
  );
});

test('the server answers normally afterwards, and counts the abandoned requests', async () => {
  const raw = await server.fetch('/v1/completions', { body: { model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0 } });
  assert.equal(raw.status, 200, raw.text);
  assert.equal(raw.headers.get('content-type'), 'application/json');
  // One body with its length up front (gzip'd when the client accepts it), not a chunked stream.
  assert.ok(Number(raw.headers.get('content-length')) > 0);
  assert.equal(raw.headers.get('transfer-encoding'), null);
  assert.equal(raw.json.object, 'text_completion');
  assert.ok(raw.json.usage.completion_tokens >= 1 && raw.json.usage.completion_tokens <= 8);
  const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8 });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices.length, 1);
  // httplib's logger counts a request just after its (failed) write: poll for both.
  assert.ok(
    await waitFor(async () => {
      const m = await server.metrics();
      return (
        m['moe_http_requests_total{route="/v1/completions",code="499"}'] === 1 &&
        m['moe_http_requests_total{route="/v1/chat/completions",code="499"}'] === 1
      );
    }),
    'the abandoned requests were not counted under status 499',
  );
});
