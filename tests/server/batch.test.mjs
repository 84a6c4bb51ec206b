// batch.test.mjs: the Batch API of `moe serve --data-dir` through the official `openai` client: upload a
// JSONL file, create a batch, poll it to `completed`, download the results and compare them with
// `moe batch` on the same input; a job killed (SIGKILL) and stopped (SIGTERM) in the middle resumes
// after each restart and ends with every custom_id exactly once; cancel, list, and the errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { toFile } from 'openai';
import { MOE_BIN, startServer } from './helpers.mjs';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'moe-batch-api-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const topics = ['a cat', 'a dog', 'the sea', 'a red ball', 'the park', 'a big tree', 'the sun', 'a little girl'];
// Chat lines sharing a system prompt (greedy), and one body the route refuses (temperature out of range).
function makeInput(n, maxTokens) {
  const lines = [];
  for (let i = 0; i < n; i++) {
    const body = {
      messages: [
        { role: 'system', content: 'You tell short stories.' },
        { role: 'user', content: `Tell me about ${topics[i % topics.length]} number ${i}.` },
      ],
      max_tokens: maxTokens,
      temperature: i === 3 ? 7 : 0,
    };
    lines.push(JSON.stringify({ custom_id: `task-${i}`, method: 'POST', url: '/v1/chat/completions', body }));
  }
  return lines.join('\n') + '\n';
}

