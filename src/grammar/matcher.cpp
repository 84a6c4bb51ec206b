// matcher.cpp: running a compiled grammar over bytes, and the token mask of a step.
//
// A parse stack is a chain of interned nodes (position, parent): "match from `position`, then return to
// `parent`". Interning makes equal stacks equal ids, and calling a rule as the last element of an
// alternative pushes nothing (a tail call), so `x*` and a JSON string's characters return to the very
// same stacks after every byte. A state is the sorted set of stack ids whose top element is a byte set
// (plus "accepting": some path has returned from root); states are interned too, and each caches its 256
// successors. The token mask walks the vocabulary's byte trie from the current state along those cached
// transitions, pruning a subtree as soon as a byte is refused, and is itself cached per state: inside a
// string the state repeats, so most steps cost one copy of a bit mask. Each node also knows the fewest
// bytes that finish its stack, so "can this still be closed within the tokens left?" is one lookup.
#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "grammar/grammar_impl.h"

namespace moe::grammar {

namespace {

struct Node {
  uint32_t pos;
  uint32_t parent;
  uint32_t depth;
  uint32_t closing;  // fewest bytes that empty this stack
};

struct VecHash {
  size_t operator()(const std::vector<uint32_t>& v) const {
    uint64_t h = 1469598103934665603ull;
    for (uint32_t x : v) h = (h ^ x) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

constexpr int32_t kUnknown = -2;
constexpr int32_t kDead = -1;
constexpr int32_t kOverLimit = -3;  // a transition whose state would pass max_stacks: dead, for that reason
constexpr size_t kMaxNodes = 1u << 18;   // beyond these the matcher rebuilds itself from its current state
constexpr size_t kMaxStates = 1u << 12;  // (states hold 1 KiB of transitions each)

}  // namespace

struct Matcher::Impl {
  std::shared_ptr<const Grammar> grammar;
  const Grammar::Impl* g;
  std::vector<Node> nodes;                                   // [0]: the empty stack
  std::unordered_map<uint64_t, uint32_t> node_index;
  struct State {
    std::vector<uint32_t> stacks;  // node ids, sorted
    bool accepting = false;
    uint32_t closing = 0;
    std::vector<int32_t> next;     // [256] successor state ids, kUnknown until computed
    int32_t mask_slot = -1;        // cached token mask (GrammarProcessor)
    bool lossy = false;            // reached at least once with parses dropped by a limit
  };
  std::vector<State> states;
  std::unordered_map<std::vector<uint32_t>, int32_t, VecHash> state_index;  // stacks + accepting flag
  int32_t current = kDead;
  uint64_t limit_hits = 0;  // steps fed to this matcher whose parses a limit cut (Matcher::limit_hits)
  uint64_t generation = 0;  // bumped when the tables are rebuilt (invalidates cached masks)

  // Scratch of one expansion.
  std::vector<std::pair<uint32_t, uint32_t>> work;
  std::unordered_set<uint64_t> visited;
  std::vector<uint32_t> out;
  bool dropped = false;  // the expansions since the last make_state dropped a path at a limit

  explicit Impl(std::shared_ptr<const Grammar> gr) : grammar(std::move(gr)), g(&grammar->impl()) { reset_to_start(); }

  void clear_tables() {
    nodes.assign(1, Node{0, 0, 0, 0});
    node_index.clear();
    states.clear();
    state_index.clear();
    ++generation;
  }

  void reset_to_start() {
    clear_tables();
    out.clear();
    dropped = false;
    bool accepting = false;
    bool ok = true;
    for (uint32_t start : g->alts[g->root]) ok = expand(start, 0, accepting) && ok;
    current = ok ? make_state(accepting) : kDead;
    if (!ok || limit_met(current)) ++limit_hits;
    if (current == kOverLimit) current = kDead;
  }

  // Whether reaching `sid` lost parses to a limit: an over-limit transition, or a state built with
  // paths dropped.
  bool limit_met(int32_t sid) const {
    return sid == kOverLimit || (sid >= 0 && states[static_cast<size_t>(sid)].lossy);
  }

