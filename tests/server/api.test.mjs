// api.test.mjs: the OpenAI API of `moe serve` on the bundled model, through the official `openai`
// client: chat and completions (streamed and not, which must agree), usage, stop sequences, seed
// reproducibility, logprobs, n > 1, json_object, embeddings, tokenize/detokenize, and the errors
// (400 naming the field, 404 for unknown models and routes, 413, prompt longer than the context).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { collectStream, modelName, startServer } from './helpers.mjs';

let server;
let client;
let model;

before(async () => {
  server = await startServer();
  client = server.client();
  model = await modelName(server);
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

const story = [{ role: 'user', content: 'Tell me a story about a cat.' }];

describe('models and health', () => {
  test('lists the served model', async () => {
    const list = await client.models.list();
    assert.equal(list.data.length, 1);
    assert.equal(list.data[0].object, 'model');
    assert.equal(list.data[0].id, 'stories260K-moe');
    const one = await client.models.retrieve(model);
    assert.equal(one.id, model);
    const health = await server.fetch('/health', { method: 'GET' });
    assert.equal(health.status, 200);
  });
});

describe('chat completions', () => {
  test('non-streamed shape and usage', async () => {
    const r = await client.chat.completions.create({ model, messages: story, max_tokens: 24, temperature: 0 });
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, model);
    assert.ok(Number.isInteger(r.created));
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.message.content.length > 0);
    assert.ok(['stop', 'length'].includes(c.finish_reason));
    assert.ok(r.usage.prompt_tokens > 5);
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 24);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
    if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, 24);
  });

  test('streamed text equals the non-streamed text, usage comes last', async () => {
    const req = { model, messages: story, max_tokens: 32, temperature: 0 };
    const plain = await client.chat.completions.create(req);
    const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    const s = await collectStream(stream);
    assert.equal(s.text[0], plain.choices[0].message.content);
    assert.equal(s.finish[0], plain.choices[0].finish_reason);
    assert.deepEqual(s.usage, plain.usage);
    assert.ok(s.chunks >= 3);
  });

  test('without include_usage no usage is streamed', async () => {
    const stream = await client.chat.completions.create({ model, messages: story, max_tokens: 4, stream: true });
    const s = await collectStream(stream);
    assert.equal(s.usage, null);
    assert.ok(s.finish[0]);
  });

  test('n > 1 gives n choices; with a seed, each choice is reproducible', async () => {
    const req = { model, messages: story, max_tokens: 16, temperature: 1, seed: 11, n: 3 };
    const a = await client.chat.completions.create(req);
    const b = await client.chat.completions.create(req);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
    assert.ok(a.usage.completion_tokens >= 3 && a.usage.completion_tokens <= 48);
    // Streamed n = 2: both choices arrive, each with its finish reason.
    const s = await collectStream(
      await client.chat.completions.create({ ...req, n: 2, stream: true, stream_options: { include_usage: true } }),
    );
    assert.deepEqual(Object.keys(s.finish).sort(), ['0', '1']);
    assert.equal(s.text[0], a.choices[0].message.content);
    assert.equal(s.text[1], a.choices[1].message.content);
  });

  test('logprobs and top_logprobs', async () => {
    const r = await client.chat.completions.create({
      model,
      messages: story,
      max_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    for (const t of content) {
      assert.equal(typeof t.token, 'string');
      assert.ok(t.logprob <= 0);
      assert.ok(Array.isArray(t.bytes));
      assert.equal(t.top_logprobs.length, 3);
      // Greedy picks the most likely token.
      for (const alt of t.top_logprobs) assert.ok(t.logprob >= alt.logprob - 1e-4, JSON.stringify(t));
    }
    const plain = await client.chat.completions.create({ model, messages: story, max_tokens: 8, temperature: 0 });
    assert.equal(plain.choices[0].logprobs, null);
    assert.equal(plain.choices[0].message.content, r.choices[0].message.content);
  });

  // The engine forces the closing text when the token budget runs short, so even this tiny model,
  // which never closes an object by itself, answers with complete JSON.
  test('response_format json_object gives text that JSON.parse accepts', async () => {
    const r = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Describe a dog as JSON.' }],
      response_format: { type: 'json_object' },
      temperature: 0,
      max_tokens: 96,
    });
    const text = r.choices[0].message.content;
    const parsed = JSON.parse(text);
    assert.equal(typeof parsed, 'object');
    assert.ok(parsed !== null && !Array.isArray(parsed), text);
  });
});

