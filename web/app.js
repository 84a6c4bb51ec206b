// app.js: the chat page's logic. It uses only the public API: GET /api/version (is the server up?),
// GET /api/tags and POST /api/show (which model, how many experts), POST /api/chat streamed as NDJSON
// with "moe": {"routing": true} for the per-token expert trace. Conversations and settings live in
// localStorage; replies are rendered by markdown.js, which never hands the reply to an HTML parser.
import { render } from './markdown.js';

const $ = (id) => document.getElementById(id);
const STORE = 'moe.chat.conversations';
const SETTINGS = 'moe.chat.settings';
const FIELDS = ['model', 'api-key', 'system', 'temperature', 'top_k', 'top_p', 'min_p', 'repeat_penalty',
                'num_predict', 'seed', 'stop', 'routing'];

let conversations = load(STORE, []);
let activeId = conversations.length ? conversations[0].id : null;
let serverUp = false;
let controller = null;      // AbortController of the reply being streamed
let nExperts = 0;           // from /api/show; 0 until known
let healthTimer = null;

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}
function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(conversations));
  } catch (e) {
    showBanner(`Could not save the conversation in this browser: ${e.message}`);
  }
}

// ---- settings ----------------------------------------------------------------------------------
function readSettings() {
  const s = {};
  for (const f of FIELDS) s[f] = $(f).type === 'checkbox' ? $(f).checked : $(f).value;
  return s;
}
function restoreSettings() {
  const s = load(SETTINGS, {});
  for (const f of FIELDS) {
    if (!(f in s) || f === 'model') continue;
    if ($(f).type === 'checkbox') $(f).checked = !!s[f];
    else $(f).value = s[f];
  }
  for (const f of FIELDS) $(f).addEventListener('change', () => localStorage.setItem(SETTINGS, JSON.stringify(readSettings())));
}
function headers() {
  const h = { 'content-type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}
function options() {
  const o = {};
  const num = (id, key, int) => {
    const v = $(id).value.trim();
    if (v === '') return;
    const n = int ? parseInt(v, 10) : parseFloat(v);
    if (Number.isFinite(n)) o[key] = n;
  };
  num('temperature', 'temperature');
  num('top_k', 'top_k', true);
  num('top_p', 'top_p');
  num('min_p', 'min_p');
  num('repeat_penalty', 'repeat_penalty');
  num('num_predict', 'num_predict', true);
  num('seed', 'seed', true);
  const stop = $('stop').value.split('\n').filter((s) => s.length > 0);
  if (stop.length) o.stop = stop;
  return o;
}

// ---- server state --------------------------------------------------------------------------------
function showBanner(text) {
  $('banner').textContent = text;
  $('banner').hidden = !text;
}
function setServer(up, text) {
  serverUp = up;
  $('server-status').textContent = text;
  $('server-status').className = `status ${up ? 'ok' : 'down'}`;
  $('send').disabled = !up || !!controller;
  $('regenerate').disabled = !up || !!controller;
}
async function api(path, body) {
  const res = await fetch(path, body === undefined ? { headers: headers() }
                                                     : { method: 'POST', headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try {
      const j = await res.json();
      msg = j.error?.message || j.error || msg;
    } catch {}
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return res.json();
}
async function checkServer() {
  clearTimeout(healthTimer);
  try {
    const v = await api('/api/version');
    if (!serverUp) await loadModels();
    setServer(true, `server up (Ollama API ${v.version})`);
    showBanner('');
    healthTimer = setTimeout(checkServer, 10000);
  } catch (e) {
    if (e.status === 401) {
      setServer(false, 'API key needed');
      showBanner('The server wants an API key: enter it under Settings.');
    } else {
      setServer(false, 'server unreachable');
      showBanner('The server is not answering (it may be restarting). Retrying every 2 s; your conversations are kept.');
    }
    healthTimer = setTimeout(checkServer, 2000);
  }
}
async function loadModels() {
  const tags = await api('/api/tags');
  const select = $('model');
  const chosen = load(SETTINGS, {}).model;
  select.replaceChildren();
  for (const m of tags.models) {
    const o = document.createElement('option');
    o.value = m.name;
    o.textContent = m.name;
    select.appendChild(o);
  }
  if (chosen && tags.models.some((m) => m.name === chosen)) select.value = chosen;
  try {
    const show = await api('/api/show', { model: select.value });
    const info = show.model_info || {};
    const key = Object.keys(info).find((k) => k.endsWith('.expert_count'));
    nExperts = key ? Math.max(1, info[key]) : 1;
  } catch {
    nExperts = 0;
  }
}

// ---- conversations ---------------------------------------------------------------------------------
function active() {
  return conversations.find((c) => c.id === activeId) || null;
}
function newConversation() {
  const c = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: 'New chat', messages: [] };
  conversations.unshift(c);
  activeId = c.id;
  save();
  renderAll();
  return c;
}
function renderList() {
  const ul = $('conversations');
  ul.replaceChildren();
  for (const c of conversations) {
    const li = document.createElement('li');
    li.className = c.id === activeId ? 'active' : '';
    li.dataset.id = c.id;
    const span = document.createElement('span');
    span.textContent = c.title;
    const del = document.createElement('button');
    del.type = 'button';
    del.title = 'Delete';
    del.textContent = '×';
    del.addEventListener('click', (ev) => {
      ev.stopPropagation();
      conversations = conversations.filter((x) => x.id !== c.id);
      if (activeId === c.id) activeId = conversations[0]?.id ?? null;
      save();
      renderAll();
    });
    li.append(span, del);
    li.addEventListener('click', () => {
      if (controller) return;
      activeId = c.id;
      renderAll();
    });
    ul.appendChild(li);
  }
}
function messageNode(m) {
  const div = document.createElement('div');
  div.className = `msg ${m.role}${m.error ? ' error' : ''}`;
  const role = document.createElement('div');
  role.className = 'role';
  role.textContent = m.role;
  const content = document.createElement('div');
  content.className = 'content';
  const meta = document.createElement('div');
  meta.className = 'meta';
  div.append(role, content, meta);
  fillMessage(div, m);
  return div;
}
function fillMessage(div, m) {
  const content = div.querySelector('.content');
  if (m.error) content.textContent = m.error;
  else if (m.role === 'assistant') render(document, m.content, content);
  else {
    content.textContent = m.content;
    content.style.whiteSpace = 'pre-wrap';
  }
  div.querySelector('.meta').textContent = m.stats || '';
}
function renderMessages() {
  const box = $('messages');
  box.replaceChildren();
  const c = active();
  if (!c) return;
  for (const m of c.messages) box.appendChild(messageNode(m));
  box.scrollTop = box.scrollHeight;
}
function renderAll() {
  renderList();
  renderMessages();
  const c = active();
  const last = c && [...c.messages].reverse().find((m) => m.role === 'assistant' && m.routing);
  renderRouting(last ? last.routing : null);
}

// ---- routing view ------------------------------------------------------------------------------------
function emptyRouting() {
  return { tokens: 0, layers: 0, experts: nExperts, counts: [] };
}
function addRouting(r, entries) {
  for (const t of entries) {
    r.tokens++;
    r.layers = Math.max(r.layers, t.experts.length);
    t.experts.forEach((ids, l) => {
      r.counts[l] ||= [];
      for (const e of ids) {
        r.experts = Math.max(r.experts, e + 1);
        r.counts[l][e] = (r.counts[l][e] || 0) + 1;
      }
    });
  }
}
function renderRouting(r) {
  const grid = $('routing-grid');
  grid.replaceChildren();
  if (!r || !r.tokens) {
    $('routing-summary').textContent = 'The last reply has no routing trace (turn on "Trace expert routing" in Settings).';
    return;
  }
  $('routing-summary').textContent = `${r.tokens} tokens × ${r.layers} layers: how many tokens each expert took per layer (darker: more).`;
  const head = document.createElement('tr');
  head.appendChild(document.createElement('th'));
  for (let e = 0; e < r.experts; e++) {
    const th = document.createElement('th');
    th.textContent = `E${e}`;
    head.appendChild(th);
  }
  grid.appendChild(head);
  for (let l = 0; l < r.layers; l++) {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.textContent = `L${l}`;
    tr.appendChild(th);
    for (let e = 0; e < r.experts; e++) {
      const n = (r.counts[l] && r.counts[l][e]) || 0;
      const td = document.createElement('td');
      td.dataset.layer = l;
      td.dataset.expert = e;
      td.textContent = n ? String(n) : '';
      td.title = `layer ${l}, expert ${e}: ${n} of ${r.tokens} tokens`;
      const a = n / r.tokens;
      td.style.background = `rgba(37, 99, 235, ${a.toFixed(3)})`;
      td.style.color = a > 0.5 ? '#fff' : '#1d2330';
      tr.appendChild(td);
    }
    grid.appendChild(tr);
  }
}

// ---- chat ----------------------------------------------------------------------------------------
function history(c) {
  const msgs = [];
  const system = $('system').value.trim();
  if (system) msgs.push({ role: 'system', content: system });
  for (const m of c.messages) if (!m.error && !m.pending) msgs.push({ role: m.role, content: m.content });
  return msgs;
}
function fmtStats(s) {
  const parts = [];
  if (s.ttft !== undefined) parts.push(`TTFT ${s.ttft.toFixed(0)} ms`);
  if (s.rate !== undefined) parts.push(`${s.rate.toFixed(1)} tokens/s`);
  if (s.tokens !== undefined) parts.push(`${s.tokens} tokens`);
  if (s.reason) parts.push(s.reason);
  return parts.join(' · ');
}
async function reply(c) {
  const m = { role: 'assistant', content: '', pending: true };
  c.messages.push(m);
  const div = messageNode(m);
  $('messages').appendChild(div);
  controller = new AbortController();
  $('stop-btn').hidden = false;
  setServer(serverUp, $('server-status').textContent);
  const routing = emptyRouting();
  const traced = $('routing').checked;
  const t0 = performance.now();
  let tFirst = null;
  let tokens = 0;
  let frame = 0;
  const paint = () => {
    frame = 0;
    fillMessage(div, m);
    if (traced) renderRouting(routing);
    $('messages').scrollTop = $('messages').scrollHeight;
  };
  try {
    const body = { model: $('model').value, messages: history(c), stream: true, options: options() };
    if (traced) body.moe = { routing: true };
    const res = await fetch('/api/chat', { method: 'POST', headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) {
      let msg = `HTTP ${res.status}`;
      try {
        msg = (await res.json()).error || msg;
      } catch {}
      throw Object.assign(new Error(msg), { status: res.status });
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let done = false;
    while (!done) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const j = JSON.parse(line);
        if (j.error) throw new Error(j.error);
        const piece = j.message?.content || '';
        if (piece && tFirst === null) tFirst = performance.now();
        m.content += piece;
        if (j.moe?.routing) {
          addRouting(routing, j.moe.routing);
          tokens += j.moe.routing.length;
        } else if (piece) tokens++;
        const live = { ttft: tFirst === null ? undefined : tFirst - t0, tokens };
        if (tFirst !== null && tokens > 1) live.rate = (tokens - 1) / ((performance.now() - tFirst) / 1000);
        m.stats = fmtStats(live);
        if (j.done) {
          done = true;
          const s = { ttft: j.prompt_eval_duration / 1e6, tokens: j.eval_count, reason: j.done_reason };
          if (j.eval_count > 1 && j.eval_duration > 0) s.rate = (j.eval_count - 1) / (j.eval_duration / 1e9);
          m.stats = fmtStats(s);
        }
        if (!frame) frame = requestAnimationFrame(paint);
      }
    }
    if (!done) throw new Error('the stream ended before the reply was complete (the server may have restarted)');
  } catch (e) {
    if (e.name === 'AbortError') {
      m.stats = `${m.stats ? `${m.stats} · ` : ''}stopped`;
    } else {
      m.error = e instanceof TypeError
        ? `Could not reach the server (it may be restarting): ${e.message}. Press Regenerate to try again.`
        : `Error: ${e.message}`;
      if (e.status === 401) m.error = 'The server wants an API key: enter it under Settings, then press Regenerate.';
      if (e instanceof TypeError || !e.status) checkServer();
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    delete m.pending;
    if (traced && routing.tokens) m.routing = routing;
    controller = null;
    $('stop-btn').hidden = true;
    setServer(serverUp, $('server-status').textContent);
    paint();
    save();
    renderList();
  }
}
async function send(text) {
  const c = active() || newConversation();
  c.messages.push({ role: 'user', content: text });
  if (c.title === 'New chat') c.title = text.slice(0, 48);
  save();
  renderAll();
  await reply(c);
}
async function regenerate() {
  const c = active();
  if (!c || controller) return;
  while (c.messages.length && c.messages[c.messages.length - 1].role === 'assistant') c.messages.pop();
  if (!c.messages.length) return;
  renderAll();
  await reply(c);
}

// ---- wiring --------------------------------------------------------------------------------------
restoreSettings();
$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('input').value.trim();
  if (!text || controller || !serverUp) return;
  $('input').value = '';
  send(text);
});
$('input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) {
    ev.preventDefault();
    $('composer').requestSubmit();
  }
});
$('stop-btn').addEventListener('click', () => controller?.abort());
$('regenerate').addEventListener('click', regenerate);
$('new-chat').addEventListener('click', () => {
  if (!controller) newConversation();
});
$('api-key').addEventListener('change', checkServer);
$('model').addEventListener('change', () => localStorage.setItem(SETTINGS, JSON.stringify(readSettings())));
renderAll();
checkServer();
