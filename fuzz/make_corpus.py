#!/usr/bin/env python3
# make_corpus.py: writes the generated seeds of fuzz/corpus/ (small GGUF files with metadata of every
# value type, tensors and tokenizer vocabularies; template and request seeds). Run from the repository
# root; the seeds it writes are committed, so this only needs to run again when they should change.
import json, os, struct, shutil, glob

def s(b): b = b.encode() if isinstance(b, str) else b; return struct.pack('<Q', len(b)) + b
SCALAR = {'u8': (0, '<B'), 'i8': (1, '<b'), 'u16': (2, '<H'), 'i16': (3, '<h'), 'u32': (4, '<I'), 'i32': (5, '<i'),
          'f32': (6, '<f'), 'bool': (7, '<?'), 'u64': (10, '<Q'), 'i64': (11, '<q'), 'f64': (12, '<d')}
def val(kind, v):
    if kind == 'str': return struct.pack('<I', 8) + s(v)
    if kind.startswith('arr:'):
        et = kind[4:]
        if et == 'str': return struct.pack('<II', 9, 8) + struct.pack('<Q', len(v)) + b''.join(s(x) for x in v)
        t, f = SCALAR[et]
        return struct.pack('<II', 9, t) + struct.pack('<Q', len(v)) + b''.join(struct.pack(f, x) for x in v)
    t, f = SCALAR[kind]
    return struct.pack('<I', t) + struct.pack(f, v)
def gguf(kvs, tensors=(), version=3, align=32):
    out = b'GGUF' + struct.pack('<IQQ', version, len(tensors), len(kvs))
    for k, kind, v in kvs: out += s(k) + val(kind, v)
    data = b''; infos = b''
    for name, ggml_type, ne, payload in tensors:
        while len(data) % align: data += b'\0'
        infos += s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne)
        infos += struct.pack('<IQ', ggml_type, len(data))
        data += payload
    out += infos
    while len(out) % align: out += b'\0'
    return out + data

def write(path, b):
    with open(path, 'wb') as f: f.write(b)

f32 = lambda xs: b''.join(struct.pack('<f', x) for x in xs)
q8_0 = struct.pack('<e', 0.5) + bytes(range(32))  # one Q8_0 block: f16 scale + 32 int8
meta = [('general.architecture', 'str', 'llama'), ('general.name', 'str', 'seed'), ('llama.block_count', 'u32', 1),
        ('llama.context_length', 'u64', 64), ('llama.rope.freq_base', 'f32', 10000.0), ('x.i8', 'i8', -3),
        ('x.u16', 'u16', 7), ('x.i16', 'i16', -7), ('x.i32', 'i32', -9), ('x.i64', 'i64', -11), ('x.f64', 'f64', 0.25),
        ('x.bool', 'bool', True), ('x.u8', 'u8', 255), ('x.arr_f32', 'arr:f32', [1.0, 2.0]),
        ('x.arr_i32', 'arr:i32', [1, -2, 3]), ('x.arr_str', 'arr:str', ['a', 'bc']), ('x.arr_u8', 'arr:u8', [1, 2, 3, 4])]
write('fuzz/corpus/gguf/metadata_and_tensors.gguf',
      gguf(meta, [('tok_embd.weight', 0, [4, 2], f32(range(8))), ('output.weight', 8, [32, 1], q8_0)]))
write('fuzz/corpus/gguf/v2_no_tensors.gguf', gguf(meta[:4], version=2))
write('fuzz/corpus/gguf/empty.gguf', gguf([]))

pieces = ['<unk>', '<s>', '</s>'] + ['<0x%02X>' % b for b in range(256)] + ['▁', '▁H', 'ello', '▁w', 'orld', 'ü', '🤖', '[INST]']
types = [2, 3, 3] + [6] * 256 + [1] * 7 + [4]
scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, 0.0]
tok = [('tokenizer.ggml.model', 'str', 'llama'), ('tokenizer.ggml.tokens', 'arr:str', pieces),
       ('tokenizer.ggml.scores', 'arr:f32', scores), ('tokenizer.ggml.token_type', 'arr:i32', types),
       ('tokenizer.ggml.bos_token_id', 'u32', 1), ('tokenizer.ggml.eos_token_id', 'u32', 2),
       ('tokenizer.ggml.unknown_token_id', 'u32', 0), ('tokenizer.ggml.add_bos_token', 'bool', True)]