  uint32_t intern(uint32_t pos, uint32_t parent) {
    uint64_t key = (uint64_t{pos} << 32) | parent;
    auto it = node_index.find(key);
    if (it != node_index.end()) return it->second;
    const Node& p = nodes[parent];
    Node n{pos, parent, parent == 0 ? 1 : p.depth + 1, sat_add(g->min_rest[pos], parent == 0 ? 0 : p.closing)};
    uint32_t id = static_cast<uint32_t>(nodes.size());
    nodes.push_back(n);
    node_index.emplace(key, id);
    return id;
  }

  // Adds to `out` every stack reachable from "match from pos, then parent" whose top is a byte set;
  // sets `accepting` when a path returns from root. False when a limit was hit (the caller drops the path).
  bool expand(uint32_t pos, uint32_t parent, bool& accepting) {
    const Limits& lim = g->limits;
    work.clear();
    visited.clear();
    work.push_back({pos, parent});
    size_t steps = 0;
    while (!work.empty()) {
      auto [p, par] = work.back();
      work.pop_back();
      if (!visited.insert((uint64_t{p} << 32) | par).second) continue;
      if (++steps > lim.max_stacks * 64) return dropped = true, false;
      const Element& e = g->elems[p];
      switch (e.op) {
        case Op::End:
          if (par == 0) accepting = true;
          else work.push_back({nodes[par].pos, nodes[par].parent});
          break;
        case Op::Bytes:
          if (nodes[par].depth + 1 > lim.max_stack_depth) {  // too deep: this path is dropped
            dropped = true;
            break;
          }
          out.push_back(intern(p, par));
          if (out.size() > lim.max_stacks * 4) return dropped = true, false;
          break;
        case Op::Ref: {
          uint32_t cont = par;
          if (g->elems[p + 1].op != Op::End) {
            if (nodes[par].depth + 1 > lim.max_stack_depth) {
              dropped = true;
              break;
            }
            cont = intern(p + 1, par);
          }
          for (uint32_t start : g->alts[e.arg]) work.push_back({start, cont});
          break;
        }
      }
    }
    return true;
  }

  // Interns the state made of `out` (sorted, deduplicated here) and `accepting`; kOverLimit when it has
  // more than max_stacks stacks. A state reached with `dropped` paths is marked lossy.
  int32_t make_state(bool accepting) {
    const bool lossy = std::exchange(dropped, false);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (out.empty() && !accepting) return lossy ? kOverLimit : kDead;
    if (out.size() > g->limits.max_stacks) return kOverLimit;
    out.push_back(accepting ? 1u : 0u);  // the key carries the flag
    auto it = state_index.find(out);
    if (it != state_index.end()) {
      states[static_cast<size_t>(it->second)].lossy |= lossy;
      return it->second;
    }
    State s;
    s.stacks.assign(out.begin(), out.end() - 1);
    s.accepting = accepting;
    s.lossy = lossy;
    s.closing = accepting ? 0 : kInfiniteLength;
    for (uint32_t n : s.stacks) s.closing = std::min(s.closing, nodes[n].closing);
    s.next.assign(256, kUnknown);
    int32_t id = static_cast<int32_t>(states.size());
    states.push_back(std::move(s));
    state_index.emplace(out, id);
    return id;
  }

  int32_t step(int32_t sid, unsigned char b) {
    int32_t cached = states[static_cast<size_t>(sid)].next[b];
    if (cached != kUnknown) return cached;
    out.clear();
    dropped = false;  // expand() sets it for every path a limit cuts; make_state() reads it
    bool accepting = false;
    // Copy: expand() may grow `states`' nodes but never `states` itself; stacks are read by value.
    const std::vector<uint32_t> stacks = states[static_cast<size_t>(sid)].stacks;
    for (uint32_t n : stacks) {
      const Node node = nodes[n];
      if (!g->sets[g->elems[node.pos].arg].has(b)) continue;
      std::vector<uint32_t> keep;
      keep.swap(out);
      if (!expand(node.pos + 1, node.parent, accepting)) out.clear();
      keep.insert(keep.end(), out.begin(), out.end());
      out.swap(keep);
    }
    int32_t next = make_state(accepting);
    states[static_cast<size_t>(sid)].next[b] = next;
    return next;
  }