// `moe batch` on the same input: custom_id -> { status, content }.
function cliReference(name, text) {
  const input = path.join(tmp, `${name}.jsonl`);
  const output = path.join(tmp, `${name}.out.jsonl`);
  writeFileSync(input, text);
  const r = spawnSync(MOE_BIN, ['batch', input, output, '-t', '1', '--progress', 'none'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const all = readFileSync(output, 'utf8') + readFileSync(path.join(tmp, `${name}.out.errors.jsonl`), 'utf8');
  return parseResults(all);
}

function parseResults(text) {
  const out = new Map();
  for (const line of text.split('\n').filter(Boolean)) {
    const j = JSON.parse(line);
    assert.ok(!out.has(j.custom_id), `custom_id ${j.custom_id} appears twice`);
    assert.match(j.id, /^batch_req_/);
    assert.equal(j.error, null);
    const body = j.response.body;
    out.set(j.custom_id, {
      status: j.response.status_code,
      content: j.response.status_code === 200 ? body.choices[0].message.content : body.error.param,
      finish: j.response.status_code === 200 ? body.choices[0].finish_reason : null,
    });
  }
  return out;
}

async function download(client, fileId) {
  if (!fileId) return '';
  const res = await client.files.content(fileId);
  return await res.text();
}

async function poll(client, id, done, { timeoutMs = 120000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (done(b)) return b;
    assert.ok(Date.now() < deadline, `batch ${id} still ${b.status}: ${JSON.stringify(b.request_counts)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('Batch API', () => {
  test('upload, create, poll to completed, download: the same answers as moe batch', async () => {
    const text = makeInput(24, 12);
    const want = cliReference('small', text);
    const server = await startServer(['--data-dir', path.join(tmp, 'data1'), '-t', '1']);
    try {
      const client = server.client();
      const file = await client.files.create({ file: await toFile(Buffer.from(text), 'input.jsonl'), purpose: 'batch' });
      assert.match(file.id, /^file-/);
      assert.equal(file.object, 'file');
      assert.equal(file.purpose, 'batch');
      assert.equal(file.bytes, Buffer.byteLength(text));
      assert.equal(file.filename, 'input.jsonl');
      assert.equal((await client.files.retrieve(file.id)).id, file.id);
      assert.equal(await download(client, file.id), text);

      const created = await client.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
        metadata: { job: 'small' },
      });
      assert.match(created.id, /^batch_/);
      assert.equal(created.object, 'batch');
      assert.ok(['validating', 'in_progress', 'finalizing', 'completed'].includes(created.status));
      assert.deepEqual(created.metadata, { job: 'small' });
      const b = await poll(client, created.id, (b) => b.status === 'completed');
      assert.deepEqual(b.request_counts, { total: 24, completed: 23, failed: 1 });
      assert.ok(b.completed_at >= b.in_progress_at && b.in_progress_at >= b.created_at);
      const got = parseResults((await download(client, b.output_file_id)) + (await download(client, b.error_file_id)));
      assert.deepEqual(got, want);
      assert.deepEqual(got.get('task-3'), { status: 400, content: 'temperature', finish: null });

      const list = await client.batches.list();
      assert.ok(list.data.some((x) => x.id === b.id));
      // Finished: cannot be cancelled.
      const again = await server.fetch(`/v1/batches/${b.id}/cancel`, { method: 'POST' });
      assert.equal(again.status, 409, again.text);
    } finally {
      assert.equal(await server.stop(), 0, server.stderr);
    }
  });

  test('a server killed and restarted mid-job loses and duplicates nothing', async () => {
    const n = 160;
    const text = makeInput(n, 48);
    const want = cliReference('restart', text);
    const dataDir = path.join(tmp, 'data2');
    const args = ['--data-dir', dataDir, '-t', '1', '--batch-in-flight', '2'];
    let server = await startServer(args);
    let client = server.client();
    const file = await client.files.create({ file: await toFile(Buffer.from(text), 'big.jsonl'), purpose: 'batch' });
    const { id } = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const progress = [];
    for (const signal of ['SIGKILL', 'SIGTERM']) {
      const before = progress.length ? progress.at(-1) : 0;
      const b = await poll(client, id, (b) => b.request_counts.completed >= before + 20 || b.status === 'completed');
      assert.equal(b.status, 'in_progress', `the job finished before the ${signal} restart; make it longer`);
      progress.push(b.request_counts.completed);
      await server.stop(signal);
      server = await startServer(args);
      client = server.client();
      const resumed = await client.batches.retrieve(id);
      assert.ok(['in_progress', 'validating'].includes(resumed.status), resumed.status);
    }
    const b = await poll(client, id, (b) => b.status === 'completed');
    assert.deepEqual(b.request_counts, { total: n, completed: n - 1, failed: 1 });
    const got = parseResults((await download(client, b.output_file_id)) + (await download(client, b.error_file_id)));
    assert.equal(got.size, n);
    assert.deepEqual(got, want);
    assert.equal(await server.stop(), 0, server.stderr);
  });

  test('cancel, and the errors', async () => {
    const server = await startServer(['--data-dir', path.join(tmp, 'data3'), '-t', '1', '--batch-in-flight', '1']);
    try {
      const client = server.client();
      const text = makeInput(200, 48);
      const file = await client.files.create({ file: await toFile(Buffer.from(text), 'c.jsonl'), purpose: 'batch' });
      const created = await client.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      });
      const cancelling = await client.batches.cancel(created.id);
      assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), cancelling.status);
      const b = await poll(client, created.id, (b) => b.status === 'cancelled');
      assert.ok(b.cancelled_at >= b.created_at);
      const got = parseResults((await download(client, b.output_file_id)) + (await download(client, b.error_file_id)));
      assert.ok(got.size < 200, `${got.size} answered`);

      const wrongPurpose = await server.fetch('/v1/batches', {
        body: { input_file_id: 'file-nope', endpoint: '/v1/chat/completions', completion_window: '24h' },
      });
      assert.equal(wrongPurpose.status, 404);
      assert.equal(wrongPurpose.json.error.param, 'input_file_id');
      const badEndpoint = await server.fetch('/v1/batches', {
        body: { input_file_id: file.id, endpoint: '/v1/images', completion_window: '24h' },
      });
      assert.equal(badEndpoint.status, 400);
      assert.equal(badEndpoint.json.error.param, 'endpoint');
      const badWindow = await server.fetch('/v1/batches', {
        body: { input_file_id: file.id, endpoint: '/v1/completions', completion_window: '1h' },
      });
      assert.equal(badWindow.json.error.param, 'completion_window');
      await assert.rejects(client.batches.retrieve('batch_missing'), (e) => e.status === 404);
      await assert.rejects(client.files.retrieve('file-missing'), (e) => e.status === 404);
      await assert.rejects(
        client.files.create({ file: await toFile(Buffer.from('x'), 'x.jsonl'), purpose: 'fine-tune' }),
        (e) => e.status === 400 && e.param === 'purpose',
      );
    } finally {
      assert.equal(await server.stop(), 0, server.stderr);
    }
  });

  test('uploads over the limit get 413', async () => {
    const server = await startServer(['--data-dir', path.join(tmp, 'data4'), '-t', '1', '--max-upload-mib', '1']);
    try {
      const client = server.client();
      const big = Buffer.alloc((1 << 20) + 10, 'x');
      await assert.rejects(
        client.files.create({ file: await toFile(big, 'big.jsonl'), purpose: 'batch' }),
        (e) => e.status === 413,
      );
      assert.equal((await client.files.list()).data.length, 0);
    } finally {
      assert.equal(await server.stop(), 0, server.stderr);
    }
  });
});
