// tools.test.mjs: tool calling on `moe serve` with the official `openai` and `ollama` npm clients, on
// the bundled random-ish model. Its GGUF has no chat template (ChatML is used, which has no tool
// format), so the tool tests start servers with --chat-template of templates that teach one: the
// built-ins hermes-tools (Hermes <tool_call>), mistral-nemo ([TOOL_CALLS][…]) and llama3 (JSON).
// The model writes stories, not calls, so what a call looks like comes from the grammar that
// tool_choice "required" or a named function imposes: every such call must parse, name a tool and
// validate against that tool's parameter schema (ajv), and a streamed answer assembled by the client's
// own stream helper must equal the non-streamed one.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Ajv from 'ajv';
import { Ollama } from 'ollama';
import { modelName, startServer } from './helpers.mjs';

const ajv = new Ajv({ strict: false });

// Tools whose schemas exercise the grammar: enums, nested objects, arrays with bounds, numbers,
// booleans, optional properties, anyOf, and a function of no arguments.
const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 20 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'add_numbers',
      description: 'Adds numbers',
      parameters: {
        type: 'object',
        properties: { values: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 4 }, exact: { type: 'boolean' } },
        required: ['values'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'book_room',
      description: 'Books a room',
      parameters: {
        type: 'object',
        properties: {
          guest: { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 120 } }, required: ['name'], additionalProperties: false },
          nights: { anyOf: [{ type: 'integer', minimum: 1, maximum: 9 }, { type: 'null' }] },
        },
        required: ['guest', 'nights'],
        additionalProperties: false,
      },
    },
  },
  { type: 'function', function: { name: 'now', description: 'The time', parameters: { type: 'object', properties: {}, additionalProperties: false } } },
];
const byName = Object.fromEntries(TOOLS.map((t) => [t.function.name, t.function]));
const ask = [{ role: 'user', content: 'What is the weather like in Paris?' }];

// Every call names a tool and its arguments are JSON that validates against that tool's schema.
function assertValidCalls(message, { only } = {}) {
  assert.ok(Array.isArray(message.tool_calls) && message.tool_calls.length > 0, JSON.stringify(message));
  for (const call of message.tool_calls) {
    assert.equal(call.type, 'function');
    assert.ok(typeof call.id === 'string' && call.id.length > 0);
    const fn = byName[call.function.name];
    assert.ok(fn, `unknown function ${call.function.name}`);
    if (only) assert.equal(call.function.name, only);
    const args = JSON.parse(call.function.arguments);
    const validate = ajv.compile(fn.parameters);
    assert.ok(validate(args), `${call.function.name}(${call.function.arguments}): ${ajv.errorsText(validate.errors)}`);
  }
}

describe('a template without tool support', () => {
  let server;
  before(async () => { server = await startServer(['-c', '1024']); });
  after(async () => { if (server) assert.equal(await server.stop(), 0, server.stderr); });

  test('tools get a 400 that says why and what to do', async () => {
    const client = server.client();
    await assert.rejects(client.chat.completions.create({ model: await modelName(server), messages: ask, tools: TOOLS }),
      (e) => e.status === 400 && e.param === 'tools' && /does not support tools.*--chat-template/.test(e.message));
  });
});

