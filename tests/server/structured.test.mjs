// structured.test.mjs: structured outputs through the official `openai` client on the bundled model:
// `client.chat.completions.parse` with a zod schema (zodResponseFormat), 34 JSON schemas (recursive and
// anyOf ones among them) whose every answer must parse and validate with ajv (a finish_reason "length"
// answer too: the grammar's shortest completion is forced when the budget runs out), json_object with
// tiny budgets, object properties in the schema's order, grammar / guided_* / logit_bias / echo, unknown
// fields refused by name, and hostile constraints (10,000-level schema, 1 MB schema, left-recursive
// grammar, catastrophic regex) each getting a 400 quickly while the server keeps serving.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Ajv from 'ajv/dist/2020.js';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { modelName, startServer } from './helpers.mjs';

let server;
let client;
let model;

before(async () => {
  server = await startServer();
  client = server.client();
  model = await modelName(server);
});
after(async () => {
  if (server) assert.equal(await server.stop(), 0, server.stderr);
});

const ask = [{ role: 'user', content: 'Describe a cat as JSON.' }];

async function post(path, body) {
  const r = await server.fetch(path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: r.status, body: r.json };
}

describe('structured outputs', () => {
  test('chat.completions.parse with a zod schema', async () => {
    const Cat = z.object({
      name: z.string().max(12),
      age: z.number().int().min(0).max(30),
      color: z.enum(['black', 'white', 'ginger']),
      indoor: z.boolean(),
    });
    let parsedCount = 0;
    for (const seed of [1, 2, 3]) {
      // parse() throws on finish_reason "length"; this schema's values are short enough to end in budget.
      const r = await client.chat.completions.parse({
        model, messages: ask, max_tokens: 200, temperature: 0.7, seed, response_format: zodResponseFormat(Cat, 'cat'),
      });
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'stop');
      assert.ok(c.message.parsed, c.message.content);
      Cat.parse(c.message.parsed);  // throws if invalid
      parsedCount++;
    }
    assert.equal(parsedCount, 3);
  });

  const schemas = [
    { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] },
    { type: 'object', properties: { s: { type: 'string', maxLength: 8 } }, required: ['s'], additionalProperties: false },
    { type: 'object', properties: { b: { type: 'boolean' }, n: { type: 'null' } }, required: ['b', 'n'] },
    { type: 'object', properties: { x: { type: 'number' } } },
    { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 4 },
    { type: 'array', items: { type: 'string', maxLength: 5 }, maxItems: 3 },
    { enum: ['red', 'green', 'blue'] },
    { const: 'fixed' },
    { type: 'integer', minimum: 10, maximum: 99 },
    { type: 'integer', minimum: -50, maximum: -5 },
    { type: 'integer', exclusiveMinimum: 0 },
    { type: 'number', minimum: 0, maximum: 1 },
    { type: 'string', minLength: 3, maxLength: 6 },
    { type: 'string', pattern: '^[A-Z]{3}-\\d{2}$' },
    { type: 'string', enum: ['yes', 'no'] },
    { type: ['string', 'integer'] },
    { anyOf: [{ type: 'integer' }, { type: 'string', maxLength: 4 }] },
    { oneOf: [{ type: 'boolean' }, { type: 'null' }] },
    { anyOf: [{ type: 'object', properties: { kind: { const: 'a' }, v: { type: 'integer' } }, required: ['kind', 'v'] },
              { type: 'object', properties: { kind: { const: 'b' }, w: { type: 'boolean' } }, required: ['kind', 'w'] }] },
    { type: 'object', properties: { tags: { type: 'array', items: { enum: ['x', 'y'] }, maxItems: 3 } }, required: ['tags'] },
    { type: 'object', properties: { p: { type: 'object', properties: { q: { type: 'integer' } }, required: ['q'] } }, required: ['p'] },
    { $defs: { node: { type: 'object', properties: { v: { type: 'integer', minimum: 0, maximum: 9 },
      kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } }, required: ['v'] } }, $ref: '#/$defs/node' },
    { type: 'object', properties: { next: { anyOf: [{ $ref: '#' }, { type: 'null' }] } }, required: ['next'] },
    { definitions: { leaf: { type: 'string', maxLength: 3 } }, type: 'array', items: { $ref: '#/definitions/leaf' }, maxItems: 2 },
    { type: 'object', properties: { id: { type: 'integer' } }, additionalProperties: { type: 'boolean' }, required: ['id'] },
    { type: 'object', additionalProperties: { type: 'integer' } },
    { type: 'integer', nullable: true },
    { type: 'array', prefixItems: [{ type: 'string', maxLength: 3 }, { type: 'integer' }], items: false, minItems: 2 },
    { type: 'string', format: 'date' },
    { type: 'string', format: 'uuid' },
    { type: 'object', properties: { when: { type: 'string', format: 'date-time' } }, required: ['when'] },
    { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' }, c: { type: 'integer' } }, required: ['b'] },
    { allOf: [{ type: 'object', properties: { z: { type: 'number', minimum: 5 } }, required: ['z'] }] },
    { type: 'string', pattern: '(cat|dog)s?' },
  ];

  test(`${schemas.length} schemas: every answer parses and validates`, async () => {
    assert.ok(schemas.length >= 30);
    const ajv = new Ajv({ strict: false, validateFormats: false });
    let stops = 0;
    for (let i = 0; i < schemas.length; i++) {
      const schema = schemas[i];
      const validate = ajv.compile(schema);
      const r = await client.chat.completions.create({
        model, messages: ask, max_tokens: 96, temperature: 0.9, seed: i,
        response_format: { type: 'json_schema', json_schema: { name: `s${i}`, schema, strict: true } },
      });
      const c = r.choices[0];
      let value;
      assert.doesNotThrow(() => { value = JSON.parse(c.message.content); }, `schema ${i} (${c.finish_reason}): ${c.message.content}`);
      assert.ok(validate(value), `schema ${i}: ${c.message.content}\n${JSON.stringify(validate.errors)}`);
      if (c.finish_reason === 'stop') stops++;
    }
    assert.ok(stops >= schemas.length / 2, `only ${stops} answers ended on their own`);
  });

  test('json_object with max_tokens 2..5 always parses; 1 is refused by name of the cause', async () => {
    for (let max = 2; max <= 5; max++) {
      for (const seed of [1, 2, 3]) {
        const r = await client.chat.completions.create({
          model, messages: ask, max_tokens: max, temperature: 1, seed, response_format: { type: 'json_object' },
        });
        const c = r.choices[0];
        assert.equal(typeof JSON.parse(c.message.content), 'object', c.message.content);
        assert.ok(['stop', 'length'].includes(c.finish_reason));
      }
    }
    const r = await post('/v1/chat/completions', { model, messages: ask, max_tokens: 1, response_format: { type: 'json_object' } });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /max_tokens 1 is too small/);
  });

  test('streamed json_schema output assembles to valid JSON', async () => {
    const schema = { type: 'object', properties: { n: { type: 'integer' }, s: { type: 'string', maxLength: 6 } }, required: ['n', 's'] };
    const stream = await client.chat.completions.create({
      model, messages: ask, max_tokens: 80, temperature: 0.8, seed: 5, stream: true,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
    });
    let text = '';
    let finish = null;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    }
    assert.ok(new Ajv({ strict: false }).validate(schema, JSON.parse(text)), text);
    assert.ok(finish === 'stop' || finish === 'length');
  });

  test('json_schema answers write properties in the schema order, not alphabetically', async () => {
    const digit = { type: 'integer', minimum: 0, maximum: 9 };
    const schema = { type: 'object', properties: { z: digit, a: digit, m: digit }, required: ['z', 'a', 'm'], additionalProperties: false };
    for (const seed of [1, 2]) {
      const c = await client.chat.completions.create({
        model, messages: ask, max_tokens: 60, temperature: 1, seed,
        response_format: { type: 'json_schema', json_schema: { name: 'zam', schema, strict: true } },
      });
      assert.deepEqual(Object.keys(JSON.parse(c.choices[0].message.content)), ['z', 'a', 'm'], c.choices[0].message.content);
      const t = await client.completions.create({ model, prompt: 'x', max_tokens: 60, temperature: 1, seed, guided_json: schema });
      assert.deepEqual(Object.keys(JSON.parse(t.choices[0].text)), ['z', 'a', 'm'], t.choices[0].text);
    }
  });
});