describe('completions', () => {
  const prompt = 'Once upon a time, there was a little';

  test('non-streamed and streamed agree', async () => {
    const plain = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0 });
    assert.match(plain.id, /^cmpl-/);
    assert.equal(plain.object, 'text_completion');
    assert.ok(plain.choices[0].text.length > 0);
    const s = await collectStream(
      await client.completions.create({
        model,
        prompt,
        max_tokens: 40,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    assert.equal(s.text[0], plain.choices[0].text);
    assert.equal(s.finish[0], plain.choices[0].finish_reason);
    assert.deepEqual(s.usage, plain.usage);
  });

  test('stop sequences end the text before the stop string', async () => {
    const plain = await client.completions.create({ model, prompt, max_tokens: 48, temperature: 0 });
    const text = plain.choices[0].text;
    // A word from the middle of the greedy text; the stopped text is everything before its first use.
    const words = text.split(' ').filter((w) => w.length >= 3);
    assert.ok(words.length >= 2, text);
    const stop = ' ' + words[Math.floor(words.length / 2)];
    const at = text.indexOf(stop);
    assert.ok(at >= 0);
    const r = await client.completions.create({ model, prompt, max_tokens: 48, temperature: 0, stop: [stop, 'zzqx'] });
    assert.equal(r.choices[0].text, text.slice(0, at));
    assert.equal(r.choices[0].finish_reason, 'stop');
    const s = await collectStream(
      await client.completions.create({ model, prompt, max_tokens: 48, temperature: 0, stop, stream: true }),
    );
    assert.equal(s.text[0], text.slice(0, at));
    assert.equal(s.finish[0], 'stop');
  });

  test('same seed, same text; different seeds differ somewhere', async () => {
    const req = { model, prompt, max_tokens: 32, temperature: 0.9 };
    const a = await client.completions.create({ ...req, seed: 1234 });
    const b = await client.completions.create({ ...req, seed: 1234 });
    assert.equal(a.choices[0].text, b.choices[0].text);
    const texts = new Set([a.choices[0].text]);
    for (const seed of [1, 2, 3, 4]) texts.add((await client.completions.create({ ...req, seed })).choices[0].text);
    assert.ok(texts.size >= 2, 'sampling with different seeds never changed the text');
  });

  test('logprobs (integer) and prompts as token ids and batches', async () => {
    const r = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, logprobs: 2 });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.text_offset[0], 0);
    for (const top of lp.top_logprobs) assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 2);

    const tok = await server.fetch('/tokenize', { body: { prompt } });
    assert.equal(tok.status, 200);
    const byIds = await client.completions.create({ model, prompt: tok.json.tokens, max_tokens: 6, temperature: 0 });
    assert.equal(byIds.choices[0].text, r.choices[0].text);
    assert.equal(byIds.usage.prompt_tokens, tok.json.count);

    const batch = await client.completions.create({ model, prompt: [prompt, 'The dog'], max_tokens: 4, temperature: 0, n: 2 });
    assert.deepEqual(batch.choices.map((c) => c.index), [0, 1, 2, 3]);
    assert.equal(batch.choices[0].text, batch.choices[1].text); // greedy: both choices of a prompt agree
  });
});

