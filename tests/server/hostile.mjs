// hostile.mjs: a model reply that tries every usual way to run script in a page that renders it as
// Markdown (each payload would set window.__pwned); markdown.test.mjs and web_ui.test.mjs feed it in.
export const HOSTILE = [
  '<script>window.__pwned = 1</script>',
  '<img src=x onerror="window.__pwned = 2">',
  '[click me](javascript:window.__pwned=3)',
  '[upper](JaVaScRiPt:window.__pwned=4)',
  '[tab](java\tscript:window.__pwned=5)',
  '[data](data:text/html,<script>window.__pwned=6</script>)',
  '<a href="javascript:window.__pwned=7">html link</a>',
  '**<svg onload="window.__pwned=8">**',
  '```\n</code></pre><script>window.__pwned=9</script>\n```',
  '`<iframe src="javascript:window.__pwned=10">`',
  '[ok](https://example.com/a_b) and <b onclick="window.__pwned=11">bold</b>',
].join('\n\n');
