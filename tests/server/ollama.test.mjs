// ollama.test.mjs: the Ollama API of `moe serve` on the bundled model, through the official `ollama`
// npm client: generate and chat (streamed and not, which must agree), the counts and durations,
// options (num_predict, stop, seed), format "json" and JSON schemas (validated with ajv), embeddings, list/show/ps/
// version, the refusals (images, unknown model, pull), the API key; the same greedy text through the
// Ollama and the OpenAI routes; and the routing trace: its shape, that it equals what the engine's
// per-expert counters saw, and that turning it on changes no token.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Ajv from 'ajv';
import { Ollama } from 'ollama';
import { modelName, startServer } from './helpers.mjs';

let server;
let ollama;
let openai;
let model;      // the OpenAI id, e.g. stories260K-moe
let tag;        // the Ollama name, e.g. stories260K-moe:latest
let info;       // /api/show model_info

before(async () => {
  server = await startServer();
  ollama = new Ollama({ host: server.baseURL });
  openai = server.client();
  model = await modelName(server);
  tag = `${model}:latest`;
  info = (await ollama.show({ model: tag })).model_info;
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

const greedy = { temperature: 0, num_predict: 24 };
const story = [{ role: 'user', content: 'Tell me a story about a cat.' }];

async function collect(iterator) {
  const parts = [];
  for await (const p of iterator) parts.push(p);
  return parts;
}

describe('models', () => {
  test('version, list, show, ps', async () => {
    const v = await ollama.version();
    assert.match(v.version, /^\d+\.\d+\.\d+$/);
    const list = await ollama.list();
    assert.equal(list.models.length, 1);
    const m = list.models[0];
    assert.equal(m.name, tag);
    assert.equal(m.model, tag);
    assert.ok(m.size > 0, 'size in bytes');
    assert.match(m.digest, /^[0-9a-f]{64}$/);
    assert.equal(m.details.format, 'gguf');
    assert.equal(m.details.family, 'llama');
    assert.ok(!Number.isNaN(Date.parse(m.modified_at)));
    const show = await ollama.show({ model: model });  // the name without a tag works too
    assert.equal(show.model_info['general.architecture'], 'llama');
    assert.equal(show.model_info['llama.expert_count'], 8);
    assert.equal(show.model_info['llama.expert_used_count'], 2);
    assert.ok(show.model_info['llama.block_count'] > 0);
    assert.ok(show.capabilities.includes('completion'));
    const ps = await ollama.ps();
    assert.equal(ps.models.length, 1);
    assert.equal(ps.models[0].name, tag);
    assert.ok(ps.models[0].context_length > 0);
  });

  test('an unknown model is a 404 naming the served one', async () => {
    await assert.rejects(ollama.generate({ model: 'llama3:8b', prompt: 'hi' }), (e) => {
      assert.equal(e.status_code, 404);
      assert.match(e.error, /llama3:8b.*not found.*stories260K-moe/);
      return true;
    });
  });

  test('pull, push, create, delete say that moe serves local files', async () => {
    await assert.rejects(ollama.pull({ model: 'mixtral' }), (e) => {
      assert.equal(e.status_code, 501);
      assert.match(e.error, /local GGUF file/);
      return true;
    });
    await assert.rejects(ollama.delete({ model: tag }), (e) => e.status_code === 501);
    await assert.rejects(ollama.create({ model: 'x', from: tag }), (e) => e.status_code === 501);
    await assert.rejects(ollama.push({ model: tag }), (e) => e.status_code === 501);
  });

  test('an unknown /api route is a 404 in Ollama\'s error shape', async () => {
    const r = await server.fetch('/api/blobs/sha256:00', { method: 'HEAD' });
    assert.equal(r.status, 404);
    const g = await server.fetch('/api/nothing', { method: 'GET' });
    assert.equal(g.status, 404);
    assert.match(g.json.error, /unknown route: GET \/api\/nothing/);
  });
});

describe('generate', () => {
  test('non-streamed: shape, counts, durations in nanoseconds, context', async () => {
    const r = await ollama.generate({ model: tag, prompt: 'Once upon a time', options: greedy });
    assert.equal(r.model, tag);
    assert.equal(r.done, true);
    assert.equal(r.done_reason, 'length');
    assert.ok(r.response.length > 0);
    assert.equal(r.eval_count, 24);
    assert.ok(r.prompt_eval_count > 0);
    assert.ok(r.total_duration > 0 && r.total_duration < 60e9, `total_duration ${r.total_duration} ns`);
    assert.ok(r.total_duration >= r.eval_duration + r.prompt_eval_duration - 1e6);
    assert.equal(r.load_duration, 0);
    assert.equal(r.context.length, r.prompt_eval_count + r.eval_count);
    assert.ok(!Number.isNaN(Date.parse(r.created_at)));
  });

  test('streamed equals non-streamed, and the last part is done', async () => {
    const whole = await ollama.generate({ model: tag, prompt: 'Once upon a time', options: greedy });
    const parts = await collect(await ollama.generate({ model: tag, prompt: 'Once upon a time', options: greedy, stream: true }));
    assert.ok(parts.length > 2, 'several parts');
    assert.ok(parts.slice(0, -1).every((p) => p.done === false));
    const last = parts.at(-1);
    assert.equal(last.done, true);
    assert.equal(last.response, '');
    assert.equal(last.eval_count, whole.eval_count);
    assert.equal(parts.map((p) => p.response).join(''), whole.response);
  });

  test('the stream is NDJSON', async () => {
    const res = await fetch(`${server.baseURL}/api/generate`, {
      method: 'POST',
      body: JSON.stringify({ model: tag, prompt: 'Hi', options: { ...greedy, num_predict: 4 } }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /application\/x-ndjson/);
    const lines = (await res.text()).trim().split('\n');
    assert.ok(lines.length >= 2);
    for (const l of lines) JSON.parse(l);
  });

  test('raw and a Go template: the same prompt tokens give the same text', async () => {
    const raw = await ollama.generate({ model: tag, prompt: 'Once upon a time', raw: true, options: greedy });
    const templ = await ollama.generate({ model: tag, prompt: 'a time', system: 'Once upon',
                                          template: '{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}', options: greedy });
    assert.equal(templ.response, raw.response);
    await assert.rejects(ollama.generate({ model: tag, prompt: 'x', template: '{{ range .Messages }}{{ end }}' }),
                         (e) => e.status_code === 400 && /range \.Messages.*not supported/.test(e.error));
  });

  test('context continues an earlier reply exactly', async () => {
    const first = await ollama.generate({ model: tag, prompt: 'Once upon a time', raw: true, options: { temperature: 0, num_predict: 8 } });
    const next = await ollama.generate({ model: tag, prompt: '', context: first.context, raw: true, options: { temperature: 0, num_predict: 8 } });
    const whole = await ollama.generate({ model: tag, prompt: 'Once upon a time', raw: true, options: { temperature: 0, num_predict: 16 } });
    assert.deepEqual(next.context, whole.context);
    assert.equal(next.prompt_eval_count, first.context.length);
  });

  test('an empty prompt answers done_reason "load"', async () => {
    const r = await ollama.generate({ model: tag, prompt: '' });
    assert.equal(r.done, true);
    assert.equal(r.done_reason, 'load');
  });

  test('options: stop, seed, num_predict, num_ctx', async () => {
    const base = await ollama.generate({ model: tag, prompt: 'Once upon a time', raw: true, options: greedy });
    const word = base.response.trim().split(/\s+/)[2];
    const stopped = await ollama.generate({ model: tag, prompt: 'Once upon a time', raw: true, options: { ...greedy, stop: [word] } });
    assert.equal(stopped.done_reason, 'stop');
    assert.ok(base.response.startsWith(stopped.response) && !stopped.response.includes(word));
    const seeded = { temperature: 1, seed: 42, num_predict: 16 };
    const a = await ollama.generate({ model: tag, prompt: 'Once upon a time', options: seeded });
    const b = await ollama.generate({ model: tag, prompt: 'Once upon a time', options: seeded });
    assert.equal(a.response, b.response);
    const short = await ollama.generate({ model: tag, prompt: 'Once upon a time', options: { temperature: 0, num_predict: 3 } });
    assert.equal(short.eval_count, 3);
    await assert.rejects(ollama.generate({ model: tag, prompt: 'Once upon a time', options: { num_ctx: 2 } }),
                         (e) => e.status_code === 400 && /num_ctx/.test(e.error));
    await assert.rejects(ollama.generate({ model: tag, prompt: 'x', options: { mirostat: 2 } }),
                         (e) => e.status_code === 400 && /mirostat/.test(e.error));
  });
});

describe('chat', () => {
  test('streamed and not agree; counts', async () => {
    const whole = await ollama.chat({ model: tag, messages: story, options: greedy });
    assert.equal(whole.message.role, 'assistant');
    assert.ok(whole.message.content.length > 0);
    assert.equal(whole.done, true);
    assert.ok(['stop', 'length'].includes(whole.done_reason));
    assert.ok(whole.eval_count > 0 && whole.prompt_eval_count > 0);
    const parts = await collect(await ollama.chat({ model: tag, messages: story, options: greedy, stream: true }));
    assert.equal(parts.map((p) => p.message.content).join(''), whole.message.content);
    assert.equal(parts.at(-1).done, true);
  });

  test('images are refused clearly', async () => {
    await assert.rejects(
      ollama.chat({ model: tag, messages: [{ role: 'user', content: 'what is this?', images: ['aGVsbG8='] }] }),
      (e) => e.status_code === 400 && /images.*text only/.test(e.error));
  });

  test('tools are refused when the chat template has no tool format (the bundled model: ChatML)', async () => {
    const tools = [{ type: 'function', function: { name: 'f', description: 'd', parameters: { type: 'object', properties: {} } } }];
    await assert.rejects(ollama.chat({ model: tag, messages: story, tools }),
                         (e) => e.status_code === 400 && /does not support tools.*--chat-template/.test(e.error));
  });

  test('keep_alive is accepted', async () => {
    const r = await ollama.chat({ model: tag, messages: story, keep_alive: '5m', options: { ...greedy, num_predict: 2 } });
    assert.equal(r.done, true);
  });
});

describe('format', () => {
  test('"json" gives one JSON object', async () => {
    const r = await ollama.generate({ model: tag, prompt: 'A JSON object:', format: 'json', options: { temperature: 0, num_predict: 48 } });
    const v = JSON.parse(r.response);
    assert.equal(typeof v, 'object');
    assert.ok(!Array.isArray(v));
  });

  test('any JSON schema is enforced (each reply validates, ajv), streamed or not; one it cannot enforce is a 400', async () => {
    const ajv = new Ajv({ strict: false });
    const schemas = [
      { type: 'object' },
      { type: 'object', properties: { name: { type: 'string', maxLength: 16 }, age: { type: 'integer', minimum: 0, maximum: 120 } }, required: ['name', 'age'], additionalProperties: false },
      { type: 'array', items: { type: 'string', enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 3 },
      { type: 'object', properties: { pet: { anyOf: [{ type: 'string', maxLength: 8 }, { type: 'null' }] }, happy: { type: 'boolean' } }, required: ['pet', 'happy'], additionalProperties: false },
    ];
    for (const [i, format] of schemas.entries()) {
      const r = await ollama.chat({ model: tag, messages: story, format, options: { temperature: 1, seed: i + 1, num_predict: 200 } });
      const v = JSON.parse(r.message.content);
      const validate = ajv.compile(format);
      assert.ok(validate(v), `${r.message.content}: ${ajv.errorsText(validate.errors)}`);
      const parts = await collect(await ollama.chat({ model: tag, messages: story, format, stream: true, options: { temperature: 1, seed: i + 1, num_predict: 200 } }));
      assert.equal(parts.map((p) => p.message.content).join(''), r.message.content);
    }
    // Properties come in the schema's order (not sorted).
    const ordered = { type: 'object', properties: { zebra: { type: 'boolean' }, apple: { type: 'boolean' } }, required: ['zebra', 'apple'], additionalProperties: false };
    const o = await ollama.generate({ model: tag, prompt: 'A JSON object:', format: ordered, options: { temperature: 0, num_predict: 64 } });
    assert.deepEqual(Object.keys(JSON.parse(o.response)), ['zebra', 'apple']);
    const refused = { type: 'object', properties: { code: { type: 'string', pattern: '(?<=a)b' } } };
    await assert.rejects(ollama.chat({ model: tag, messages: story, format: refused }), (e) => {
      assert.equal(e.status_code, 400);
      assert.match(e.error, /'format'.*'pattern'/);
      return true;
    });
  });
});

describe('embeddings', () => {
  test('embed and embeddings give unit vectors equal to /v1/embeddings', async () => {
    const r = await ollama.embed({ model: tag, input: ['Once upon a time', 'a cat'] });
    assert.equal(r.model, tag);
    assert.equal(r.embeddings.length, 2);
    const n = info['llama.embedding_length'];
    for (const v of r.embeddings) {
      assert.equal(v.length, n);
      assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-4);
    }
    assert.ok(r.prompt_eval_count > 0);
    const legacy = await ollama.embeddings({ model: tag, prompt: 'Once upon a time' });
    const o = await openai.embeddings.create({ model, input: 'Once upon a time', encoding_format: 'float' });
    for (let i = 0; i < n; i++) {
      assert.ok(Math.abs(legacy.embedding[i] - o.data[0].embedding[i]) < 1e-6);
      assert.ok(Math.abs(r.embeddings[0][i] - o.data[0].embedding[i]) < 1e-6);
    }
  });
});

describe('the same greedy text through the Ollama and the OpenAI routes', () => {
  test('chat', async () => {
    for (const messages of [story, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Who is Lily?' }]]) {
      const o = await ollama.chat({ model: tag, messages, options: greedy });
      const a = await openai.chat.completions.create({ model, messages, temperature: 0, max_tokens: 24 });
      assert.equal(o.message.content, a.choices[0].message.content);
      assert.equal(o.prompt_eval_count, a.usage.prompt_tokens);
    }
  });
  test('generate (raw) and completions', async () => {
    for (const prompt of ['Once upon a time', 'The little dog']) {
      const o = await ollama.generate({ model: tag, prompt, raw: true, options: greedy });
      const a = await openai.completions.create({ model, prompt, temperature: 0, max_tokens: 24 });
      assert.equal(o.response, a.choices[0].text);
      assert.equal(o.eval_count, a.usage.completion_tokens);
    }
  });
});

// Counters per (layer, expert) from /metrics.
async function expertCounters() {
  const m = await server.metrics();
  const out = {};
  for (const [k, v] of Object.entries(m)) {
    const r = /^moe_expert_tokens_total\{layer="(\d+)",expert="(\d+)"\}$/.exec(k);
    if (r) out[`${r[1]}/${r[2]}`] = v;
  }
  return out;
}

describe('routing trace', () => {
  const nLayer = () => info['llama.block_count'];

  function checkShape(routing, tokens) {
    assert.equal(routing.length, tokens);
    for (const t of routing) {
      assert.equal(t.experts.length, nLayer());
      for (let l = 0; l < nLayer(); l++) {
        const ids = t.experts[l];
        const w = t.weights[l];
        assert.equal(ids.length, 2);
        assert.equal(new Set(ids).size, 2, 'distinct experts');
        assert.ok(ids.every((e) => Number.isInteger(e) && e >= 0 && e < 8));
        assert.ok(Math.abs(w[0] + w[1] - 1) < 1e-5, 'weights sum to 1');
        assert.ok(w[0] >= w[1] && w[1] > 0, 'highest weight first');
      }
    }
  }

  test('Ollama chat: one entry per token, streamed and not; tokens unchanged', async () => {
    const off = await ollama.chat({ model: tag, messages: story, options: greedy });
    const on = await ollama.chat({ model: tag, messages: story, options: greedy, moe: { routing: true } });
    assert.equal(on.message.content, off.message.content);
    assert.equal(off.moe, undefined);
    const traced = on.eval_count - (on.done_reason === 'stop' ? 1 : 0);  // a stop token has no text and no entry
    checkShape(on.moe.routing, traced);
    const parts = await collect(await ollama.chat({ model: tag, messages: story, options: greedy, stream: true, moe: { routing: true } }));
    const streamed = parts.flatMap((p) => p.moe?.routing ?? []);
    assert.deepEqual(streamed, on.moe.routing);
  });

  test('OpenAI routes: the same trace, and seeded sampling is unchanged by it', async () => {
    const o = await ollama.generate({ model: tag, prompt: 'Once upon a time', raw: true, options: greedy, moe: { routing: true } });
    const a = await server.fetch('/v1/completions', { body: { model, prompt: 'Once upon a time', temperature: 0, max_tokens: 24, moe: { routing: true } } });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.choices[0].text, o.response);
    assert.deepEqual(a.json.choices[0].moe.routing, o.moe.routing);
    const sampled = { model, messages: story, temperature: 1, seed: 7, max_tokens: 24 };
    const s0 = await openai.chat.completions.create(sampled);
    const s1 = await server.fetch('/v1/chat/completions', { body: { ...sampled, moe: { routing: true } } });
    assert.equal(s1.json.choices[0].message.content, s0.choices[0].message.content);
    const bad = await server.fetch('/v1/completions', { body: { model, prompt: 'x', moe: { routing: 'yes' } } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'moe.routing');
  });

  test("equals the routing the engine counted (per-expert counters) for every fed token", async () => {
    // A prompt of BOS alone: the positions the model runs are BOS and each generated token but the last,
    // exactly the positions whose outputs produced the traced tokens, so the counters' increase over
    // the request must equal the trace's histogram, layer by layer and expert by expert.
    const bos = (await server.fetch('/tokenize', { body: { prompt: '' } })).json.tokens;
    assert.equal(bos.length, 1);
    const before = await expertCounters();
    const r = await server.fetch('/v1/completions', {
      body: { model, prompt: bos, temperature: 0, max_tokens: 32, ignore_eos: true, moe: { routing: true } },
    });
    assert.equal(r.status, 200, r.text);
    const after = await expertCounters();
    const routing = r.json.choices[0].moe.routing;
    checkShape(routing, 32);
    const hist = {};
    for (const t of routing) t.experts.forEach((ids, l) => ids.forEach((e) => { hist[`${l}/${e}`] = (hist[`${l}/${e}`] ?? 0) + 1; }));
    let compared = 0;
    for (const key of Object.keys(after)) {
      assert.equal(after[key] - (before[key] ?? 0), hist[key] ?? 0, `layer/expert ${key}`);
      compared++;
    }
    assert.equal(compared, nLayer() * 8);
  });
});

describe('API key', () => {
  test('the Ollama routes take the key as a Bearer header', async () => {
    const keyed = await startServer(['--api-key', 'sekrit']);
    try {
      const without = new Ollama({ host: keyed.baseURL });
      await assert.rejects(without.list(), (e) => e.status_code === 401 && /API key/.test(e.error));
      const withKey = new Ollama({ host: keyed.baseURL, headers: { Authorization: 'Bearer sekrit' } });
      assert.equal((await withKey.list()).models.length, 1);
      const r = await withKey.generate({ model: tag, prompt: 'Hi', options: { num_predict: 2 } });
      assert.equal(r.done, true);
    } finally {
      assert.equal(await keyed.stop(), 0, keyed.stderr);
    }
  });
});
