// lora.test.mjs: `moe serve --lora-modules` through the official `openai` client, on the F16 tiny-mixtral
// fixture with the two PEFT adapters of ../shared/models/hf (found through MOE_FIXTURES; skipped when
// absent, failed under CI=true).
// - /v1/models lists the base and each adapter (with its parent); a request picks one by `model`.
// - The base and both adapters run concurrently (several requests each, completions and chat, mixed in
//   the same engine steps): every greedy answer equals the same request alone, and the three differ.
// - The prefix cache never shares KV blocks between adapters (cached_tokens), but does within one.
// - An adapter whose tensors hold a NaN passes the start-up check (header only) and fails at its first
//   request with an error naming it, while the base and the other adapters keep serving; /metrics
//   counts the adapters loaded and their bytes.
// - An adapter that does not fit the base stops the server at start, naming it.
// - `moe batch --lora-modules`: each line picks its adapter by `model`, answering as the server does.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { MOE_BIN, ROOT, startServer } from './helpers.mjs';

const FIXTURES = process.env.MOE_FIXTURES || path.join(ROOT, '../shared');
const BASE = path.join(FIXTURES, 'models/tiny-mixtral/tiny-mixtral.F16.gguf');
const ATTN = path.join(FIXTURES, 'models/hf/tiny-mixtral-lora-attn');
const EXPERTS = path.join(FIXTURES, 'models/hf/tiny-mixtral-lora-experts');
const present = [BASE, ATTN, EXPERTS].every((p) => existsSync(p));
if (!present && process.env.CI === 'true') throw new Error(`the LoRA fixtures are missing under ${FIXTURES}, and CI must run them`);
const skip = present ? false : `fixtures not found under ${FIXTURES} (set MOE_FIXTURES to the shared/ folder)`;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'moe-lora-test-'));

// A copy of the attn adapter with one value of its first tensor set to an F16 NaN (0x7e00).
function poisonedAdapter() {
  const dir = path.join(tmp, 'poisoned');
  mkdirSync(dir, { recursive: true });
  copyFileSync(path.join(ATTN, 'adapter_config.json'), path.join(dir, 'adapter_config.json'));
  const bytes = readFileSync(path.join(ATTN, 'adapter_model.safetensors'));
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8'));
  const first = Object.entries(header).find(([k, v]) => k !== '__metadata__' && v.data_offsets[0] === 0);
  bytes.writeUInt16LE(0x7e00, 8 + headerLen + 6);  // element 3 of the tensor at data offset 0
  writeFileSync(path.join(dir, 'adapter_model.safetensors'), bytes);
  return { dir, tensor: first[0] };
}

let server;
let client;
let poisoned;

before(async () => {
  if (skip) return;
  poisoned = poisonedAdapter();
  server = await startServer([BASE, '-c', '256', '--max-num-seqs', '8', '--served-model-name', 'base',
    '--lora-modules', `attn=${ATTN}`, `experts=${EXPERTS}`, `poisoned=${poisoned.dir}`]);
  client = server.client();
});
after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

const MODELS = ['base', 'attn', 'experts'];
const completion = (model, prompt) => ({ model, prompt, max_tokens: 24, temperature: 0 });
const chat = (model, content) => ({ model, messages: [{ role: 'user', content }], max_tokens: 16, temperature: 0 });

test('each adapter is a model in /v1/models, with the base as its parent', { skip }, async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.deepEqual(ids, ['base', 'attn', 'experts', 'poisoned']);
  for (const m of list.data.slice(1)) assert.equal(m.parent, 'base');
  assert.equal((await client.models.retrieve('experts')).id, 'experts');
  const tags = await server.fetch('/api/tags', { method: 'GET' });
  assert.deepEqual(tags.json.models.map((m) => m.name), ['base:latest', 'attn:latest', 'experts:latest', 'poisoned:latest']);
});

test('the base and both adapters at once: every greedy answer equals the same request alone', { skip }, async () => {
  const prompts = ['Once upon a time', 'The little dog'];
  const alone = {};
  for (const m of MODELS) {
    for (const p of prompts) {
      const r = await client.completions.create(completion(m, p));
      assert.equal(r.model, m);
      alone[`${m}|${p}`] = r.choices[0].text;
    }
    alone[`${m}|chat`] = (await client.chat.completions.create(chat(m, 'Tell me a story.'))).choices[0].message.content;
  }
  // The adapters change the answers.
  assert.notEqual(alone['attn|Once upon a time'], alone['base|Once upon a time']);
  assert.notEqual(alone['experts|Once upon a time'], alone['base|Once upon a time']);
  assert.notEqual(alone['attn|Once upon a time'], alone['experts|Once upon a time']);

  const jobs = [];
  for (let round = 0; round < 2; round++)
    for (const m of MODELS) {
      for (const p of prompts)
        jobs.push(client.completions.create(completion(m, p)).then((r) => [`${m}|${p}`, r.choices[0].text]));
      jobs.push(client.chat.completions.create(chat(m, 'Tell me a story.')).then((r) => [`${m}|chat`, r.choices[0].message.content]));
    }
  for (const [key, text] of await Promise.all(jobs)) assert.equal(text, alone[key], key);
});

