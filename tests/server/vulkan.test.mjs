// vulkan.test.mjs: `moe serve --device vulkan` through the official `openai` client on the tiny-mixtral
// fixture: the server runs the model on the Vulkan device (lavapipe in CI), says so at start, sizes its
// KV pool by the device budget too (the pool is mirrored on the card), and answers — greedy answers
// equal to the same requests alone while several run at once (continuous batching on the device). A
// budget that cannot hold one sequence stops the start, naming the flags. Skipped where no Vulkan
// device exists (`moe info --devices` lists none); in CI (CI=true) that is a failure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { MOE_BIN, ROOT, startServer } from './helpers.mjs';

const FIXTURES = process.env.MOE_FIXTURES || path.join(ROOT, '../shared');
const MODEL = path.join(FIXTURES, 'models/tiny-mixtral/tiny-mixtral.Q4_K_M.gguf');
const info = spawnSync(MOE_BIN, ['info', '--devices'], { encoding: 'utf8' });
const hasVulkan = info.status === 0 && /vulkan:\d/.test(info.stdout);
if (process.env.CI === 'true' && (!hasVulkan || !existsSync(MODEL)))
  throw new Error(`CI must run the Vulkan server tests: ${hasVulkan ? `no ${MODEL}` : `no Vulkan device:\n${info.stdout}${info.stderr}`}`);
const skip = !existsSync(MODEL) ? `fixture ${MODEL} not found` : !hasVulkan ? 'no Vulkan device (install mesa-vulkan-drivers)' : false;

let server;
let client;
before(async () => {
  if (skip) return;
  // 40 MiB: the weights and workspace fit, 16 sequences of 2,048 tokens (32 MiB of f16 KV) do not.
  server = await startServer([MODEL, '--device', 'vulkan', '--gpu-memory', '40M', '-c', '2048', '-np', '16']);
  client = server.client();
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

test('the server says it runs on the device, with the KV pool sized by the device budget', { skip }, async () => {
  assert.match(server.stderr, /moe serve: device: vulkan \(.+\): budget .*experts on the card \d+ of \d+/);
  assert.match(server.stderr, /KV pool .*limited by device memory \(--gpu-memory\)/);
});

test('greedy answers on the device are the same alone and in a batch', { skip }, async () => {
  const prompts = ['Once upon a time', 'The little dog', 'She said', 'In the morning'];
  const req = (p) => ({ model: 'tiny-mixtral.Q4_K_M', prompt: p, max_tokens: 12, temperature: 0 });
  const alone = [];
  for (const p of prompts) alone.push((await client.completions.create(req(p))).choices[0]);
  assert.ok(alone.some((c) => c.text.length > 0), 'the device generated nothing');
  const together = await Promise.all(prompts.map((p) => client.completions.create(req(p))));
  together.forEach((r, i) => {
    assert.equal(r.choices[0].text, alone[i].text, prompts[i]);
    assert.equal(r.choices[0].finish_reason, alone[i].finish_reason, prompts[i]);
  });
});

test('a budget that cannot hold one sequence stops the start, naming -c and --gpu-memory', { skip }, async () => {
  await assert.rejects(startServer([MODEL, '--device', 'vulkan', '--gpu-memory', '9M', '-c', '2048']), (e) => {
    assert.match(e.message, /does not fit the device budget .*give a smaller -c or a larger --gpu-memory/);
    return true;
  });
});