write('fuzz/corpus/tokenizer/byte_fallback_vocab.gguf', gguf(tok))
small = [('tokenizer.ggml.model', 'str', 'llama'), ('tokenizer.ggml.tokens', 'arr:str', ['<unk>', '<s>', '</s>', '▁a', 'b']),
         ('tokenizer.ggml.scores', 'arr:f32', [0.0, 0.0, 0.0, -1.0, -2.0]),
         ('tokenizer.ggml.token_type', 'arr:i32', [2, 3, 3, 1, 1])]
write('fuzz/corpus/tokenizer/small_vocab.gguf', gguf(small))
shared = os.environ.get('MOE_FIXTURES', '../shared')
if os.path.exists(shared + '/models/tok512.model'):
    shutil.copy(shared + '/models/tok512.model', 'fuzz/corpus/tokenizer/tok512.model')

msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "user", "content": "Again"}]
for path in sorted(glob.glob('templates/*.jinja')):
    with open(path, 'rb') as f: src = f.read()
    write('fuzz/corpus/template/' + os.path.basename(path), src + b'\0' + json.dumps(msgs).encode())
write('fuzz/corpus/template/expressions.jinja',
      b"{% set ns = namespace(n=0) %}{% for m in messages if m.role != 'system' %}{{ loop.index ~ ':' ~ m['content']|trim|upper }}"
      b"{% set ns.n = ns.n + 1 %}{% endfor %}{{ (1 + 2 * 3) // 2 ** 2 }}{{ [1, 2, 3][1:] | join(',') }}"
      b"{{ {'a': 1}.items() | list | tojson }}{% macro m(x, y=2) %}{{ x ~ y }}{% endmacro %}{{ m(1) }}"
      b"{{ 'x' if ns.n is even else 'y' }}{{ raise_exception('no') if false }}")

reqs = {
  'chat.json': {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_tokens": 8, "temperature": 0.5, "top_p": 0.9, "stop": ["\n", "END"], "n": 2, "seed": 1, "stream": True,
                "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 3, "response_format": {"type": "json_object"},
                "presence_penalty": 0.1, "frequency_penalty": 0.2, "moe": {"routing": True}},
  'completion.json': {"prompt": ["Once upon", [1, 2, 3]], "max_tokens": 4, "echo": False, "logit_bias": {"5": -100}, "stop": "x"},
  'embedding.json': {"input": ["a red ball", [1, 2, 3]], "encoding_format": "float", "dimensions": 8},
  'tokenize.json': {"content": "Hello", "add_special": True},
  'detokenize.json': {"tokens": [1, 2, 3]},
  'ollama_generate.json': {"model": "m:latest", "prompt": "Hi", "system": "s", "template": "{{ .System }}{{ .Prompt }}",
                           "options": {"temperature": 0, "num_predict": 4, "stop": ["x"], "num_ctx": 64}, "format": "json", "raw": False},
  'ollama_chat.json': {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": False, "format": {"type": "object"}},
  'ollama_embed.json': {"model": "m", "input": ["a", "b"], "truncate": True},
}
for name, body in reqs.items():
    write('fuzz/corpus/request/' + name, json.dumps(body).encode())

lines = [{"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": reqs['chat.json']},
         {"custom_id": "c2", "method": "POST", "url": "/v1/completions", "body": reqs['completion.json']},
         {"custom_id": "c3", "method": "POST", "url": "/v1/embeddings", "body": reqs['embedding.json']}]
write('fuzz/corpus/batch_line/three_lines.jsonl', ('\n'.join(json.dumps(l) for l in lines) + '\n').encode())
write('fuzz/corpus/batch_line/bad_lines.jsonl',
      b'not json\n{"custom_id":"c1","method":"GET","url":"/v1/completions","body":{}}\n'
      b'{"custom_id":"c1","method":"POST","url":"/v1/completions","body":{"prompt":"x"}}\n'
      b'{"custom_id":"c1","method":"POST","url":"/v1/completions","body":{"prompt":"y"}}\n')