test('the prefix cache shares blocks within an adapter, never between adapters', { skip }, async () => {
  const prompt = 'Once upon a time there was a little girl who lived in a house by the sea with her mother and her cat, and every day';
  const first = await client.completions.create({ ...completion('attn', prompt), max_tokens: 4 });
  const other = await client.completions.create({ ...completion('experts', prompt), max_tokens: 4 });
  const base = await client.completions.create({ ...completion('base', prompt), max_tokens: 4 });
  const again = await client.completions.create({ ...completion('attn', prompt), max_tokens: 4 });
  assert.ok(first.usage.prompt_tokens > 32, `prompt of ${first.usage.prompt_tokens} tokens`);
  assert.equal(first.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(other.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(base.usage.prompt_tokens_details.cached_tokens, 0);
  assert.ok(again.usage.prompt_tokens_details.cached_tokens >= 16);
  assert.equal(again.choices[0].text, first.choices[0].text);
});

test('an adapter that fails to load fails its requests, naming it; the others keep serving', { skip }, async () => {
  await assert.rejects(client.completions.create(completion('poisoned', 'Hello')), (e) => {
    assert.equal(e.status, 500);
    assert.match(e.message, /LoRA adapter 'poisoned' cannot be loaded/);
    assert.ok(e.message.includes(`tensor ${poisoned.tensor} holds NaN`), e.message);
    return true;
  });
  for (const m of MODELS) assert.equal((await client.completions.create(completion(m, 'Hello'))).choices[0].finish_reason, 'length');
  const metrics = await server.metrics();
  assert.equal(metrics.moe_lora_adapters_loaded, 2);
  const st = (d) => readFileSync(path.join(d, 'adapter_model.safetensors'));
  const headerBytes = (d) => 8 + Number(st(d).readBigUInt64LE(0));
  // The adapters' tensor data, held in memory (the files less their headers).
  assert.equal(metrics.moe_lora_adapter_bytes, st(ATTN).length - headerBytes(ATTN) + st(EXPERTS).length - headerBytes(EXPERTS));
  const bad = await server.fetch('/v1/embeddings', { body: { model: 'attn', input: 'hi' } });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /embeddings come from the base model/);
});

test('an adapter that does not fit the base stops the server at start, naming it', { skip }, async () => {
  const dir = path.join(tmp, 'rank0');
  mkdirSync(dir, { recursive: true });
  copyFileSync(path.join(ATTN, 'adapter_model.safetensors'), path.join(dir, 'adapter_model.safetensors'));
  writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ r: 8, lora_alpha: 16, target_modules: ['q_proj'] }));
  await assert.rejects(startServer([BASE, '-c', '256', '--lora-modules', `good=${EXPERTS}`, `narrow=${dir}`]), (e) => {
    assert.match(e.message, /--lora-modules: the adapter 'narrow' cannot be used: .*k_proj, which adapter_config.json's target_modules does not list/);
    return true;
  });
});

test('moe batch --lora-modules: each line picks its adapter by model, with the same greedy answers as the server', { skip }, async () => {
  const prompts = ['Once upon a time', 'The little dog'];
  const lines = [];
  const online = new Map();
  for (const m of MODELS)
    for (const p of prompts) {
      const id = `${m}|${p}`;
      lines.push(JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/completions', body: completion(m, p) }));
      online.set(id, (await client.completions.create(completion(m, p))).choices[0].text);
    }
  lines.push(JSON.stringify({ custom_id: 'unknown', method: 'POST', url: '/v1/completions', body: completion('nope', 'Hi') }));
  lines.push(JSON.stringify({ custom_id: 'embed', method: 'POST', url: '/v1/embeddings', body: { model: 'attn', input: 'hi' } }));
  const input = path.join(tmp, 'lora-batch.jsonl');
  const output = path.join(tmp, 'lora-batch.out.jsonl');
  writeFileSync(input, lines.join('\n') + '\n');
  const r = spawnSync(MOE_BIN, ['batch', BASE, input, output, '-t', '1', '--progress', 'none', '--served-model-name', 'base',
    '--lora-modules', `attn=${ATTN}`, `experts=${EXPERTS}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const answers = new Map();
  for (const file of [output, path.join(tmp, 'lora-batch.out.errors.jsonl')])
    for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
      const j = JSON.parse(line);
      answers.set(j.custom_id, j.response);
    }
  for (const [id, text] of online) {
    const a = answers.get(id);
    assert.equal(a.status_code, 200, id);
    assert.equal(a.body.model, id.split('|')[0], id);
    assert.equal(a.body.choices[0].text, text, id);
  }
  assert.notEqual(online.get('attn|Once upon a time'), online.get('base|Once upon a time'));
  assert.equal(answers.get('unknown').status_code, 404);
  assert.match(answers.get('unknown').body.error.message, /the model 'nope' does not exist; this server serves 'base' and its LoRA adapters 'attn', 'experts'/);
  assert.equal(answers.get('embed').status_code, 400);
  assert.match(answers.get('embed').body.error.message, /embeddings come from the base model/);
  // A name that is the base's, or an adapter that does not fit, stops the job before any line.
  const clash = spawnSync(MOE_BIN, ['batch', BASE, input, path.join(tmp, 'clash.jsonl'), '--served-model-name', 'base',
    '--lora-modules', `base=${ATTN}`], { encoding: 'utf8' });
  assert.notEqual(clash.status, 0);
  assert.match(clash.stderr, /the adapter name 'base' is the base model's name/);
});
