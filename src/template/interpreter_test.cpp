// interpreter_test.cpp: the Jinja interpreter against Jinja2's own behaviour. reference_cases.inc holds
// snippets with the output Jinja2 3.1.6 (HF configuration) gives for them, covering whitespace control,
// loops, namespaces, macros, filters, tests, slicing, methods, Python text forms and errors; the tests
// below add readable checks of the rules chat templates lean on, error messages with line numbers,
// the sandbox, and the render limits (each must trip quickly, not hang).
#include <gtest/gtest.h>

#include <pthread.h>

#include <atomic>
#include <thread>

#include "template/chat_template.h"
#include "util/error.h"

namespace moe::tmpl {
namespace {

using ojson = nlohmann::ordered_json;

struct ReferenceCase {
  const char* tmpl;
  const char* vars;
  const char* expected;  // nullptr: Jinja2 raises
};
#include "template/reference_cases.inc"

// Renders with the variables in `vars` (messages, and anything else as extra variables), as the
// reference did: bos "<s>", eos "</s>", clock at 2026-11-22 00:00 UTC.
std::string render(const std::string& tmpl, const ojson& vars = ojson::object(), const Limits& limits = {}) {
  ChatTemplate t(tmpl, limits);
  RenderOptions opt;
  opt.now_epoch_seconds = 1795305600;
  ojson messages = vars.contains("messages") ? vars["messages"] : ojson::array();
  for (auto it = vars.begin(); it != vars.end(); ++it)
    if (it.key() != "messages") opt.extra[it.key()] = it.value();
  return t.render(messages, opt);
}

std::string error_of(const std::string& tmpl, const ojson& vars = ojson::object(), const Limits& limits = {}) {
  try {
    std::string out = render(tmpl, vars, limits);
    return "no error, output: " + out;
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(Interpreter, MatchesJinja2OnReferenceCases) {
  size_t n = 0;
  for (const auto& c : kReferenceCases) {
    SCOPED_TRACE(c.tmpl);
    std::string got;
    ASSERT_NO_THROW(got = render(c.tmpl, ojson::parse(c.vars)));
    EXPECT_EQ(got, c.expected);
    ++n;
  }
  EXPECT_GE(n, 100u);
}

TEST(Interpreter, FailsWhereJinja2Fails) {
  for (const auto& c : kReferenceErrors) {
    SCOPED_TRACE(c.tmpl);
    EXPECT_THROW(render(c.tmpl, ojson::parse(c.vars)), Error);
  }
}

TEST(Interpreter, WhitespaceControl) {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it goes.
  EXPECT_EQ(render("a\n  {% if true %}\n  x\n  {% endif %}\nb"), "a\n  x\nb");
  // Variable tags are not lstripped, and no newline after them is trimmed.
  EXPECT_EQ(render("  {{ 'x' }}\ny"), "  x\ny");
  // `-` strips all whitespace on its side, newlines included; `+` keeps it.
  EXPECT_EQ(render("a \n {{- 'x' -}} \n b"), "axb");
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}"), "\nx");
  // Comments take part in lstrip and trim too.
  EXPECT_EQ(render("line1\n    {# note #}\nline2"), "line1\nline2");
  // One trailing newline of the template is dropped (keep_trailing_newline=False); \r\n becomes \n.
  EXPECT_EQ(render("x\n"), "x");
  EXPECT_EQ(render("x\n\n"), "x\n");
  EXPECT_EQ(render("a\r\nb"), "a\nb");
  // Text before a tag on the same line is kept.
  EXPECT_EQ(render("x  {% if true %}y{% endif %}"), "x  y");
}

TEST(Interpreter, LoopVariablesAndScoping) {
  EXPECT_EQ(render("{% for c in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
                   "{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}"),
            "103TrueFalse3 212FalseFalse3 321FalseTrue3 ");
  EXPECT_EQ(render("{% for i in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}"), "-2,1-3,2-,");
  EXPECT_EQ(render("{% for i in range(10) if i is even %}{{ i }}/{{ loop.length }} {% endfor %}"),
            "0/5 2/5 4/5 6/5 8/5 ");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  // A set inside a loop does not leak out; a namespace attribute does.
  EXPECT_EQ(render("{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{% endfor %}{{ x }}"), "0");
  EXPECT_EQ(render("{% set ns = namespace(x=0) %}{% for i in range(3) %}{% set ns.x = ns.x + 1 %}{% endfor %}"
                   "{{ ns.x }}"),
            "3");
  // Inside an if, set is visible afterwards (ifs have no scope).
  EXPECT_EQ(render("{% if true %}{% set y = 5 %}{% endif %}{{ y }}"), "5");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}|items %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(render("{% for i in range(9) %}{% if i == 3 %}{% break %}{% endif %}{% if i is odd %}{% continue %}"
                   "{% endif %}{{ i }}{% endfor %}"),
            "02");
}

TEST(Interpreter, Macros) {
  EXPECT_EQ(render("{% macro m(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(b=3, a=4) }}"),
            "[1B][12][43]");
  EXPECT_EQ(render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"), "321");
  EXPECT_EQ(render("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"), "<in>");
  EXPECT_NE(error_of("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}").find("takes not more than 1 argument"),
            std::string::npos);
}

TEST(Interpreter, PythonTextForms) {
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5] }}"), "[1, 'a', None, True, 1.5]");
  EXPECT_EQ(render("{{ {'k': \"it's\"} }}"), "{'k': \"it's\"}");
  EXPECT_EQ(render("{{ (1,) }} {{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }}"), "(1,) 3.5 4.0 3 -4 2");
  EXPECT_EQ(render("{{ 1e16 }} {{ 1e15 }} {{ 0.00001 }} {{ 0.1 + 0.2 }}"), "1e+16 1000000000000000.0 1e-05 0.30000000000000004");
}