  // The state after `bytes` from `sid` (negative: dead); `*hits` counts the steps a limit cut.
  int32_t run(int32_t sid, std::string_view bytes, uint64_t* hits = nullptr) {
    for (unsigned char b : bytes) {
      if (sid < 0) return kDead;
      sid = step(sid, b);
      if (hits != nullptr && limit_met(sid)) ++*hits;
    }
    return sid < 0 ? kDead : sid;
  }

  // Rebuilds the tables around the current state when they have grown large (long generations).
  void maybe_compact() {
    if (nodes.size() < kMaxNodes && states.size() < kMaxStates) return;
    if (current < 0) return;
    // Export the current stacks as position lists (top first), then re-intern them.
    std::vector<std::vector<uint32_t>> stacks;
    for (uint32_t n : states[static_cast<size_t>(current)].stacks) {
      std::vector<uint32_t> chain;
      for (uint32_t k = n; k != 0; k = nodes[k].parent) chain.push_back(nodes[k].pos);
      stacks.push_back(std::move(chain));
    }
    bool accepting = states[static_cast<size_t>(current)].accepting;
    clear_tables();
    out.clear();
    for (const auto& chain : stacks) {
      uint32_t parent = 0;
      for (size_t i = chain.size(); i-- > 0;) parent = intern(chain[i], parent);
      out.push_back(parent);
    }
    current = make_state(accepting);
  }