describe('grammars and guided decoding', () => {
  test('grammar (GBNF) on completions and chat', async () => {
    const grammar = 'root ::= "The " ("cat" | "dog") " is " [a-z]{2,8} "."';
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 40, temperature: 1, seed: 3, grammar });
    assert.match(r.choices[0].text, /^The (cat|dog) is [a-z]{2,8}\.$/);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const c = await client.chat.completions.create({ model, messages: ask, max_tokens: 40, temperature: 1, seed: 4, grammar });
    assert.match(c.choices[0].message.content, /^The (cat|dog) is [a-z]{2,8}\.$/);
    const g = await client.completions.create({ model, prompt: 'x', max_tokens: 40, seed: 1, guided_grammar: 'root ::= [0-9]{3}' });
    assert.match(g.choices[0].text, /^[0-9]{3}$/);
  });

  test('guided_choice, guided_regex, guided_json', async () => {
    for (const seed of [1, 2, 3, 4]) {
      const r = await client.chat.completions.create({
        model, messages: ask, max_tokens: 20, temperature: 1, seed, guided_choice: ['positive', 'negative', 'neutral'],
      });
      assert.ok(['positive', 'negative', 'neutral'].includes(r.choices[0].message.content), r.choices[0].message.content);
    }
    const re = await client.completions.create({ model, prompt: 'x', max_tokens: 30, temperature: 1, seed: 2, guided_regex: '[A-Z][a-z]{1,5}-\\d{2,3}' });
    assert.match(re.choices[0].text, /^[A-Z][a-z]{1,5}-\d{2,3}$/);
    const schema = { type: 'object', properties: { k: { enum: ['a', 'b'] } }, required: ['k'] };
    const j = await client.chat.completions.create({ model, messages: ask, max_tokens: 40, seed: 1, guided_json: schema });
    assert.ok(['a', 'b'].includes(JSON.parse(j.choices[0].message.content).k));
  });

  test('logit_bias and echo', async () => {
    const tok = await post('/tokenize', { prompt: ' the', add_special_tokens: false });
    const id = tok.body.tokens.at(-1);
    const r = await client.completions.create({
      model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0, logit_bias: { [id]: 100 }, ignore_eos: true,
    });
    const one = (await post('/detokenize', { tokens: [id] })).body;
    assert.ok(r.choices[0].text.includes('the'), JSON.stringify(r.choices[0].text) + JSON.stringify(one));
    const e = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 5, temperature: 0, echo: true });
    assert.ok(e.choices[0].text.startsWith('Once upon a time'), e.choices[0].text);
    const bad = await post('/v1/completions', { model, prompt: 'x', logit_bias: { '5': 1000 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'logit_bias.5');
  });

  test('errors name the field; unknown fields are refused', async () => {
    const cases = [
      [{ grammar: 'root ::= foo' }, 'grammar', /undefined rule 'foo'/],
      [{ guided_regex: '(a' }, 'guided_regex', /unbalanced/],
      [{ guided_json: { type: 'string', format: 'email' } }, 'guided_json', /format/],
      [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', not: {} } } } },
        'response_format.json_schema.schema', /'not'/],
      [{ grammar: 'root ::= "a"', guided_choice: ['a'] }, 'guided_choice', /both constrain/],
      [{ reasoning_effort: 'high' }, 'reasoning_effort', /not supported/],
      [{ some_new_field: 1 }, 'some_new_field', /not supported/],
    ];
    for (const [extra, param, message] of cases) {
      const r = await post('/v1/chat/completions', { model, messages: ask, max_tokens: 4, ...extra });
      assert.equal(r.status, 400, JSON.stringify(extra));
      assert.equal(r.body.error.param, param);
      assert.match(r.body.error.message, message);
    }
    // The extras OpenAI clients send with no effect on the output are accepted.
    const ok = await post('/v1/chat/completions', {
      model, messages: ask, max_tokens: 2, user: 'u', metadata: { a: 'b' }, store: false, service_tier: 'auto',
      parallel_tool_calls: true, stream_options: null,
    });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });
});