TEST(Interpreter, SlicingAndStrings) {
  EXPECT_EQ(render("{{ 'abcdef'[::-1] }} {{ 'abcdef'[1:3] }} {{ [1,2,3][-1] }} {{ [1,2,3,4][1:] }}"), "fedcba bc 3 [2, 3, 4]");
  // Lengths and indices count code points, not bytes.
  EXPECT_EQ(render("{{ 'Grüße'|length }} {{ 'Grüße'[2] }} {{ 'Grüße'[::-1] }}"), "5 ü eßürG");
  EXPECT_EQ(render("{{ '<think>a</think>\\n\\nb'.split('</think>')[-1].lstrip('\\n') }}"), "b");
  EXPECT_EQ(render("{{ 'a b'.startswith('a') }} {{ ' x '.strip() }} {{ 'x'|upper }} {{ 'straße'|upper }}"),
            "True x X STRASSE");
}

TEST(Interpreter, TojsonIsHfJsonDumps) {
  // Key order kept, no HTML escaping, non-ASCII kept, Python's separators and float text.
  EXPECT_EQ(render("{{ {'b': 1, 'a': ['<é>', 1.0, none]}|tojson }}"), "{\"b\": 1, \"a\": [\"<é>\", 1.0, null]}");
  EXPECT_EQ(render("{{ {'a': [1]}|tojson(indent=2) }}"), "{\n  \"a\": [\n    1\n  ]\n}");
  EXPECT_EQ(render("{{ x|tojson }}", ojson::parse(R"({"x": {"z": 1, "y": 2}})")), "{\"z\": 1, \"y\": 2}");
}

TEST(Interpreter, UndefinedBehavesAsJinja2Default) {
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
  EXPECT_EQ(render("{{ missing is defined }} {{ missing|length }} {{ missing|default('d') }}"), "False 0 d");
  EXPECT_EQ(render("{{ m.nope }}|{{ m['nope'] }}|{{ m.nope is defined }}", {{"m", {{"a", 1}}}}), "||False");
  // An attribute of something undefined raises (default Undefined, not ChainableUndefined).
  EXPECT_NE(error_of("{{ missing.attr }}").find("'missing' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ m.a.b.c }}", {{"m", {{"a", ojson::object()}}}}).find("'dict object' has no attribute 'b'"),
            std::string::npos);
}

TEST(Interpreter, ErrorsNameTheLine) {
  std::string e = error_of("line one\n{% if true %}\n  {{ 1 + 'a' }}\n{% endif %}");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported operand"), std::string::npos) << e;
  e = error_of("a\nb\n{% for x in y %}\n{{ x }}");
  EXPECT_NE(e.find("syntax error at line 4"), std::string::npos) << e;
  EXPECT_NE(e.find("endfor"), std::string::npos) << e;
  e = error_of("{{ 'ok' }}\n\n{% frobnicate %}");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown tag 'frobnicate'"), std::string::npos) << e;
  // raise_exception's message comes through verbatim.
  EXPECT_EQ(error_of("\n\n{{ raise_exception('Roles must alternate') }}"), "Roles must alternate");
}

TEST(Interpreter, UnknownFiltersFailAtParseTimeOutsideConditionals) {
  // As Jinja2 3.x: a compile error, except inside an if (or inline if), where only running it fails.
  EXPECT_THROW(ChatTemplate("{% macro m() %}{{ x|nosuch }}{% endmacro %}"), Error);
  EXPECT_THROW(ChatTemplate("{% for i in [] %}{{ i is nosuch }}{% endfor %}"), Error);
  EXPECT_EQ(render("{% if false %}{{ x|nosuch }}{% endif %}ok"), "ok");
  EXPECT_EQ(render("{{ 'ok' if true else x|nosuch }}"), "ok");
  EXPECT_NE(error_of("{% if true %}{{ x|nosuch }}{% endif %}").find("No filter named 'nosuch'"), std::string::npos);
  // Tests check their argument count.
  EXPECT_NE(error_of("{{ [{'r': 1}]|selectattr('r', 'equalto', 1, 2)|list }}").find("takes 1 argument"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 1 is odd(3) }}").find("takes 0 argument"), std::string::npos);
}

