// web_ui.test.mjs: the chat page at GET /, driven in Debian's headless Chromium through playwright-core,
// against a real `moe serve` with an API key: the page asks for the key, sends a message, shows the
// reply while it streams (the same text as the OpenAI route's greedy answer), live TTFT and tokens/s,
// the per-layer routing view of the reply; after a reload the conversation is still there; a hostile
// reply (hostile.mjs) renders as text and runs nothing; when the server goes away the page says so and
// recovers when it is back. Screenshots go to build/web-ui-*.png. Without /usr/bin/chromium the test
// is skipped with a message, except under CI=true, where that fails.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, startServer } from './helpers.mjs';
import { HOSTILE } from './hostile.mjs';

const CHROMIUM = process.env.MOE_CHROMIUM || '/usr/bin/chromium';
const KEY = 'sekrit';
const SHOTS = path.join(ROOT, 'build');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === 'true') throw new Error(`${CHROMIUM} is missing (scripts/install-deps.sh installs it)`);
const skip = haveChromium ? false : `${CHROMIUM} is missing: install the Debian package chromium to run the browser test`;

let server;
let browser;
let page;
const pageErrors = [];
const dialogs = [];

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  server = await startServer(['--api-key', KEY]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss();
  });
  mkdirSync(SHOTS, { recursive: true });
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

const status = () => page.locator('#server-status').textContent();

async function waitReplyDone(n) {
  // n assistant messages, none pending: the Stop button is hidden again and the meta line is final.
  await page.waitForFunction((want) => {
    const msgs = document.querySelectorAll('.msg.assistant');
    return msgs.length === want && document.getElementById('stop-btn').hidden;
  }, n, { timeout: 120000 });
}

async function openaiGreedy(messages, maxTokens) {
  const r = await server.fetch('/v1/chat/completions', {
    headers: { authorization: `Bearer ${KEY}` },
    body: { messages, temperature: 0, max_tokens: maxTokens },
  });
  assert.equal(r.status, 200, r.text);
  return r.json.choices[0].message.content;
}

const squash = (s) => s.replace(/\s+/g, '');