describe('hostile constraints', () => {
  async function expectFast400(body, param) {
    const t0 = Date.now();
    const r = await post('/v1/chat/completions', { model, messages: ask, max_tokens: 8, ...body });
    const ms = Date.now() - t0;
    assert.equal(r.status, 400, JSON.stringify(r.body).slice(0, 300));
    assert.equal(r.body.error.param, param);
    assert.ok(ms < 5000, `took ${ms} ms`);
    // The server still serves.
    const next = await client.chat.completions.create({ model, messages: ask, max_tokens: 4, temperature: 0 });
    assert.equal(next.choices.length, 1);
  }

  test('a 10,000-level nested schema', async () => {
    let text = '{}';
    for (let i = 0; i < 10000; i++) text = `{"type":"array","items":${text}}`;
    const body = `{"model":${JSON.stringify(model)},"messages":${JSON.stringify(ask)},"max_tokens":8,"guided_json":${text}}`;
    const t0 = Date.now();
    const r = await server.fetch('/v1/chat/completions', { method: 'POST', body });
    assert.equal(r.status, 400);
    assert.ok(Date.now() - t0 < 5000);
    const next = await client.chat.completions.create({ model, messages: ask, max_tokens: 4, temperature: 0 });
    assert.equal(next.choices.length, 1);
  });

  test('a 1 MB schema', async () => {
    const properties = {};
    for (let i = 0; i < 20000; i++) properties[`property_${i}`] = { type: 'string', description: 'x'.repeat(20) };
    const schema = { type: 'object', properties };
    assert.ok(JSON.stringify(schema).length > 1000000);
    await expectFast400({ response_format: { type: 'json_schema', json_schema: { name: 'big', schema } } },
      'response_format.json_schema.schema');
  });

  test('a left-recursive grammar', async () => {
    await expectFast400({ grammar: 'root ::= expr\nexpr ::= expr "+" term | term\nterm ::= [0-9]' }, 'grammar');
  });

  test('a regex with catastrophic backtracking', async () => {
    await expectFast400({ guided_regex: '(a+)+$' }, 'guided_regex');
    await expectFast400({ guided_json: { type: 'string', pattern: '^(a|aa)*(b+)*$' } }, 'guided_json');
  });
});