  std::string shortest_completion(int32_t sid) const {
    if (sid < 0) return {};
    const State& s = states[static_cast<size_t>(sid)];
    if (s.accepting || s.closing >= kInfiniteLength) return {};
    uint32_t best = 0;
    for (uint32_t n : s.stacks)
      if (nodes[n].closing == s.closing) {
        best = n;
        break;
      }
    std::string text;
    // Positions still to finish, innermost first; a Ref expands to its shortest alternative.
    std::vector<uint32_t> todo;
    for (uint32_t k = best; k != 0; k = nodes[k].parent) todo.push_back(nodes[k].pos);
    std::reverse(todo.begin(), todo.end());  // a stack: back() is worked on first
    while (!todo.empty() && text.size() < s.closing) {
      uint32_t p = todo.back();
      todo.pop_back();
      const Element& e = g->elems[p];
      if (e.op == Op::End) continue;
      todo.push_back(p + 1);
      if (e.op == Op::Bytes) text += static_cast<char>(g->sets[e.arg].lowest());
      else todo.push_back(g->rule_min_alt[e.arg]);
    }
    return text;
  }
};

Matcher::Matcher(std::shared_ptr<const Grammar> grammar) {
  if (!grammar) throw GrammarError("", "Matcher needs a grammar");
  impl_ = std::make_unique<Impl>(std::move(grammar));
}
Matcher::Matcher(const Matcher& o) : impl_(std::make_unique<Impl>(*o.impl_)) { impl_->g = &impl_->grammar->impl(); }
Matcher& Matcher::operator=(const Matcher& o) {
  if (this != &o) impl_ = std::make_unique<Impl>(*o.impl_);
  return *this;
}
Matcher::~Matcher() = default;

bool Matcher::advance(std::string_view bytes) {
  int32_t next = impl_->run(impl_->current, bytes, &impl_->limit_hits);
  if (next < 0) return false;
  impl_->current = next;
  impl_->maybe_compact();
  return true;
}
bool Matcher::accepts(std::string_view bytes) const { return impl_->run(impl_->current, bytes) >= 0; }
bool Matcher::accepting() const {
  return impl_->current >= 0 && impl_->states[static_cast<size_t>(impl_->current)].accepting;
}
bool Matcher::complete() const {
  return accepting() && impl_->states[static_cast<size_t>(impl_->current)].stacks.empty();
}
bool Matcher::dead() const { return impl_->current < 0; }
std::string Matcher::shortest_completion() const { return impl_->shortest_completion(impl_->current); }
uint64_t Matcher::limit_hits() const { return impl_->limit_hits; }

// ---------------------------------------------------------------------------------------------------
// Vocabulary trie.

struct Vocabulary::Impl {
  std::vector<std::string> text;
  // Node k's children are edges[first_edge[k] .. first_edge[k+1]); tokens ending at k are
  // token_ids[first_token[k] .. first_token[k+1]).
  std::vector<uint32_t> first_edge, first_token;
  std::vector<uint8_t> edge_byte;
  std::vector<uint32_t> edge_child;
  std::vector<int32_t> token_ids;
};

Vocabulary::Vocabulary(std::vector<std::string> token_text) : impl_(std::make_unique<Impl>()) {
  Impl& v = *impl_;
  v.text = std::move(token_text);
  // Sort the non-empty texts; a trie over sorted strings is built in one pass with a path stack, and its
  // nodes come out in DFS order.
  std::vector<int32_t> order;
  for (int32_t id = 0; id < static_cast<int32_t>(v.text.size()); ++id)
    if (!v.text[static_cast<size_t>(id)].empty()) order.push_back(id);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return v.text[static_cast<size_t>(a)] < v.text[static_cast<size_t>(b)] || (v.text[static_cast<size_t>(a)] == v.text[static_cast<size_t>(b)] && a < b);
  });
  struct Build {
    std::vector<std::pair<uint8_t, uint32_t>> children;
    std::vector<int32_t> tokens;
  };
  std::vector<Build> nodes(1);
  std::vector<uint32_t> path{0};  // path[d]: node for the first d bytes of the previous text
  std::string_view prev;
  for (int32_t id : order) {
    std::string_view t = v.text[static_cast<size_t>(id)];
    size_t common = 0;
    while (common < prev.size() && common < t.size() && prev[common] == t[common]) ++common;
    path.resize(common + 1);
    for (size_t d = common; d < t.size(); ++d) {
      uint32_t child = static_cast<uint32_t>(nodes.size());
      nodes.emplace_back();
      nodes[path.back()].children.push_back({static_cast<uint8_t>(t[d]), child});
      path.push_back(child);
    }
    nodes[path.back()].tokens.push_back(id);
    prev = t;
  }
  for (const Build& n : nodes) {
    v.first_edge.push_back(static_cast<uint32_t>(v.edge_byte.size()));
    v.first_token.push_back(static_cast<uint32_t>(v.token_ids.size()));
    for (auto [b, c] : n.children) v.edge_byte.push_back(b), v.edge_child.push_back(c);
    v.token_ids.insert(v.token_ids.end(), n.tokens.begin(), n.tokens.end());
  }
  v.first_edge.push_back(static_cast<uint32_t>(v.edge_byte.size()));
  v.first_token.push_back(static_cast<uint32_t>(v.token_ids.size()));
}
Vocabulary::~Vocabulary() = default;
int32_t Vocabulary::n_vocab() const { return static_cast<int32_t>(impl_->text.size()); }
const std::string& Vocabulary::text(int32_t id) const { return impl_->text.at(static_cast<size_t>(id)); }

// ---------------------------------------------------------------------------------------------------
// The processor.

namespace {
constexpr size_t kMaxCachedMasks = 256;
}

struct GrammarProcessor::Impl {
  Matcher matcher;
  std::shared_ptr<const Vocabulary> vocab;
  std::vector<int32_t> end_ids;
  struct Mask {
    std::vector<uint64_t> bits;
    uint32_t max_closing = 0;  // the largest shortest-completion of any allowed token's next state
  };
  std::vector<Mask> masks;     // cached unbounded masks, by State::mask_slot
  uint64_t masks_generation = 0;
  Mask scratch;
  std::vector<std::pair<uint32_t, int32_t>> walk;