TEST(Interpreter, SandboxRefusesMutation) {
  EXPECT_NE(error_of("{% set l = [1] %}{{ l.append(2) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(error_of("{% set d = {} %}{{ d.update({'a': 1}) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(error_of("{% include 'x.jinja' %}").find("loader"), std::string::npos);
  EXPECT_EQ(render("{{ ''.__class__ }}|{{ [].__len__ }}"), "|");
}

TEST(Interpreter, StrftimeNow) {
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d') }}"), "22 Nov 2026 2026-11-22");
  ChatTemplate t("{{ strftime_now('%Y') }}");
  RenderOptions opt;
  opt.strftime_now = [](const std::string& fmt) { return "[" + fmt + "]"; };
  EXPECT_EQ(t.render(ojson::array(), opt), "[%Y]");
  RenderOptions clock;  // the real clock: a four-digit year
  EXPECT_EQ(t.render(ojson::array(), clock).size(), 4u);
}

TEST(Interpreter, RenderVariables) {
  ChatTemplate t("{{ bos_token }}{{ tools is defined }}{{ add_generation_prompt }}{{ enable_thinking }}{{ eos_token }}");
  RenderOptions opt;
  EXPECT_EQ(t.render(ojson::array(), opt), "<s>FalseFalse</s>");
  opt.tools = ojson::array();
  opt.add_generation_prompt = true;
  opt.extra["enable_thinking"] = false;
  opt.bos_token = "<B>";
  EXPECT_EQ(t.render(ojson::array(), opt), "<B>TrueTrueFalse</s>");
  // A plain nlohmann::json converts (its keys are sorted already).
  nlohmann::json plain = nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}});
  ChatTemplate m(*builtin_template("mixtral"));
  EXPECT_EQ(m.render(plain, RenderOptions{}), "<s> [INST] hi [/INST]");
}

TEST(Interpreter, ConcurrentRendersShareOneTemplate) {
  ChatTemplate t(*builtin_template("qwen3"));
  ojson messages = ojson::parse(R"([{"role":"user","content":"a"},{"role":"assistant","content":"<think>r</think>b"},
                                   {"role":"user","content":"c"}])");
  RenderOptions opt;
  opt.add_generation_prompt = true;
  const std::string expected = t.render(messages, opt);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i)
        if (t.render(messages, opt) != expected) ++mismatches;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// ---- limits: each must be hit quickly and reported as moe::Error ----

// The limits are counts, not clocks: each test shows the count stops the template at the configured
// value (a render one unit under it succeeds, one over it fails), so "quickly" follows from the count
// and no assertion depends on how loaded the machine is.

TEST(InterpreterLimits, NestedLoopsHitTheIterationLimit) {
  std::string e = error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  EXPECT_NE(e.find("loop iteration limit"), std::string::npos) << e;
  Limits small;
  small.max_loop_iterations = 50;
  EXPECT_NE(error_of("{% for i in range(51) %}{% endfor %}", {}, small).find("iteration limit"), std::string::npos);
  EXPECT_EQ(render("{% for i in range(50) %}{% endfor %}ok", {}, small), "ok");
}

TEST(InterpreterLimits, DeepMacroRecursionHitsTheDepthLimit) {
  std::string e = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(e.find("recursion depth limit"), std::string::npos) << e;
  Limits small;
  small.max_recursion_depth = 5;
  const std::string countdown = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}";
  EXPECT_EQ(render(countdown + "{{ f(4) }}ok", {}, small), "ok");
  EXPECT_NE(error_of(countdown + "{{ f(5) }}", {}, small).find("recursion depth"), std::string::npos);
}

TEST(InterpreterLimits, OutputAndWorkAreBounded) {
  Limits small;
  small.max_output_bytes = 1000;
  EXPECT_NE(error_of("{% for i in range(1000) %}xx{% endfor %}", {}, small).find("output limit"), std::string::npos);
  // Quadratic list growth and huge repetition stop at the work limit instead of running for minutes.
  EXPECT_NE(error_of("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}"
                     "{% endfor %}")
                .find("work limit"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'a' * 1000000000000 }}").find("work limit"), std::string::npos);
  EXPECT_NE(error_of("{{ [1, 2] * 1000000000000 }}").find("work limit"), std::string::npos);
  EXPECT_NE(error_of("{{ range(10000000) }}").find("Range too big"), std::string::npos);
  // The work count stops a string built past it, and lets one under it through.
  Limits work;
  work.max_work = 10000;
  EXPECT_NE(error_of("{{ 'a' * 20000 }}", {}, work).find("work limit"), std::string::npos);
  EXPECT_EQ(render("{{ ('a' * 5000) | length }}", {}, work), "5000");
  EXPECT_NE(error_of("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
                     {}, work).find("work limit"),
            std::string::npos);
}

