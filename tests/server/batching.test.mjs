// batching.test.mjs: continuous batching must not change answers, and prefix caching must work.
// - Batch invariance: a greedy request gives the same text alone and while 15 other requests stream.
// - Prefix caching: a request sharing a long prefix with an earlier one reuses its KV blocks (hits in
//   /metrics, cached_tokens in usage); time to first token is measured cold and warm and reported
//   (only the hits are asserted: on a busy 2-core box the timings are noisy).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { collectStream, median, modelName, startServer } from './helpers.mjs';

let server;
let client;
let model;

before(async () => {
  server = await startServer(['--max-num-seqs', '16', '--enable-prefix-caching']);
  client = server.client();
  model = await modelName(server);
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

test('a greedy request gives the same text alone and inside a busy batch', async () => {
  const greedy = { model, prompt: 'One day, a little girl named Lily went to the park and', max_tokens: 48, temperature: 0 };
  const alone = (await client.completions.create(greedy)).choices[0].text;
  const aloneChat = (
    await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Tell me about a frog.' }], max_tokens: 32, temperature: 0 })
  ).choices[0].message.content;

  // 15 sampled streams that stay busy until we stop them.
  const controllers = [];
  const started = [];
  const busy = [];
  for (let i = 0; i < 15; i++) {
    const ac = new AbortController();
    controllers.push(ac);
    let markStarted;
    started.push(new Promise((r) => (markStarted = r)));
    busy.push(
      (async () => {
        let chunks = 0;
        let tokens = 0;
        try {
          const stream = await client.completions.create(
            { model, prompt: `Story number ${i}: once`, max_tokens: 4000, temperature: 1, seed: i, ignore_eos: true, stream: true },
            { signal: ac.signal },
          );
          for await (const chunk of stream) {
            if (++chunks === 2) markStarted();
            tokens += chunk.choices[0]?.text ? 1 : 0;
          }
        } catch (e) {
          if (!ac.signal.aborted) throw e;
        }
        markStarted();
        return tokens;
      })(),
    );
  }
  await Promise.all(started);
  const before = await server.metrics();
  assert.ok(before.moe_num_requests_running >= 10, `only ${before.moe_num_requests_running} running`);
  const inBatch = (await client.completions.create(greedy)).choices[0].text;
  const inBatchChat = (
    await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Tell me about a frog.' }], max_tokens: 32, temperature: 0 })
  ).choices[0].message.content;
  const during = await server.metrics();
  for (const ac of controllers) ac.abort();
  const streamed = await Promise.all(busy);
  assert.equal(inBatch, alone);
  assert.equal(inBatchChat, aloneChat);
  // The others really were generating meanwhile.
  assert.ok(during.moe_generation_tokens_total - before.moe_generation_tokens_total > 2 * 48, 'the batch was idle');
  assert.ok(streamed.every((n) => n > 0));
});

test('a shared long prefix hits the prefix cache and starts faster', async (t) => {
  const story =
    'You are a kind storyteller. You tell short stories for small children about animals, the sea, the sky, ' +
    'friendship, sharing and being brave. Every story has a happy ending and simple words. ';
  const prefix = (tag) => `${tag} ${story.repeat(6)}`;
  async function ttft(prompt) {
    const t0 = performance.now();
    const stream = await client.completions.create({ model, prompt, max_tokens: 2, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let first = null;
    let usage = null;
    for await (const chunk of stream) {
      if (first === null && chunk.choices[0]?.text) first = performance.now() - t0;
      if (chunk.usage) usage = chunk.usage;
    }
    return { ms: first ?? performance.now() - t0, usage };
  }
  const m0 = await server.metrics();
  const cold = [];
  const warm = [];
  for (let i = 0; i < 5; i++) {
    // A new first word makes every block of the prefix new (block hashes chain from the start).
    const p = prefix(`Tale ${i}${Math.random()}:`);
    const c = await ttft(`${p} Question ${i}: what did the cat see?`);
    const w = await ttft(`${p} Question ${i}: where did the dog go?`);
    cold.push(c.ms);
    warm.push(w.ms);
    assert.equal(c.usage.prompt_tokens_details.cached_tokens, 0);
    assert.ok(w.usage.prompt_tokens_details.cached_tokens >= 16 * Math.floor((c.usage.prompt_tokens - 40) / 16),
      `cached ${w.usage.prompt_tokens_details.cached_tokens} of ${w.usage.prompt_tokens}`);
  }
  const m1 = await server.metrics();
  const hits = m1.moe_prefix_cache_hits_total - m0.moe_prefix_cache_hits_total;
  assert.ok(hits > 0, 'no prefix cache hits');
  assert.ok(m1.moe_prefix_cache_hit_rate > 0);
  const report = `prefix cache: ${hits} block hits; time to first token median cold ${median(cold).toFixed(1)} ms, warm ${median(warm).toFixed(1)} ms (cold ${cold.map((x) => x.toFixed(1)).join(', ')}; warm ${warm.map((x) => x.toFixed(1)).join(', ')})`;
  t.diagnostic(report);
});