describe('Hermes tool calls (--chat-template hermes-tools)', () => {
  let server;
  let client;
  let model;
  before(async () => {
    server = await startServer(['-c', '4096', '--chat-template', 'hermes-tools']);
    client = server.client();
    model = await modelName(server);
  });
  after(async () => { if (server) assert.equal(await server.stop(), 0, server.stderr); });

  test('tool_choice auto: an answer with content or valid calls', async () => {
    const r = await client.chat.completions.create({ model, messages: ask, tools: TOOLS, max_tokens: 40, temperature: 0 });
    const c = r.choices[0];
    assert.ok(['stop', 'length', 'tool_calls'].includes(c.finish_reason));
    if (c.finish_reason === 'tool_calls') assertValidCalls(c.message);
    else assert.equal(typeof c.message.content, 'string');
  });

  test('tool_choice required: 12 sampled answers are all valid calls of the tools', async () => {
    for (let seed = 1; seed <= 12; seed++) {
      // One call (parallel_tool_calls false) must end by itself; parallel calls go on while the model
      // picks another one, so there a reply cut by max_tokens still returns its complete calls.
      const parallel = seed > 8;
      const r = await client.chat.completions.create({
        model, messages: ask, tools: TOOLS, tool_choice: 'required', seed, temperature: 1, max_tokens: parallel ? 1200 : 400,
        parallel_tool_calls: parallel,
      });
      const c = r.choices[0];
      if (parallel) assert.ok(['tool_calls', 'length'].includes(c.finish_reason), JSON.stringify(c));
      else assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
      if (c.finish_reason === 'tool_calls') assert.equal(c.message.content, null);
      assertValidCalls(c.message);
      if (!parallel) assert.equal(c.message.tool_calls.length, 1);
    }
  });

  test('a named function with parallel_tool_calls false: exactly one call of it, valid', async () => {
    for (const name of Object.keys(byName)) {
      for (const seed of [3, 4]) {
        const r = await client.chat.completions.create({
          model, messages: ask, tools: TOOLS, seed, temperature: 1, max_tokens: 400, parallel_tool_calls: false,
          tool_choice: { type: 'function', function: { name } },
        });
        const c = r.choices[0];
        assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
        assert.equal(c.message.tool_calls.length, 1);
        assertValidCalls(c.message, { only: name });
      }
    }
  });

  test('streamed: the client stream helper assembles the same calls as the whole answer', async () => {
    const params = { model, messages: ask, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, seed: 7, temperature: 1, max_tokens: 400 };
    const whole = await client.chat.completions.create(params);
    const stream = client.chat.completions.stream({ ...params, stream: true });
    const deltas = [];
    stream.on('chunk', (chunk) => {
      for (const ch of chunk.choices) {
        if (ch.delta?.tool_calls) deltas.push(...ch.delta.tool_calls);
        if (ch.delta?.content) assert.ok(!ch.delta.content.includes('<tool'), `marker leaked: ${ch.delta.content}`);
      }
    });
    const final = await stream.finalChatCompletion();
    const got = final.choices[0];
    assert.equal(got.finish_reason, 'tool_calls');
    assertValidCalls(got.message);
    assert.deepEqual(got.message.tool_calls.map((c) => [c.function.name, c.function.arguments]),
                     whole.choices[0].message.tool_calls.map((c) => [c.function.name, c.function.arguments]));
    // OpenAI's shape: index, id, type and the name first, then the arguments.
    const first = deltas.find((d) => d.index === 0);
    assert.ok(first.id && first.type === 'function' && first.function.name, JSON.stringify(first));
    assert.ok(deltas.filter((d) => d.index === 0 && d.function?.arguments).length >= 1);
  });

  test('a multi-turn tool loop: calls answered by tool messages, then a reply', async () => {
    const messages = [...ask];
    const first = await client.chat.completions.create({
      model, messages, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'get_weather' } }, seed: 11, temperature: 1, max_tokens: 400,
    });
    const msg = first.choices[0].message;
    assertValidCalls(msg, { only: 'get_weather' });
    messages.push(msg);  // the assistant message as returned: content null, tool_calls with JSON-text arguments
    for (const call of msg.tool_calls)
      messages.push({ role: 'tool', tool_call_id: call.id, content: JSON.stringify({ temperature: 21, sky: 'clear' }) });
    const second = await client.chat.completions.create({ model, messages, tools: TOOLS, max_tokens: 16, temperature: 0 });
    assert.equal(typeof second.choices[0].message.content, 'string');
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens, 'the call and its result are in the next prompt');
    // And the loop can go on: another required call after the tool result.
    const third = await client.chat.completions.create({ model, messages, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, seed: 12, temperature: 1, max_tokens: 400 });
    assertValidCalls(third.choices[0].message);
  });

  test('bad tools are 400s naming the field', async () => {
    const bad = async (extra, param) => {
      const r = await server.fetch('/v1/chat/completions', { body: { model, messages: ask, ...extra } });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.error.param, param, r.text);
    };
    await bad({ tools: [{ type: 'function', function: { name: 'has space' } }] }, 'tools[0].function.name');
    await bad({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'array' } } }] }, 'tools[0].function.parameters.type');
    await bad({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice.function.name');
    await bad({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'string', pattern: '(?<=a)b' } } } } }] },
              'tools[0].function.parameters');
  });

  test('Ollama: tools accepted, tool messages rendered, calls shaped as Ollama returns them', async () => {
    const ollama = new Ollama({ host: server.baseURL });
    const tag = `${model}:latest`;
    const r = await ollama.chat({ model: tag, messages: ask, tools: TOOLS, options: { temperature: 0, num_predict: 24 } });
    assert.equal(r.done, true);
    for (const call of r.message.tool_calls ?? []) {
      assert.ok(byName[call.function.name]);
      assert.equal(typeof call.function.arguments, 'object');
    }
    // A tool conversation: the assistant's call (arguments an object, as Ollama sends it) and the result.
    const messages = [...ask,
      { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius' } } }] },
      { role: 'tool', content: '{"temperature": 21}', tool_name: 'get_weather' }];
    const next = await ollama.chat({ model: tag, messages, tools: TOOLS, options: { temperature: 0, num_predict: 8 } });
    assert.equal(next.done, true);
    assert.ok(next.prompt_eval_count > r.prompt_eval_count);
  });
});

describe('Mistral and Llama 3 formats', () => {
  test('mistral-nemo: a required call comes back with a 9-character id the template accepts on the next turn', async () => {
    const server = await startServer(['-c', '4096', '--chat-template', 'mistral-nemo']);
    try {
      const client = server.client();
      const model = await modelName(server);
      const r = await client.chat.completions.create({ model, messages: ask, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, seed: 5, temperature: 1, max_tokens: 400 });
      const msg = r.choices[0].message;
      assertValidCalls(msg);
      for (const c of msg.tool_calls) assert.match(c.id, /^[A-Za-z0-9]{9}$/);
      const messages = [...ask, msg, ...msg.tool_calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: '{"ok": true}' }))];
      const next = await client.chat.completions.create({ model, messages, tools: TOOLS, max_tokens: 8, temperature: 0 });
      assert.ok(['stop', 'length', 'tool_calls'].includes(next.choices[0].finish_reason));
    } finally {
      assert.equal(await server.stop(), 0, server.stderr);
    }
  });

  test('llama3: a named call is one JSON object with "parameters"', async () => {
    const server = await startServer(['-c', '4096', '--chat-template', 'llama3']);
    try {
      const client = server.client();
      const model = await modelName(server);
      const r = await client.chat.completions.create({
        model, messages: ask, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'book_room' } }, seed: 9, temperature: 1, max_tokens: 400,
      });
      assert.equal(r.choices[0].finish_reason, 'tool_calls');
      assert.equal(r.choices[0].message.tool_calls.length, 1);
      assertValidCalls(r.choices[0].message, { only: 'book_room' });
    } finally {
      assert.equal(await server.stop(), 0, server.stderr);
    }
  });
});
