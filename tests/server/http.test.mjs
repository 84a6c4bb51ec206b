// http.test.mjs: the HTTP/1.1 layer against hostile and unusual clients, over raw sockets (raw.mjs):
// strict framing (RFC 9112: one valid Content-Length, no CL with chunked, unknown codings refused, a
// GET's body never read as a second request), pipelining answered in order, half-close answered, the
// whole-request deadline (slowloris cannot starve /health), connection limits, the API key checked
// before the body is read, per-route body limits, Range ignored, HEAD/OPTIONS/405 with Allow.
// Each case failed on the cpp-httplib 0.11 transport this replaced.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { startServer } from './helpers.mjs';
import { exchange, parseResponses, post, req, timedHealth } from './raw.mjs';

let server;
let port;

before(async () => {
  server = await startServer(['--request-timeout', '3', '--max-connections-per-ip', '300']);
  port = server.port;
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

async function send(bytes, opts) {
  const r = await exchange(port, bytes, opts);
  return { ...r, responses: parseResponses(r.data, opts) };
}

test('pipelined requests are all answered, in order', async () => {
  const r = await send(
    [
      req(['GET /health HTTP/1.1', 'Host: x']) +
        post('/tokenize', { prompt: 'Once upon a time' }) +
        req(['GET /v1/models HTTP/1.1', 'Host: x']) +
        post('/detokenize', { tokens: [1, 2, 3] }, ['Connection: close']),
    ],
    { timeoutMs: 10000 },
  );
  assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 200, 200], r.data.toString());
  assert.equal(JSON.parse(r.responses[0].body).status, 'ok');
  assert.ok(Array.isArray(JSON.parse(r.responses[1].body).tokens));
  assert.equal(JSON.parse(r.responses[2].body).object, 'list');
  assert.equal(typeof JSON.parse(r.responses[3].body).prompt, 'string');
  assert.ok(r.closed, 'Connection: close on the last request closes the connection');
});

test('a request followed by a half-close still gets its answer', async () => {
  const h = await send(req(['GET /health HTTP/1.1', 'Host: x']), { halfClose: true });
  assert.equal(h.responses[0]?.status, 200, h.data.toString());
  const g = await send(post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 8, temperature: 0 }), {
    halfClose: true,
    timeoutMs: 20000,
  });
  assert.equal(g.responses[0]?.status, 200, g.data.toString());
  assert.equal(JSON.parse(g.responses[0].body).usage.completion_tokens, 8);
  assert.ok(g.closed);
});

test('Content-Length must be exactly one valid number', async () => {
  const body = '{"prompt":"Hi","max_tokens":1}';
  for (const cl of [['Content-Length: -1'], ['Content-Length: abc'], ['Content-Length: 1e3'], ['Content-Length: +30'],
    ['Content-Length: 30', 'Content-Length: 31'], ['Content-Length: 30', 'Content-Length: 30'], ['Content-Length: 30, 30'],
    ['Content-Length: 99999999999999999999999']]) {
    const r = await send(req(['POST /v1/completions HTTP/1.1', 'Host: x', ...cl], body));
    assert.equal(r.responses[0]?.status, 400, `${cl.join(' | ')}: ${r.data}`);
    assert.match(JSON.parse(r.responses[0].body).error.message, /Content-Length/);
    assert.ok(r.closed, `${cl}: the connection must close after a framing error`);
  }
});

test('Content-Length with chunked, unknown transfer codings and content codings are refused', async () => {
  const cases = [
    [['Transfer-Encoding: chunked', 'Content-Length: 5'], '5\r\nhello\r\n0\r\n\r\n', 400],
    [['Transfer-Encoding: gzip, chunked'], '0\r\n\r\n', 501],
    [['Transfer-Encoding: gzip'], 'xxxx', 501],
    [['Transfer-Encoding: chunked, chunked'], '0\r\n\r\n', 400],
    [['Transfer-Encoding: identity'], '{}', 501],
    [['Content-Encoding: gzip', 'Content-Length: 2'], '{}', 415],
  ];
  for (const [headers, body, status] of cases) {
    const r = await send(req(['POST /tokenize HTTP/1.1', 'Host: x', ...headers], body));
    assert.equal(r.responses[0]?.status, status, `${headers.join(' | ')}: ${r.data}`);
  }
});