TEST(InterpreterLimits, DeepNestingIsRefusedNotCrashed) {
  EXPECT_NE(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}").find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(3000, '-') + "1 }}").find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int k = 0; k < 200; ++k) ifs += "{% if true %}";
  EXPECT_NE(error_of(ifs).find("nested too deeply"), std::string::npos);
  // Values nested by a loop stop at the value depth limit.
  EXPECT_NE(error_of("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}")
                .find("nested too deeply"),
            std::string::npos);
  // A namespace holding itself cannot be printed forever, and is freed after the render.
  EXPECT_NE(error_of("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}").find("too deeply"), std::string::npos);
  ojson deep = 1;
  for (int k = 0; k < 1000; ++k) deep = ojson::array({deep});
  EXPECT_NE(error_of("{{ x }}", {{"x", deep}}).find("nested too deeply"), std::string::npos);
}

TEST(InterpreterLimits, LongLeftLeaningChainsCountTowardTheNestingLimit) {
  // Each link of `1 + 1 + …`, `.a.a…`, `|trim|trim…` makes the tree one level deeper; 100,000 of them
  // used to pass the parser and then overflow the stack in evaluation or in the nodes' destructors
  // (even inside a branch that never runs, at the end of parsing).
  auto chain = [](const std::string& head, const std::string& link, int n) {
    std::string s = head;
    s.reserve(head.size() + link.size() * static_cast<size_t>(n));
    for (int k = 0; k < n; ++k) s += link;
    return s;
  };
  const int n = 100000;
  for (const std::string& expr : {chain("1", " + 1", n), chain("x", ".a", n), chain("'s'", "|trim", n),
                                  chain("x", "[0]", n), chain("f", "()", n), chain("1", " * 1", n),
                                  chain("true", " and true", n), chain("false", " or false", n),
                                  chain("2", " ** 1", n), chain("1", " if true else 1", n)}) {
    EXPECT_NE(error_of("{{ " + expr + " }}").find("nested too deeply"), std::string::npos) << expr.substr(0, 40);
    EXPECT_NE(error_of("{% if false %}{{ " + expr + " }}{% endif %}").find("nested too deeply"), std::string::npos)
        << expr.substr(0, 40);
  }
  EXPECT_NE(error_of("{% set x = 1 %}{% filter " + chain("trim", "|trim", n) + " %}{% endfilter %}")
                .find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(error_of("{{ " + chain("x", " is defined", n) + " }}").find("cannot chain"), std::string::npos);
  // Chains as long as real templates write them still render.
  EXPECT_EQ(render("{{ " + chain("1", " + 1", 40) + " }}"), "41");
  EXPECT_EQ(render("{{ " + chain("' x '", "|trim", 20) + " }}"), "x");
  EXPECT_EQ(render("{{ x" + chain("", ".a", 10) + " }}", {{"x", ojson::parse(
      R"({"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":7}}}}}}}}}})")}}), "7");
}

// Unoptimized and sanitizer builds use several times the stack per frame; the bound is for Release.
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
constexpr int kStackScale = 1;
#else
constexpr int kStackScale = 8;
#endif

TEST(InterpreterLimits, DeepestEvaluationFitsInTwoMegabytesOfStack) {
  // 63 nested macro calls, each 20 list levels deep, run into the evaluation depth limit; the native
  // stack used on the way there must fit a small thread stack (server threads are not main threads).
  const std::string deep = "{% macro f(n) %}{% if n > 0 %}{{ " + std::string(20, '[') + "f(n - 1)" +
                           std::string(20, ']') + "|length }}{% else %}x{% endif %}{% endmacro %}{{ f(63) }}";
  struct Job {
    std::string tmpl, error;
  } job{deep, {}};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, static_cast<size_t>((2u << 20) * kStackScale));
  pthread_t th;
  ASSERT_EQ(pthread_create(
                &th, &attr,
                [](void* p) -> void* {
                  auto* j = static_cast<Job*>(p);
                  j->error = error_of(j->tmpl);
                  return nullptr;
                },
                &job),
            0);
  pthread_join(th, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_NE(job.error.find("evaluation depth limit"), std::string::npos) << job.error;
}

}  // namespace
}  // namespace moe::tmpl
