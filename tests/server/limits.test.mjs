// limits.test.mjs: a deliberately small server (--max-num-seqs 1 --max-queue 1 --max-model-len 128):
// requests beyond the queue get 429 while the admitted ones complete, the context bound is enforced
// with the overflow in the message, and max_tokens is clamped to the context left after the prompt.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { startServer } from './helpers.mjs';

const MODEL = 'stories260K-moe';
let server;
let client;

before(async () => {
  server = await startServer(['--max-num-seqs', '1', '--max-queue', '1', '--max-model-len', '128']);
  client = server.client();
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

test('a full queue answers 429 and the admitted requests still complete', async () => {
  const results = await Promise.allSettled(
    Array.from({ length: 8 }, (_, i) =>
      client.completions.create({ model: MODEL, prompt: `Tale ${i}`, max_tokens: 40, ignore_eos: true }),
    ),
  );
  const ok = results.filter((r) => r.status === 'fulfilled');
  const refused = results.filter((r) => r.status === 'rejected');
  for (const r of refused) {
    assert.ok(r.reason instanceof OpenAI.RateLimitError, String(r.reason));
    assert.equal(r.reason.status, 429);
    assert.equal(r.reason.code, 'queue_full');
  }
  assert.ok(refused.length >= 1, 'nothing was refused with a queue of 1');
  assert.ok(ok.length >= 1, 'nothing was served');
  for (const r of ok) assert.equal(r.value.usage.completion_tokens, 40);
  const m = await server.metrics();
  assert.equal(m['moe_http_requests_total{route="/v1/completions",code="429"}'], refused.length);
});

test('the context bound: too long is refused by how much; max_tokens is clamped to what is left', async () => {
  const tok = await server.fetch('/tokenize', { body: { prompt: 'the dog ran '.repeat(60) } });
  assert.ok(tok.json.count > 128);
  assert.equal(tok.json.max_model_len, 128);
  await assert.rejects(client.completions.create({ model: MODEL, prompt: 'the dog ran '.repeat(60) }), (e) => {
    assert.equal(e.status, 400);
    assert.match(e.message, new RegExp(`${tok.json.count + 1 - 128} tokens too many`));
    return true;
  });
  const short = await server.fetch('/tokenize', { body: { prompt: 'Once upon a time' } });
  const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 1000, ignore_eos: true });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 128 - short.json.count);
});