test('a chunked body is decoded; a malformed one is a 400', async () => {
  const body = JSON.stringify({ prompt: 'Once upon a time' });
  const chunked = `${(10).toString(16)}\r\n${body.slice(0, 10)}\r\n${(body.length - 10).toString(16)};ext=1\r\n${body.slice(10)}\r\n0\r\nX-Trailer: y\r\n\r\n`;
  const ok = await send(req(['POST /tokenize HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked', 'Connection: close'], chunked));
  assert.equal(ok.responses[0]?.status, 200, ok.data.toString());
  for (const bad of ['zz\r\nabc\r\n0\r\n\r\n', '3\r\nabcd\r\n0\r\n\r\n', '-1\r\n\r\n', '3\nabc\n0\n\n']) {
    const r = await send(req(['POST /tokenize HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked'], bad));
    assert.equal(r.responses[0]?.status, 400, `${JSON.stringify(bad)}: ${r.data}`);
  }
});

test('a GET with a body is refused, and its body is never parsed as a second request', async () => {
  const smuggled = req(['GET /v1/models HTTP/1.1', 'Host: x']);
  const r = await send(req(['GET /health HTTP/1.1', 'Host: x', `Content-Length: ${smuggled.length}`], smuggled));
  assert.equal(r.responses.length, 1, r.data.toString());
  assert.equal(r.responses[0].status, 400);
  assert.ok(r.closed);
});