  Impl(std::shared_ptr<const Grammar> g, std::shared_ptr<const Vocabulary> v, std::vector<int32_t> ends)
      : matcher(std::move(g)), vocab(std::move(v)), end_ids(std::move(ends)) {}

  // Every token whose text the state takes and whose next state can be closed within `budget` bytes.
  void compute(Matcher::Impl& m, int32_t sid, uint32_t budget, Mask& mask) {
    const Vocabulary::Impl& v = vocab->impl();
    mask.bits.assign((v.text.size() + 63) / 64, 0);
    mask.max_closing = 0;
    walk.clear();
    walk.push_back({0, sid});
    while (!walk.empty()) {
      auto [tn, s] = walk.back();
      walk.pop_back();
      for (uint32_t e = v.first_edge[tn]; e < v.first_edge[tn + 1]; ++e) {
        int32_t ns = m.step(s, v.edge_byte[e]);
        if (ns < 0) continue;
        uint32_t child = v.edge_child[e];
        uint32_t closing = m.states[static_cast<size_t>(ns)].closing;
        if (v.first_token[child] != v.first_token[child + 1] && closing <= budget) {
          mask.max_closing = std::max(mask.max_closing, closing);
          for (uint32_t k = v.first_token[child]; k < v.first_token[child + 1]; ++k) {
            auto id = static_cast<uint32_t>(v.token_ids[k]);
            mask.bits[id >> 6] |= uint64_t{1} << (id & 63);
          }
        }
        if (v.first_edge[child] != v.first_edge[child + 1]) walk.push_back({child, ns});
      }
    }
  }

