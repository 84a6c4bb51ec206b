// markdown.test.mjs: the web page's Markdown renderer (web/markdown.js) on hostile replies, without a
// browser: parse() must produce only listed tags, keep every link target http(s)/mailto, and leave raw
// HTML as text. (web_ui.test.mjs checks the same replies in a real page, where nothing may run.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse, parseInline, safeUrl } from '../../web/markdown.js';
import { HOSTILE } from './hostile.mjs';

const TAGS = new Set(['p', 'br', 'pre', 'code', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'ul', 'ol', 'li', 'blockquote',
                      'strong', 'em', 'a']);

function walk(nodes, visit) {
  for (const n of nodes) {
    visit(n);
    if (typeof n !== 'string') walk(n.children, visit);
  }
}
function text(nodes) {
  let s = '';
  walk(nodes, (n) => { if (typeof n === 'string') s += n; });
  return s;
}


test('only listed tags; links only to http(s) and mailto; raw HTML stays text', () => {
  const tree = parse(HOSTILE);
  const hrefs = [];
  walk(tree, (n) => {
    if (typeof n === 'string') return;
    assert.ok(TAGS.has(n.tag), `tag ${n.tag}`);
    for (const k of Object.keys(n.attrs)) assert.ok(!/^on/i.test(k), `attribute ${k}`);
    if (n.tag === 'a') hrefs.push(n.attrs.href);
  });
  assert.deepEqual(hrefs, ['https://example.com/a_b']);
  const t = text(tree);
  assert.ok(t.includes('<script>window.__pwned = 1</script>'), 'the script tag is shown as text');
  assert.ok(t.includes('onerror="window.__pwned = 2"'));
  assert.ok(t.includes('[click me](javascript:window.__pwned=3)'), 'an unsafe link stays as written');
});

test('safeUrl', () => {
  for (const u of ['https://a.b/c?d=e', 'http://x', 'mailto:a@b.c']) assert.equal(safeUrl(u), u);
  for (const u of ['javascript:alert(1)', ' javascript:1', 'JAVASCRIPT:1', 'java\nscript:1', 'data:text/html,x',
                   'vbscript:1', '//evil.com', '/relative', 'https://a"onmouseover="x'])
    assert.equal(safeUrl(u), null, u);
});

test('the Markdown it does render', () => {
  const tree = parse('# Title\n\nSome **bold** and *it* with `code`.\n\n- a\n- b\n\n1. one\n\n> quoted\n\n```js\nlet x = 1;\n```');
  assert.deepEqual(tree.map((n) => n.tag), ['h1', 'p', 'ul', 'ol', 'blockquote', 'pre']);
  assert.deepEqual(parseInline('**b**').map((n) => n.tag), ['strong']);
  assert.equal(tree[5].children[0].children[0], 'let x = 1;');
  assert.equal(tree[5].children[0].attrs['data-lang'], 'js');
});
