// raw.mjs: raw TCP for the HTTP-framing tests (http.test.mjs, bench/soak.mjs): send exact bytes, optionally
// half-close, collect everything the server writes until it closes (or a timeout), and split the bytes
// into HTTP/1.1 responses (Content-Length or chunked bodies, 1xx interim responses skipped). The npm
// clients cannot send malformed requests, pipeline, or half-close, which is why these exist.
import net from 'node:net';

// Connects, writes `chunks` (strings or Buffers, one write each), half-closes when asked, and resolves
// with { data: Buffer, closed: bool, ms } once the server closes or `timeoutMs` passes.
export function exchange(port, chunks, { halfClose = false, timeoutMs = 5000, gapMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const sock = net.connect({ port, host: '127.0.0.1' });
    const parts = [];
    let done = false;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ data: Buffer.concat(parts), closed, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', (d) => parts.push(d));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', (e) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? finish(true) : reject(e)));
    sock.on('connect', async () => {
      for (const c of [].concat(chunks)) {
        if (sock.destroyed) return;
        sock.write(c);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
      if (halfClose) sock.end();
    });
  });
}

// Splits a byte stream into responses: [{ status, headers: {lowercase: value}, body: string }].
// Stops at the first incomplete response (or at a body whose length it cannot know).
export function parseResponses(buf, { headRequests = [] } = {}) {
  const out = [];
  let pos = 0;
  let index = 0;
  while (pos < buf.length) {
    const end = buf.indexOf('\r\n\r\n', pos);
    if (end < 0) break;
    const lines = buf.subarray(pos, end).toString('latin1').split('\r\n');
    const m = lines[0].match(/^HTTP\/1\.[01] (\d{3})/);
    if (!m) throw new Error(`not a status line: ${JSON.stringify(lines[0])}`);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).trim().toLowerCase();
      headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
    }
    pos = end + 4;
    const status = Number(m[1]);
    if (status >= 100 && status < 200) continue;  // interim: the final response follows
    const isHead = headRequests.includes(index);
    let body = '';
    if (isHead || status === 204 || status === 304) {
      // no body
    } else if ((headers['transfer-encoding'] || '').toLowerCase() === 'chunked') {
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', pos);
        if (le < 0) return out;
        const size = parseInt(buf.subarray(pos, le).toString('latin1'), 16);
        pos = le + 2;
        if (size === 0) {
          const te = buf.indexOf('\r\n', pos);
          if (te < 0) return out;
          pos = te + 2;
          break;
        }
        if (pos + size + 2 > buf.length) return out;
        parts.push(buf.subarray(pos, pos + size));
        pos += size + 2;
      }
      body = Buffer.concat(parts).toString('utf8');
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (pos + n > buf.length) return out;
      body = buf.subarray(pos, pos + n).toString('utf8');
      pos += n;
    } else {
      body = buf.subarray(pos).toString('utf8');
      pos = buf.length;
    }
    out.push({ status, headers, body });
    index++;
  }
  return out;
}

// One request's bytes: `head` lines joined with CRLF, a blank line, then the body.
export function req(lines, body = '') {
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

// A JSON POST with a correct Content-Length.
export function post(path, obj, extra = []) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  return req([`POST ${path} HTTP/1.1`, 'Host: x', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, ...extra], body);
}

// GET /health over a fresh connection: { status, ms }.
export async function timedHealth(port, timeoutMs = 5000) {
  const r = await exchange(port, req(['GET /health HTTP/1.1', 'Host: x', 'Connection: close']), { timeoutMs });
  const res = parseResponses(r.data);
  return { status: res[0]?.status ?? 0, ms: r.ms };
}