test('malformed request lines and headers are 400, unknown versions 505', async () => {
  const cases = [
    ['GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n', 400],
    ['GET /health HTTP/1.1\r\nHost: x\r\n folded: 1\r\n\r\n', 400],
    ['GET /health HTTP/1.1\r\n\r\n', 400],  // no Host
    ['GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400],
    ['GET  /health HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['GET /health HTTP/2.0\r\nHost: x\r\n\r\n', 505],
    ['GET /health\r\n\r\n', 400],
    ['GET /health HTTP/1.1\nHost: x\n\n', 400],
    [`GET /${'a'.repeat(70000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    [`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70000)}\r\n\r\n`, 431],
  ];
  for (const [bytes, status] of cases) {
    const r = await send(bytes);
    assert.equal(r.responses[0]?.status, status, `${JSON.stringify(bytes.slice(0, 60))}: ${r.data.toString().slice(0, 200)}`);
  }
});

test('a Range header on a POST is ignored: the whole JSON, 200', async () => {
  const r = await send(post('/tokenize', { prompt: 'Once upon a time there was a cat' }, ['Range: bytes=0-5', 'Connection: close']));
  assert.equal(r.responses[0]?.status, 200);
  assert.ok(JSON.parse(r.responses[0].body).tokens.length > 3);
  assert.equal(r.responses[0].headers['content-range'], undefined);
  const g = await send(req(['GET /v1/models HTTP/1.1', 'Host: x', 'Range: bytes=0-3', 'Connection: close']));
  assert.equal(g.responses[0]?.status, 200);
  assert.equal(JSON.parse(g.responses[0].body).object, 'list');
});

test('HEAD, OPTIONS, 405 with Allow, and 404 only for unknown paths', async () => {
  const head = await send(req(['HEAD /health HTTP/1.1', 'Host: x', 'Connection: close']), { headRequests: [0] });
  assert.equal(head.responses[0]?.status, 200);
  assert.equal(head.data.toString().split('\r\n\r\n')[1], '', 'HEAD has no body');
  assert.equal(head.responses[0].headers['accept-ranges'], undefined);
  const wrong = await send(req(['GET /v1/completions HTTP/1.1', 'Host: x', 'Connection: close']));
  assert.equal(wrong.responses[0]?.status, 405);
  assert.match(wrong.responses[0].headers.allow, /POST/);
  assert.match(JSON.parse(wrong.responses[0].body).error.message, /POST/);
  const del = await send(req(['DELETE /health HTTP/1.1', 'Host: x', 'Connection: close']));
  assert.equal(del.responses[0]?.status, 405);
  assert.match(del.responses[0].headers.allow, /GET/);
  const opt = await send(req(['OPTIONS /v1/chat/completions HTTP/1.1', 'Host: x', 'Connection: close']));
  assert.equal(opt.responses[0]?.status, 204);
  assert.match(opt.responses[0].headers.allow, /POST/);
  assert.match(opt.responses[0].headers.allow, /OPTIONS/);
  const api = await send(req(['GET /api/chat HTTP/1.1', 'Host: x', 'Connection: close']));
  assert.equal(api.responses[0]?.status, 405);
  const model = await send(req(['POST /v1/models/abc HTTP/1.1', 'Host: x', 'Content-Length: 0', 'Connection: close']));
  assert.equal(model.responses[0]?.status, 405);
  const unknown = await send(req(['GET /nope HTTP/1.1', 'Host: x', 'Connection: close']));
  assert.equal(unknown.responses[0]?.status, 404);
  const unknownMethod = await send(req(['BREW /health HTTP/1.1', 'Host: x', 'Connection: close']));
  assert.equal(unknownMethod.responses[0]?.status, 501);
});

test('a body over the route limit is refused with 413 before it is sent', async () => {
  const r = await send(req(['POST /v1/completions HTTP/1.1', 'Host: x', `Content-Length: ${64 << 20}`]), { timeoutMs: 3000 });
  assert.equal(r.responses[0]?.status, 413, r.data.toString());
  assert.ok(r.closed);
  assert.ok(r.ms < 2000, `413 took ${r.ms} ms`);
});

test('the whole request has a deadline; 200 slowloris connections do not slow /health', async (t) => {
  const sockets = [];
  let closedByServer = 0;
  for (let i = 0; i < 200; i++) {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => {});
    s.on('close', () => closedByServer++);
    sockets.push(s);
  }
  const line = 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ';
  let pos = 0;
  const drip = setInterval(() => {
    for (const s of sockets) if (!s.destroyed) s.write(pos < line.length ? line[pos] : 'a');
    pos++;
  }, 1000);
  const times = [];
  try {
    const t0 = performance.now();
    while (performance.now() - t0 < 5000) {
      const h = await timedHealth(port, 3000);
      assert.equal(h.status, 200);
      times.push(h.ms);
      await new Promise((r) => setTimeout(r, 100));
    }
    // --request-timeout 3: every slow connection is closed (408) within about 3 s of its first byte.
    const deadline = performance.now() + 4000;
    while (closedByServer < 200 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  } finally {
    clearInterval(drip);
    for (const s of sockets) s.destroy();
  }
  times.sort((a, b) => a - b);
  const med = times[Math.floor(times.length / 2)];
  const max = times[times.length - 1];
  t.diagnostic(`/health under 200 slowloris connections: ${times.length} probes, median ${med.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
  assert.ok(med < 100, `median /health ${med} ms`);
  assert.ok(max < 1000, `max /health ${max} ms`);
  assert.ok(closedByServer >= 200, `${closedByServer} of 200 slow connections were closed by the deadline`);
});

test('connections per client are bounded: the oldest idle one makes room, /health still answers', async () => {
  const s2 = await startServer(['--max-connections-per-ip', '20']);
  try {
    const sockets = [];
    const closed = new Set();
    for (let i = 0; i < 30; i++) {
      const s = net.connect({ port: s2.port, host: '127.0.0.1' });
      s.on('error', () => {});
      s.on('close', () => closed.add(i));
      sockets.push(s);
      await new Promise((r) => s.on('connect', r));
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 300));
    const h = await timedHealth(s2.port);
    assert.equal(h.status, 200);
    assert.ok(closed.size >= 10, `${closed.size} connections closed; 30 were open against a limit of 20`);
    assert.ok([...closed].every((i) => i < 21), `a newer connection was closed: ${[...closed]}`);
    for (const s of sockets) s.destroy();
  } finally {
    assert.equal(await s2.stop(), 0, s2.stderr);
  }
});

test('the API key is checked before the body is read', async () => {
  const s2 = await startServer(['--api-key', 'sk-test-1234']);
  try {
    // Only the head of a 4 MB request is sent: the 401 must come without the body.
    const r = await exchange(s2.port, req(['POST /v1/completions HTTP/1.1', 'Host: x', `Content-Length: ${4 << 20}`]), { timeoutMs: 3000 });
    const res = parseResponses(r.data);
    assert.equal(res[0]?.status, 401, r.data.toString());
    assert.ok(r.closed);
    const ok = await exchange(s2.port, post('/tokenize', { prompt: 'Hi' }, ['Authorization: Bearer sk-test-1234', 'Connection: close']));
    assert.equal(parseResponses(ok.data)[0]?.status, 200);
    // Preflight needs no key; /health neither.
    const pre = await exchange(s2.port, req(['OPTIONS /v1/completions HTTP/1.1', 'Host: x', 'Connection: close']));
    assert.equal(parseResponses(pre.data)[0]?.status, 204);
  } finally {
    assert.equal(await s2.stop(), 0, s2.stderr);
  }
});

test('CORS is off by default: no Access-Control headers', async () => {
  const pre = await send(req(['OPTIONS /v1/chat/completions HTTP/1.1', 'Host: x', 'Origin: http://a.example',
    'Access-Control-Request-Method: POST', 'Connection: close']));
  assert.equal(pre.responses[0]?.status, 204);
  assert.equal(pre.responses[0].headers['access-control-allow-origin'], undefined);
  const h = await send(req(['GET /health HTTP/1.1', 'Host: x', 'Origin: http://a.example', 'Connection: close']));
  assert.equal(h.responses[0].headers['access-control-allow-origin'], undefined);
});

test('--cors-origin: preflight answered, headers on answers (errors too), other origins get none', async () => {
  const s2 = await startServer(['--cors-origin', 'http://a.example', '--cors-origin', 'http://b.example', '--api-key', 'k1']);
  const one = async (bytes) => parseResponses((await exchange(s2.port, bytes)).data)[0];
  try {
    const pre = await one(req(['OPTIONS /v1/chat/completions HTTP/1.1', 'Host: x', 'Origin: http://b.example',
      'Access-Control-Request-Method: POST', 'Access-Control-Request-Headers: authorization, content-type', 'Connection: close']));
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'http://b.example');
    assert.match(pre.headers['access-control-allow-methods'], /POST/);
    assert.equal(pre.headers['access-control-allow-headers'], 'authorization, content-type');
    assert.ok(Number(pre.headers['access-control-max-age']) > 0);
    assert.match(pre.headers.vary, /Origin/);
    const ok = await one(post('/tokenize', { prompt: 'Hi' }, ['Origin: http://a.example', 'Authorization: Bearer k1', 'Connection: close']));
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['access-control-allow-origin'], 'http://a.example');
    const denied = await one(post('/tokenize', { prompt: 'Hi' }, ['Origin: http://a.example', 'Connection: close']));
    assert.equal(denied.status, 401);
    assert.equal(denied.headers['access-control-allow-origin'], 'http://a.example', 'a browser must be able to read the 401');
    const other = await one(req(['GET /health HTTP/1.1', 'Host: x', 'Origin: http://evil.example', 'Connection: close']));
    assert.equal(other.status, 200);
    assert.equal(other.headers['access-control-allow-origin'], undefined);
  } finally {
    assert.equal(await s2.stop(), 0, s2.stderr);
  }
  const any = await startServer(['--cors-origin', '*']);
  try {
    const h = parseResponses((await exchange(any.port, req(['GET /health HTTP/1.1', 'Host: x', 'Origin: http://z.example', 'Connection: close']))).data)[0];
    assert.equal(h.headers['access-control-allow-origin'], '*');
  } finally {
    assert.equal(await any.stop(), 0, any.stderr);
  }
});