  // The mask for the current state with `tokens_left` (this one included); sets `forced` when the
  // budget removed tokens the grammar alone allows.
  const Mask& mask_for(int64_t tokens_left, bool& forced) {
    Matcher::Impl& m = matcher.impl();
    if (masks_generation != m.generation) {
      masks.clear();
      masks_generation = m.generation;
    }
    auto& st = m.states[static_cast<size_t>(m.current)];
    if (st.mask_slot < 0) {
      if (masks.size() >= kMaxCachedMasks) {
        for (auto& s : m.states) s.mask_slot = -1;
        masks.clear();
      }
      Mask fresh;
      int32_t cur = m.current;
      compute(m, cur, kInfiniteLength, fresh);
      masks.push_back(std::move(fresh));
      m.states[static_cast<size_t>(cur)].mask_slot = static_cast<int32_t>(masks.size() - 1);
    }
    const Mask& full = masks[static_cast<size_t>(m.states[static_cast<size_t>(m.current)].mask_slot)];
    // After this token, tokens_left - 1 tokens remain, and every byte has a token of its own, so a state
    // that closes in at most that many bytes can still be closed.
    int64_t after = tokens_left - 1;
    if (after >= static_cast<int64_t>(full.max_closing)) return full;
    forced = true;
    compute(m, m.current, static_cast<uint32_t>(std::max<int64_t>(after, 0)), scratch);
    return scratch;
  }
};

GrammarProcessor::GrammarProcessor(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const Vocabulary> vocabulary,
                                   std::vector<int32_t> end_ids) {
  if (!vocabulary) throw GrammarError("", "GrammarProcessor needs a vocabulary");
  impl_ = std::make_unique<Impl>(std::move(grammar), std::move(vocabulary), std::move(end_ids));
}
GrammarProcessor::~GrammarProcessor() = default;

bool GrammarProcessor::complete() const { return impl_->matcher.complete(); }
bool GrammarProcessor::accepting() const { return impl_->matcher.accepting(); }

std::vector<int32_t> GrammarProcessor::allowed_tokens(int64_t tokens_left) {
  std::vector<int32_t> ids;
  if (impl_->matcher.dead()) return ids;
  bool forced = false;
  const Impl::Mask& mask = impl_->mask_for(tokens_left, forced);
  for (int32_t id = 0; id < impl_->vocab->n_vocab(); ++id)
    if ((mask.bits[static_cast<size_t>(id) >> 6] >> (id & 63)) & 1) ids.push_back(id);
  if (impl_->matcher.accepting())
    for (int32_t e : impl_->end_ids)
      if (e >= 0 && e < impl_->vocab->n_vocab() && std::find(ids.begin(), ids.end(), e) == ids.end()) ids.push_back(e);
  std::sort(ids.begin(), ids.end());
  return ids;
}

int64_t GrammarProcessor::min_tokens(int64_t limit) {
  Matcher::Impl& m = impl_->matcher.impl();
  if (m.current < 0) return 0;
  const Vocabulary::Impl& v = impl_->vocab->impl();
  std::vector<int32_t> frontier{m.current};
  std::unordered_set<int32_t> seen{m.current};
  size_t walks = 0;
  for (int64_t k = 0; k <= limit; ++k) {
    for (int32_t s : frontier)
      if (m.states[static_cast<size_t>(s)].accepting) return k;
    if (k == limit) break;
    std::vector<int32_t> next;
    for (int32_t s : frontier) {
      if (++walks > 64) return 0;  // too much work to be sure: do not refuse
      std::vector<std::pair<uint32_t, int32_t>> walk{{0, s}};
      while (!walk.empty()) {
        auto [tn, st] = walk.back();
        walk.pop_back();
        for (uint32_t e = v.first_edge[tn]; e < v.first_edge[tn + 1]; ++e) {
          int32_t ns = m.step(st, v.edge_byte[e]);
          if (ns < 0) continue;
          uint32_t child = v.edge_child[e];
          if (v.first_token[child] != v.first_token[child + 1] && seen.insert(ns).second) next.push_back(ns);
          if (v.first_edge[child] != v.first_edge[child + 1]) walk.push_back({child, ns});
        }
      }
    }
    if (next.empty()) return limit + 1;
    frontier = std::move(next);
  }
  return limit + 1;
}

void GrammarProcessor::apply(std::span<float> logits, const sampling::SequenceContext& context) {
  const auto n = static_cast<int64_t>(logits.size());
  if (n != impl_->vocab->n_vocab())
    throw GrammarError("", "the grammar's vocabulary has " + std::to_string(impl_->vocab->n_vocab()) + " tokens, the logits " +
                               std::to_string(n));
  if (impl_->matcher.dead()) return;
  bool forced = false;
  const Impl::Mask& mask = impl_->mask_for(context.tokens_left, forced);
  budget_forced_ = budget_forced_ || forced;
  const bool accepting = impl_->matcher.accepting();
  bool any = false;
  for (uint64_t w : mask.bits) any = any || w != 0;
  const float ninf = -std::numeric_limits<float>::infinity();
  // Saved end-token logits: allowed where the grammar accepts, or as the way out when nothing else is.
  std::vector<std::pair<int32_t, float>> ends;
  if (accepting || !any)
    for (int32_t e : impl_->end_ids)
      if (e >= 0 && e < n) ends.push_back({e, logits[static_cast<size_t>(e)]});
  if (!any && ends.empty()) return;  // the vocabulary cannot continue and cannot stop: leave the row
  for (size_t w = 0; w < mask.bits.size(); ++w) {
    uint64_t bits = mask.bits[w];
    if (bits == ~uint64_t{0}) continue;
    size_t end = std::min<size_t>((w + 1) * 64, static_cast<size_t>(n));
    for (size_t id = w * 64; id < end; ++id)
      if (!((bits >> (id & 63)) & 1)) logits[id] = ninf;
  }
  for (auto [e, value] : ends) logits[static_cast<size_t>(e)] = value;
}

void GrammarProcessor::accept(int32_t token) {
  if (token < 0 || token >= impl_->vocab->n_vocab()) return;
  if (std::find(impl_->end_ids.begin(), impl_->end_ids.end(), token) != impl_->end_ids.end()) return;
  if (!impl_->matcher.advance(impl_->vocab->text(token))) {
    // Only reachable when the row was left unconstrained (nothing allowed): the grammar is abandoned.
    impl_->matcher.impl().current = kDead;
  }
}

}  // namespace moe::grammar