test('the chat page: key, streamed reply, stats, routing view, reload, hostile reply, server restart', { skip }, async () => {
  const home = await fetch(`${server.baseURL}/`);
  assert.equal(home.status, 200);
  assert.match(home.headers.get('content-security-policy'), /script-src 'self'/);

  await page.goto(`${server.baseURL}/`);
  await page.waitForFunction(() => /API key needed/.test(document.getElementById('server-status').textContent));
  await page.fill('#api-key', KEY);
  await page.dispatchEvent('#api-key', 'change');
  await page.waitForFunction(() => document.getElementById('server-status').classList.contains('ok'));
  assert.match(await status(), /server up/);
  assert.match(await page.locator('#model').inputValue(), /:latest$/);

  // Greedy settings, so the page's reply can be compared with the API's.
  await page.fill('#temperature', '0');
  await page.fill('#num_predict', '200');
  await page.dispatchEvent('#num_predict', 'change');
  await page.evaluate(() => {
    window.__lengths = new Set();
    new MutationObserver(() => {
      const c = document.querySelector('.msg.assistant .content');
      if (c) window.__lengths.add(c.textContent.length);
    }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
  });
  // The page paints at most once per animation frame, and the bundled model can stream all 200 tokens
  // within two frames on a fast machine: throttle the page's downloads (16 KiB/s, a few hundred bytes per
  // token) so the reply arrives over many frames and incremental rendering is observable whatever the
  // server's speed.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: 16 * 1024, uploadThroughput: -1 });
  const question = 'Tell me a story about a cat.';
  await page.fill('#input', question);
  await page.press('#input', 'Enter');
  await waitReplyDone(1);
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await cdp.detach();
  const reply = await page.locator('.msg.assistant .content').textContent();
  assert.ok(reply.length > 0);
  const seen = await page.evaluate(() => window.__lengths.size);
  assert.ok(seen >= 3, `the reply grew in ${seen} steps: it should stream`);
  assert.equal(squash(reply), squash(await openaiGreedy([{ role: 'user', content: question }], 200)));
  const meta = await page.locator('.msg.assistant .meta').textContent();
  assert.match(meta, /TTFT \d+ ms · [\d.]+ tokens\/s · \d+ tokens/);

  // Routing view: layers × 8 experts; each layer's counts add up to 2 per traced token (top-2).
  const summary = await page.locator('#routing-summary').textContent();
  const tokens = Number(/^(\d+) tokens × (\d+) layers/.exec(summary)?.[1]);
  const layers = Number(/× (\d+) layers/.exec(summary)?.[1]);
  assert.ok(tokens > 0 && layers > 0, summary);
  assert.equal(await page.locator('#routing-grid td').count(), layers * 8);
  const sums = await page.evaluate(() => {
    const out = {};
    for (const td of document.querySelectorAll('#routing-grid td'))
      out[td.dataset.layer] = (out[td.dataset.layer] || 0) + Number(td.textContent || 0);
    return Object.values(out);
  });
  assert.deepEqual(sums, Array(layers).fill(2 * tokens));
  await page.screenshot({ path: path.join(SHOTS, 'web-ui-chat.png') });

  // Reload: the conversation, its reply and its routing view come back from localStorage.
  await page.reload();
  await page.waitForFunction(() => document.getElementById('server-status').classList.contains('ok'));
  assert.equal(await page.locator('#conversations li').count(), 1);
  assert.equal(await page.locator('#conversations li span').textContent(), question);
  assert.equal(await page.locator('.msg.user .content').textContent(), question);
  assert.equal(await page.locator('.msg.assistant .content').textContent(), reply);
  assert.equal(await page.locator('#routing-grid td').count(), layers * 8);

  // Regenerate replaces the reply (greedy: the same text) rather than adding one.
  await page.click('#regenerate');
  await waitReplyDone(1);
  assert.equal(await page.locator('.msg.assistant .content').textContent(), reply);

  // A hostile reply, streamed to the page as the server would (NDJSON in pieces), runs nothing.
  await page.route('**/api/chat', (route) => {
    const lines = [];
    for (let i = 0; i < HOSTILE.length; i += 37)
      lines.push(JSON.stringify({ model: 'm', created_at: new Date().toISOString(), message: { role: 'assistant', content: HOSTILE.slice(i, i + 37) }, done: false }));
    lines.push(JSON.stringify({ model: 'm', created_at: new Date().toISOString(), message: { role: 'assistant', content: '' },
                                done: true, done_reason: 'stop', eval_count: 9, eval_duration: 1e8, prompt_eval_duration: 1e6 }));
    route.fulfill({ status: 200, contentType: 'application/x-ndjson', body: `${lines.join('\n')}\n` });
  });
  await page.fill('#input', 'Show me some HTML.');
  await page.press('#input', 'Enter');
  await waitReplyDone(2);
  await page.unroute('**/api/chat');
  const last = page.locator('.msg.assistant').last();
  for (const a of await last.locator('a').all()) await a.click({ modifiers: [] }).catch(() => {});
  const verdict = await page.evaluate(() => {
    const box = [...document.querySelectorAll('.msg.assistant')].at(-1);
    return {
      pwned: window.__pwned,
      dangerous: box.querySelectorAll('script, img, svg, iframe, object, embed, b, style, link').length,
      handlers: [...box.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name)).filter((n) => /^on/i.test(n)),
      hrefs: [...box.querySelectorAll('a')].map((a) => a.getAttribute('href')),
      text: box.querySelector('.content').textContent,
    };
  });
  assert.equal(verdict.pwned, undefined, 'no payload ran');
  assert.equal(verdict.dangerous, 0);
  assert.deepEqual(verdict.handlers, []);
  assert.deepEqual(verdict.hrefs, ['https://example.com/a_b']);
  assert.ok(verdict.text.includes('<script>window.__pwned = 1</script>'), 'the script tag is shown as text');
  assert.deepEqual(dialogs, []);
  await page.screenshot({ path: path.join(SHOTS, 'web-ui-hostile.png') });

  // The server goes away: the page says so and will not send; it comes back on the same port: recovered.
  const port = server.port;
  assert.equal(await server.stop(), 0, server.stderr);
  await page.waitForFunction(() => document.getElementById('server-status').classList.contains('down'), null, { timeout: 20000 });
  assert.equal(await page.locator('#banner').isVisible(), true);
  assert.equal(await page.locator('#send').isDisabled(), true);
  server = await startServer(['--api-key', KEY], { port });
  await page.waitForFunction(() => document.getElementById('server-status').classList.contains('ok'), null, { timeout: 20000 });
  assert.equal(await page.locator('#banner').isVisible(), false);
  await page.fill('#input', 'And then?');
  await page.press('#input', 'Enter');
  await waitReplyDone(3);
  assert.ok((await page.locator('.msg.assistant .content').last().textContent()).length > 0);
  assert.deepEqual(pageErrors, []);
});