describe('embeddings and tokens', () => {
  test('unit-norm vectors, base64 (the client default) and float agree', async () => {
    const r = await client.embeddings.create({ model, input: ['a happy dog', 'The sun was hot.'] });
    assert.equal(r.data.length, 2);
    const vf = await client.embeddings.create({ model, input: 'a happy dog', encoding_format: 'float' });
    for (const d of r.data) {
      const norm = Math.sqrt(d.embedding.reduce((s, x) => s + x * x, 0));
      assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);
    }
    assert.equal(vf.data[0].embedding.length, r.data[0].embedding.length);
    for (let i = 0; i < vf.data[0].embedding.length; i++)
      assert.ok(Math.abs(vf.data[0].embedding[i] - r.data[0].embedding[i]) < 1e-6);
    assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
    assert.ok(r.usage.prompt_tokens > 4);
  });

  test('tokenize and detokenize round-trip', async () => {
    const t = await server.fetch('/tokenize', { body: { prompt: 'Lily saw a big red ball.' } });
    assert.equal(t.status, 200);
    assert.equal(t.json.tokens.length, t.json.count);
    const d = await server.fetch('/detokenize', { body: { tokens: t.json.tokens } });
    assert.equal(d.status, 200);
    assert.equal(d.json.prompt, 'Lily saw a big red ball.');
  });
});

describe('errors', () => {
  async function expectApiError(promise, status, param) {
    await assert.rejects(promise, (e) => {
      assert.ok(e instanceof OpenAI.APIError, String(e));
      assert.equal(e.status, status, e.message);
      if (param !== undefined) assert.equal(e.param, param, e.message);
      return true;
    });
  }

  test('400 names the bad field', async () => {
    await expectApiError(client.chat.completions.create({ model, messages: story, temperature: 5 }), 400, 'temperature');
    await expectApiError(client.chat.completions.create({ model, messages: story, n: 17 }), 400, 'n');
    await expectApiError(client.chat.completions.create({ model, messages: story, top_p: 0 }), 400, 'top_p');
    await expectApiError(client.chat.completions.create({ model, messages: story, stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'stop');
    await expectApiError(client.chat.completions.create({ model, messages: [] }), 400, 'messages');
    await expectApiError(
      client.chat.completions.create({ model, messages: [{ role: 'robot', content: 'x' }] }),
      400,
      'messages[0].role',
    );
    await expectApiError(client.completions.create({ model, prompt: 'x', logprobs: 9 }), 400, 'logprobs');
    await expectApiError(client.completions.create({ model, prompt: [1, 2, 99999] }), 400, 'prompt[2]');
    await expectApiError(client.chat.completions.create({ model, messages: story, max_tokens: 0 }), 400, 'max_tokens');
    const raw = await server.fetch('/v1/chat/completions', { body: '{"messages": [' });
    assert.equal(raw.status, 400);
    assert.equal(raw.json.error.type, 'invalid_request_error');
    const wrongType = await server.fetch('/v1/completions', { body: { prompt: 'x', seed: 'abc' } });
    assert.equal(wrongType.status, 400);
    assert.equal(wrongType.json.error.param, 'seed');
  });

  test('a prompt longer than the context is refused, saying by how much', async () => {
    const long = 'the cat sat on the mat and '.repeat(400);
    await assert.rejects(client.completions.create({ model, prompt: long, max_tokens: 4 }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.param, 'prompt');
      assert.equal(e.code, 'context_length_exceeded');
      assert.match(e.message, /(\d+) tokens too many/);
      return true;
    });
  });

  test('404 for an unknown model and an unknown route', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: story }), (e) => {
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.equal(e.param, 'model');
      return true;
    });
    const r = await server.fetch('/v1/no/such/route', { method: 'GET' });
    assert.equal(r.status, 404);
    assert.ok(r.json.error.message.includes('/v1/no/such/route'));
    // The model's file name is accepted too.
    const ok = await client.chat.completions.create({ model: 'stories260K-moe.gguf', messages: story, max_tokens: 2 });
    assert.equal(ok.choices.length, 1);
  });

  test('413 for a body over 8 MiB, and the server goes on', async () => {
    const big = JSON.stringify({ model, prompt: 'x'.repeat(9 * 1024 * 1024) });
    const r = await server.fetch('/v1/completions', { body: big });
    assert.equal(r.status, 413);
    assert.equal(r.json.error.code, 'request_too_large');
    const h = await server.fetch('/health', { method: 'GET' });
    assert.equal(h.status, 200);
  });
});