test('a body nested millions deep is a 400 naming the depth; 20 of them (and 20 wide ones) do not grow memory', async (t) => {
  const n = 3_000_000;
  // In `user`, a field the server accepts and does not use (unknown fields are a 400 of their own).
  const deep = `{"prompt":"Hi","max_tokens":1,"user":${'['.repeat(n)}${']'.repeat(n)}}`;
  const wide = `{"prompt":"Hi","max_tokens":1,"user":[${Array(1_500_000).fill('[]').join(',')}]}`;
  for (const [name, body, status] of [['deep', deep, 400], ['wide', wide, 200]]) {
    const rss = [];
    for (let i = 0; i < 20; i++) {
      const r = await server.fetch('/v1/completions', { body });
      assert.equal(r.status, status, r.text.slice(0, 300));
      if (status === 400) assert.match(r.json.error.message, /256 levels deep/);
      rss.push(server.rssKiB() / 1024);
    }
    const growth = Math.max(...rss) - rss[0];
    t.diagnostic(`${name} (${(body.length / 1e6).toFixed(1)} MB) x 20: RSS after each ${rss.map((x) => x.toFixed(0)).join(' ')} MB`);
    assert.ok(growth < 100, `${name}: RSS grew by ${growth.toFixed(0)} MB over 20 requests`);
  }
});
