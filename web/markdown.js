// markdown.js: a small Markdown renderer for model replies that cannot inject anything.
//
// Why it is shaped so: a model's reply is untrusted text. Instead of producing HTML and sanitising it
// afterwards, parse() turns the text into a tree of plain objects ({tag, attrs, children} or strings)
// whose tags come from a fixed list, and toDom() builds DOM nodes from it with createElement and
// text nodes only: no innerHTML, no HTML parser ever sees the reply, so "<script>", "<img onerror>" and
// the like stay visible text. Link targets are kept only for http:, https: and mailto: URLs (anything
// else, "javascript:" included, becomes plain text). Subset: fenced code, headings, lists, quotes,
// paragraphs; inline code, bold, italic, links, bare URLs. Works in the browser and in Node (tests).

const SAFE_URL = /^(https?:\/\/|mailto:)[^\s<>"'`]*$/i;

export function safeUrl(url) {
  const u = String(url).trim();
  // Control characters and whitespace inside a scheme are how "java\tscript:" tricks work: refuse.
  if (/[\u0000-\u001f\u007f]/.test(u)) return null;
  return SAFE_URL.test(u) ? u : null;
}

function el(tag, children, attrs) {
  return { tag, attrs: attrs || {}, children: children || [] };
}

// Inline spans: code first (its content is literal), then links, bold, italic, bare URLs.
export function parseInline(text) {
  const out = [];
  let rest = text;
  const patterns = [
    { re: /`([^`]+)`/, make: (m) => el('code', [m[1]]) },
    {
      re: /\[([^\]]*)\]\(([^)\s]*)\)/,
      make: (m) => {
        const href = safeUrl(m[2]);
        return href ? el('a', parseInline(m[1]), { href, rel: 'noopener noreferrer nofollow', target: '_blank' })
                    : m[0];  // an unsafe link stays as the text the model wrote
      },
    },
    { re: /\*\*([^*]+)\*\*/, make: (m) => el('strong', parseInline(m[1])) },
    { re: /__([^_]+)__/, make: (m) => el('strong', parseInline(m[1])) },
    { re: /\*([^*\s][^*]*)\*/, make: (m) => el('em', parseInline(m[1])) },
    { re: /\b_([^_\s][^_]*)_\b/, make: (m) => el('em', parseInline(m[1])) },
    {
      re: /\bhttps?:\/\/[^\s<>"'`)\]]+/,
      make: (m) => {
        const href = safeUrl(m[0]);
        return href ? el('a', [m[0]], { href, rel: 'noopener noreferrer nofollow', target: '_blank' }) : m[0];
      },
    },
  ];
  while (rest.length) {
    let best = null;
    for (const p of patterns) {
      const m = p.re.exec(rest);
      if (m && (best === null || m.index < best.m.index)) best = { m, p };
    }
    if (!best) {
      out.push(rest);
      break;
    }
    if (best.m.index > 0) out.push(rest.slice(0, best.m.index));
    out.push(best.p.make(best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
  return out;
}

// Blocks, line by line.
export function parse(text) {
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  const blocks = [];
  let para = [];
  const flush = () => {
    if (para.length) {
      const children = [];
      para.forEach((l, i) => {
        if (i) children.push(el('br'));
        children.push(...parseInline(l));
      });
      blocks.push(el('p', children));
      para = [];
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = /^\s*(```+|~~~+)\s*([\w+-]*)\s*$/.exec(line);
    if (fence) {
      flush();
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) code.push(lines[i]);
      const attrs = fence[2] ? { 'data-lang': fence[2] } : {};
      blocks.push(el('pre', [el('code', [code.join('\n')], attrs)]));
      continue;
    }
    const h = /^(#{1,6})\s+(.*)$/.exec(line);
    if (h) {
      flush();
      blocks.push(el(`h${h[1].length}`, parseInline(h[2])));
      continue;
    }
    const li = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (li) {
      flush();
      const ordered = /\d/.test(li[1]);
      const items = [];
      for (; i < lines.length; i++) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        items.push(el('li', parseInline(m[2])));
      }
      i--;
      blocks.push(el(ordered ? 'ol' : 'ul', items));
      continue;
    }
    const q = /^>\s?(.*)$/.exec(line);
    if (q) {
      flush();
      const quoted = [];
      for (; i < lines.length && /^>/.test(lines[i]); i++) quoted.push(lines[i].replace(/^>\s?/, ''));
      i--;
      blocks.push(el('blockquote', parse(quoted.join('\n'))));
      continue;
    }
    if (!line.trim()) {
      flush();
      continue;
    }
    para.push(line);
  }
  flush();
  return blocks;
}

const TAGS = new Set(['p', 'br', 'pre', 'code', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'ul', 'ol', 'li', 'blockquote',
                      'strong', 'em', 'a']);
const ATTRS = new Set(['href', 'rel', 'target', 'data-lang']);

// Builds DOM nodes from parse()'s tree: only listed tags and attributes, text through text nodes.
export function toDom(doc, nodes, parent) {
  for (const n of nodes) {
    if (typeof n === 'string') {
      parent.appendChild(doc.createTextNode(n));
      continue;
    }
    if (!TAGS.has(n.tag)) throw new Error(`markdown: unexpected tag ${n.tag}`);
    const e = doc.createElement(n.tag);
    for (const [k, v] of Object.entries(n.attrs)) {
      if (!ATTRS.has(k)) continue;
      if (k === 'href' && !safeUrl(v)) continue;
      e.setAttribute(k, v);
    }
    toDom(doc, n.children, e);
    parent.appendChild(e);
  }
  return parent;
}

export function render(doc, text, parent) {
  parent.replaceChildren();
  return toDom(doc, parse(text), parent);
}
