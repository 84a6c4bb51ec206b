// auth.test.mjs: a server started with --api-key-file: the right key works, a wrong or missing key
// gets 401 on every route (unknown ones included) but /health.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { startServer } from './helpers.mjs';

const KEY = 'sk-moe-test-7f3a9c';
let server;
let dir;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'moe-key-'));
  writeFileSync(path.join(dir, 'key'), `${KEY}\n`);
  server = await startServer(['--api-key-file', path.join(dir, 'key'), '--served-model-name', 'storyteller']);
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
  rmSync(dir, { recursive: true, force: true });
});

test('the right key is accepted', async () => {
  const client = server.client({ apiKey: KEY });
  const r = await client.chat.completions.create({
    model: 'storyteller',
    messages: [{ role: 'user', content: 'Hello' }],
    max_tokens: 3,
  });
  assert.equal(r.model, 'storyteller');
  assert.equal((await client.models.list()).data[0].id, 'storyteller');
});

test('a wrong key gets 401 from the client', async () => {
  const client = server.client({ apiKey: 'sk-wrong' });
  await assert.rejects(
    client.chat.completions.create({ model: 'storyteller', messages: [{ role: 'user', content: 'Hi' }] }),
    (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    },
  );
  await assert.rejects(client.models.list(), (e) => e.status === 401);
  await assert.rejects(client.embeddings.create({ model: 'storyteller', input: 'x' }), (e) => e.status === 401);
});

test('every route but /health needs the key', async () => {
  for (const [route, method] of [
    ['/v1/completions', 'POST'],
    ['/v1/embeddings', 'POST'],
    ['/tokenize', 'POST'],
    ['/detokenize', 'POST'],
    ['/v1/models', 'GET'],
    ['/metrics', 'GET'],
    ['/v1/unknown', 'GET'],
  ]) {
    const r = await server.fetch(route, { method, body: method === 'POST' ? { prompt: 'x' } : undefined });
    assert.equal(r.status, 401, `${method} ${route}`);
    assert.equal(r.json.error.code, 'invalid_api_key');
  }
  assert.equal((await server.fetch('/health', { method: 'GET' })).status, 200);
  const m = await fetch(`${server.baseURL}/metrics`, { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(m.status, 200);
  const unknown = await server.fetch('/v1/unknown', { method: 'GET', headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(unknown.status, 404);
});