describe('robustness', () => {
  // A seeded generator of hostile values: wrong types, extremes, nesting, odd strings.
  function rng(seed) {
    let x = seed >>> 0;
    return () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  }
  function hostile(r, depth = 0) {
    const pick = Math.floor(r() * 14);
    switch (pick) {
      case 0: return null;
      case 1: return r() < 0.5;
      case 2: return Math.floor(r() * 40) - 10;
      case 3: return (r() - 0.5) * 1e6;
      case 4: return 1e308;
      case 5: return -0;
      case 6: return 2 ** 63;
      case 7: return '';
      case 8: return 'x'.repeat(Math.floor(r() * 300));
      case 9: return '\u0000<s>[INST]<|im_end|>\ud83d\ude00 é';
      case 10: return depth > 3 ? [] : Array.from({ length: Math.floor(r() * 4) }, () => hostile(r, depth + 1));
      case 11: return depth > 3 ? {} : { role: hostile(r, depth + 1), content: hostile(r, depth + 1), type: 'text', text: 'hi' };
      case 12: return [1, 2, 3];
      default: return Math.floor(r() * 6);
    }
  }
  const fields = ['model', 'messages', 'prompt', 'input', 'tokens', 'max_tokens', 'max_completion_tokens', 'temperature',
    'top_p', 'top_k', 'min_p', 'presence_penalty', 'frequency_penalty', 'repetition_penalty', 'seed', 'stop', 'n',
    'logprobs', 'top_logprobs', 'stream', 'stream_options', 'response_format', 'user', 'encoding_format', 'echo',
    'logit_bias', 'tools', 'best_of', 'dimensions', 'add_special_tokens', 'content'];
  const routes = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/tokenize', '/detokenize'];

  test('200 random hostile bodies: each gets a JSON answer, the server stays up', async (t) => {
    const r = rng(20241122);
    const statuses = {};
    for (let i = 0; i < 200; i++) {
      const body = {};
      for (const f of fields) if (r() < 0.3) body[f] = hostile(r);
      if (r() < 0.7) body.messages = [{ role: 'user', content: 'hi' }];
      if (r() < 0.7) body.prompt = 'Once';
      if (r() < 0.5) body.input = 'a dog';
      if (r() < 0.5) body.tokens = [1, 2, 3];
      body.max_tokens = r() < 0.9 ? 1 + Math.floor(r() * 4) : hostile(r);
      delete body.max_completion_tokens;
      if (body.stream === true && r() < 0.5) body.stream = false;
      const route = routes[i % routes.length];
      const res = await server.fetch(route, { body: JSON.stringify(body) });
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      assert.ok([200, 400, 404].includes(res.status), `${route} ${JSON.stringify(body).slice(0, 300)} -> ${res.status} ${res.text.slice(0, 300)}`);
      if (res.status !== 200) assert.ok(res.json?.error?.message, res.text);
      else if (!res.headers.get('content-type').includes('event-stream')) assert.ok(res.json, res.text.slice(0, 200));
    }
    t.diagnostic(`hostile bodies by status: ${JSON.stringify(statuses)}`);
    assert.ok(statuses[200] > 20 && statuses[400] > 20, JSON.stringify(statuses));
    assert.equal((await server.fetch('/health', { method: 'GET' })).status, 200);
  });
});

describe('metrics', () => {
  test('Prometheus families are present and count what happened', async () => {
    const m = await server.metrics();
    assert.ok(m['moe_http_requests_total{route="/v1/chat/completions",code="200"}'] >= 1);
    assert.ok(m['moe_http_requests_total{route="/v1/chat/completions",code="400"}'] >= 1);
    assert.ok(m['moe_time_to_first_token_seconds_count'] >= 1);
    assert.ok(m['moe_inter_token_latency_seconds_count'] >= 1);
    assert.ok(m['moe_prompt_tokens_total'] > 0);
    assert.ok(m['moe_generation_tokens_total'] > 0);
    for (const k of ['moe_num_requests_running', 'moe_num_requests_waiting', 'moe_kv_blocks_used', 'moe_kv_blocks_free', 'moe_prefix_cache_hit_rate'])
      assert.ok(k in m, k);
    const experts = Object.keys(m).filter((k) => k.startsWith('moe_expert_tokens_total{'));
    assert.equal(experts.length, 5 * 8); // 5 layers × 8 experts
    assert.ok(experts.reduce((s, k) => s + m[k], 0) > 0);
  });
});
