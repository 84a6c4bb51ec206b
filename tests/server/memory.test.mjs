// memory.test.mjs: a load test at a KV pool sized from memory. The available memory given to the server
// (--memory-available) is chosen so that the pool `moe serve` sizes from it holds about 1.5 sequences of
// the context: the planner (`moe plan --serve --json`, the same function the server calls) gives the
// fixed costs, and the server's /metrics must show a pool of that size, limited by memory. Both processes
// count their own resident size at start, which differs by some hundred KB between runs (10 KB blocks
// here), so the pool is checked against the server's own reported costs exactly and the two processes'
// costs against each other in bytes. Then 8 concurrent greedy requests, which together need several
// times that pool, must all complete with the same text each gives alone: the engine preempts and
// recomputes sequences, and the process lives on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { MOE_BIN, startServer } from './helpers.mjs';

const MODEL = 'stories260K-moe';
const CTX = 512;
const SEQS = 8;
const TARGET_BLOCKS = 48; // 1.5 sequences of 512 tokens (32 blocks of 16 tokens each); 8 requests need ~112

let server;
let available;
let probe;
let fixed;

before(async () => {
  probe = JSON.parse(
    execFileSync(MOE_BIN, ['plan', '--serve', '--json', '--memory-available', '1GiB', '-c', String(CTX), '-np', String(SEQS)], {
      encoding: 'utf8',
    }),
  );
  fixed = probe.workspace_bytes + probe.overhead_bytes + probe.weights_resident_bytes + probe.weights_mapped_bytes;
  available = Math.ceil((fixed + (TARGET_BLOCKS + 0.5) * probe.kv_block_bytes) / probe.utilization);
  server = await startServer(['-c', String(CTX), '-np', String(SEQS), '--memory-available', String(available)]);
});
after(async () => {
  if (server && server.exitCode === null) assert.equal(await server.stop(), 0, server.stderr);
});

test('the pool is sized from the given memory, and a load beyond it ends in preemptions, not a dead server', async () => {
  const m0 = await server.metrics();
  assert.equal(m0.moe_memory_available_bytes, available);
  assert.match(server.stderr, /\(limited by available memory\)/);
  // The server's fixed costs are the planner's but for its own resident size at start.
  const fixedServer =
    m0.moe_workspace_bytes + m0.moe_memory_overhead_bytes + m0.moe_weights_resident_bytes + m0.moe_weights_mapped_bytes;
  const drift = fixed - fixedServer;
  assert.ok(Math.abs(drift) <= 1 << 20, `the server's fixed costs ${fixedServer} are ${drift} bytes from the plan's ${fixed}`);
  // available * utilization = fixed + (TARGET + 0.5) blocks (rounded up): the server's pool is what is left
  // after its own fixed costs, in whole blocks, and at least one sequence.
  const blocks = m0.moe_kv_blocks_total;
  const expected = Math.max(CTX / 16, TARGET_BLOCKS + 0.5 + drift / probe.kv_block_bytes);
  assert.ok(Math.abs(blocks - expected) <= 1, `pool of ${blocks} blocks, expected ${expected.toFixed(2)} (planned ${TARGET_BLOCKS})`);
  assert.ok(blocks >= CTX / 16, 'the pool holds at least one full sequence');
  assert.equal(m0.moe_kv_pool_bytes, blocks * m0.moe_kv_block_bytes);

  const client = server.client();
  const ask = (i) =>
    client.completions.create({
      model: MODEL,
      prompt: `Once upon a time, story number ${i} began`,
      max_tokens: 200,
      temperature: 0,
      ignore_eos: true,
    });
  const alone = await ask(3);
  const results = await Promise.all(Array.from({ length: SEQS }, (_, i) => ask(i)));
  for (const r of results) {
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 200);
  }
  assert.equal(results[3].choices[0].text, alone.choices[0].text, 'a preempted and recomputed sequence changed its text');

  const m1 = await server.metrics();
  assert.ok(m1.moe_preemptions_total > 0, 'no preemption: the load fitted the pool');
  assert.equal(m1.moe_kv_blocks_total, blocks);
  assert.equal(m1.moe_num_requests_running, 0);
  assert.equal((await server.fetch('/health', { method: 'GET' })).status, 200);
  assert.equal(server.exitCode, null, 'the server died under load');
});
