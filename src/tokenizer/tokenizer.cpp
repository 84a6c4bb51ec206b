// tokenizer.cpp: SentencePiece BPE encoding and decoding, reproducing libsentencepiece id for id.
//
// Encoding follows libsentencepiece's three stages:
//  1. Normalize (identity rules only): invalid UTF-8 bytes become U+FFFD one byte at a time, optional
//     removal of leading/trailing/repeated spaces, a dummy "▁" prefix, spaces escaped to "▁". User-defined
//     pieces pass through untouched.
//  2. BPE: the normalized text is cut into characters (user-defined pieces matched greedily, longest first,
//     as frozen atoms); then, repeatedly, the adjacent pair whose concatenation is a vocabulary piece with
//     the highest score merges (ties: the leftmost), using a max-heap of candidate pairs over a doubly
//     linked list of symbols. Candidates made stale by an earlier merge are recognised by their length.
//     Merged pieces of type Unused are split back into the pieces they were made from.
//  3. Pieces not in the vocabulary become <0xNN> byte pieces (byte fallback) or the unknown id (a run of
//     unknown pieces gives one unknown id).
// Speed: when no vocabulary piece contains the space symbol after a non-space character (true of Llama
// and Mistral vocabularies) and none is Unused, no merge can cross the start of a word, so each word is
// merged on its own: the heap stays tiny and the result is provably the same as merging the whole text at
// once. Long texts then also reuse the ids of words already seen in the same call.
//
// Decoding: pieces are concatenated with "▁" turned into spaces, runs of byte pieces are reassembled and
// their invalid sequences become U+FFFD byte by byte, control pieces vanish, the unknown piece reads as
// the model's unk surface, and the leading "▁" of the first text piece is dropped (the dummy prefix).
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <utility>

#include "gguf/gguf.h"
#include "tokenizer/sentencepiece_model.h"
#include "tokenizer/utf8.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace moe::tokenizer {

const char* token_type_name(TokenType t) {
  switch (t) {
    case TokenType::Normal: return "NORMAL";
    case TokenType::Unknown: return "UNKNOWN";
    case TokenType::Control: return "CONTROL";
    case TokenType::UserDefined: return "USER_DEFINED";
    case TokenType::Unused: return "UNUSED";
    case TokenType::Byte: return "BYTE";
  }
  return "invalid";
}

namespace {

uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xD6E8FEB86659FD93ull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 29;
  return h;
}

// Open-addressing map from piece text to id. The texts live in the vocabulary, which outlives the map.
class PieceMap {
 public:
  void init(const std::vector<std::string>* pieces, size_t expected) {
    pieces_ = pieces;
    size_t cap = 16;
    while (cap < expected * 2) cap <<= 1;
    slots_.assign(cap, Slot{0, -1});
    mask_ = cap - 1;
  }
  // Inserts `id`; returns the id already holding the same text instead, if any.
  int32_t insert(int32_t id) {
    const std::string& s = (*pieces_)[id];
    const uint64_t h = hash_bytes(s.data(), s.size());
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = Slot{static_cast<uint32_t>(h >> 32), id};
        max_len_ = std::max(max_len_, s.size());
        return id;
      }
      if (slot.tag == static_cast<uint32_t>(h >> 32) && (*pieces_)[slot.id] == s) return slot.id;
    }
  }
  int32_t find(std::string_view s) const {
    if (s.size() > max_len_ || slots_.empty()) return -1;
    const uint64_t h = hash_bytes(s.data(), s.size());
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.id < 0) return -1;
      if (slot.tag == tag) {
        const std::string& p = (*pieces_)[slot.id];
        if (p.size() == s.size() && std::memcmp(p.data(), s.data(), s.size()) == 0) return slot.id;
      }
    }
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  const std::vector<std::string>* pieces_ = nullptr;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t max_len_ = 0;
};

// Bytes examined by PrefixTrie::longest on this thread (tokenizer.h: matcher_steps_on_this_thread).
thread_local uint64_t t_matcher_steps = 0;

// Byte trie for longest-prefix matching of a small set of pieces (user-defined and control pieces).
// longest() is called at every position of a text, so its cost per call is bounded by the longest
// piece: pieces matched this way are at most kMaxMatchedPieceBytes long (checked at load).
class PrefixTrie {
 public:
  bool empty() const { return nodes_.size() <= 1; }
  void insert(std::string_view s, int32_t id) {
    if (nodes_.empty()) nodes_.emplace_back();
    if (s.empty()) return;
    first_byte_[static_cast<uint8_t>(s[0])] = true;
    size_t node = 0;
    for (char c : s) {
      const auto b = static_cast<uint8_t>(c);
      int32_t child = find_child(node, b);
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(b, child);
        nodes_.emplace_back();
      }
      node = static_cast<size_t>(child);
    }
    if (nodes_[node].id < 0) nodes_[node].id = id;  // the first piece with this text wins
  }
  // Longest piece that `s` starts with: {length, id}, or {0, -1}.
  std::pair<size_t, int32_t> longest(std::string_view s) const {
    std::pair<size_t, int32_t> best{0, -1};
    if (s.empty() || !first_byte_[static_cast<uint8_t>(s[0])]) return best;
    size_t node = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      ++t_matcher_steps;
      const int32_t child = find_child(node, static_cast<uint8_t>(s[i]));
      if (child < 0) break;
      node = static_cast<size_t>(child);
      if (nodes_[node].id >= 0) best = {i + 1, nodes_[node].id};
    }
    return best;
  }

 private:
  struct Node {
    int32_t id = -1;
    std::vector<std::pair<uint8_t, int32_t>> children;
  };
  int32_t find_child(size_t node, uint8_t b) const {
    for (const auto& [byte, child] : nodes_[node].children)
      if (byte == b) return child;
    return -1;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

// "<0x41>" → 0x41; -1 unless exactly SentencePiece's spelling (uppercase hex, two digits).
int piece_to_byte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Shown in error messages: the piece, truncated and with control bytes escaped.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    const auto b = static_cast<uint8_t>(c);
    if (b < 0x20 || b == 0x7F) out += cat("\\x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15]);
    else out += c;
  }
  if (s.size() > 64) out += "...";
  return out;
}

bool is_mergeable(TokenType t) {
  return t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Unused;
}

}  // namespace

uint64_t matcher_steps_on_this_thread() { return t_matcher_steps; }

struct Workspace;  // scratch memory of one encode call

struct Tokenizer::Impl {
  Vocabulary vocab;
  PieceMap mergeable;  // Normal, UserDefined, Unused: what BPE can produce
  PieceMap reserved;   // Control, Unknown, Byte: looked up first, as SentencePiece's PieceToId does
  PrefixTrie user_defined;
  PrefixTrie control;  // for parse_special
  std::vector<int32_t> resolved;  // mergeable id → the id SentencePiece reports for its text
  std::vector<uint64_t> score_key;  // per id: the score as an order-preserving integer, in the high half
  std::vector<uint32_t> piece_size;  // per id: bytes of the piece
  std::array<int32_t, 256> byte_id{};
  std::vector<int16_t> byte_value;  // per id: the byte of a Byte piece, else -1
  int32_t unk = -1;
  bool has_unused = false;
  bool per_word = false;  // merges never cross a word start (see the file comment)
  std::string_view space;  // what a space becomes after normalization

  explicit Impl(Vocabulary v) : vocab(std::move(v)) { build(); }
  Impl(const Impl&) = delete;  // the maps point into `vocab`
  Impl& operator=(const Impl&) = delete;

  int32_t n() const { return static_cast<int32_t>(vocab.pieces.size()); }
  TokenType type(int32_t id) const { return vocab.types[static_cast<size_t>(id)]; }

  void build();
  void normalize(std::string_view in, std::string& out) const;
  void encode_fragment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view norm, std::vector<int32_t>& out) const;
  void bpe(std::string_view seg, std::vector<int32_t>& out, Workspace& ws) const;
  void emit(std::string_view w, int32_t id, std::vector<int32_t>& out, Workspace& ws) const;
  int32_t lookup(std::string_view w) const {
    const int32_t r = reserved.find(w);
    return r >= 0 ? r : mergeable.find(w);
  }
  void check_id(int32_t id) const {
    if (id < 0 || id >= n()) fail("token id ", id, " is out of range (vocabulary of ", n(), ")");
  }
  // One decoding step; see StreamDecoder. `eager` emits completed characters of a byte run at once.
  void decode_step(int32_t id, bool& at_start, std::string& pending, std::string& out, bool eager) const;
  void append_piece(int32_t id, bool& at_start, std::string& out) const;
};

void Tokenizer::Impl::build() {
  const std::string& src = vocab.source;
  const size_t count = vocab.pieces.size();
  if (count == 0) fail(src, ": the vocabulary is empty");
  if (count > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail(src, ": the vocabulary has ", count, " pieces, more than 2^31 - 1");
  if (vocab.scores.size() != count)
    fail(src, ": ", count, " pieces but ", vocab.scores.size(), " scores; the lengths must be equal");
  if (vocab.types.size() != count)
    fail(src, ": ", count, " pieces but ", vocab.types.size(), " token types; the lengths must be equal");

  const auto n_mergeable = static_cast<size_t>(
      std::count_if(vocab.types.begin(), vocab.types.end(), [](TokenType t) { return is_mergeable(t); }));
  mergeable.init(&vocab.pieces, n_mergeable);
  reserved.init(&vocab.pieces, count - n_mergeable);
  byte_id.fill(-1);
  byte_value.assign(count, -1);
  resolved.assign(count, -1);
  score_key.assign(count, 0);
  piece_size.assign(count, 0);
  bool any_byte = false;
  int32_t first_unknown = -1;
  for (size_t i = 0; i < count; ++i) {
    const auto id = static_cast<int32_t>(i);
    const std::string& piece = vocab.pieces[i];
    const auto t = static_cast<int32_t>(vocab.types[i]);
    if (t < 1 || t > 6) fail(src, ": piece ", i, " ('", printable(piece), "') has invalid token type ", t, " (1..6)");
    if (std::isnan(vocab.scores[i])) fail(src, ": piece ", i, " ('", printable(piece), "') has a NaN score");
    piece_size[i] = static_cast<uint32_t>(std::min<size_t>(piece.size(), UINT32_MAX));
    {
      // Float order as unsigned integer order (negative values reversed); -0 and +0 tie as floats do.
      const float f = vocab.scores[i] == 0.0f ? 0.0f : vocab.scores[i];
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof bits);
      bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
      score_key[i] = static_cast<uint64_t>(bits) << 32;
    }
    if (piece.empty()) {
      if (vocab.strict) fail(src, ": piece ", i, " is empty");
      continue;  // cannot be produced by encoding; decodes to nothing
    }
    const TokenType type = vocab.types[i];
    PieceMap& map = is_mergeable(type) ? mergeable : reserved;
    const int32_t holder = map.insert(id);
    if (holder != id && vocab.strict)
      fail(src, ": piece ", i, " ('", printable(piece), "') is already defined as piece ", holder);
    if ((type == TokenType::UserDefined || type == TokenType::Control) && piece.size() > kMaxMatchedPieceBytes)
      fail(src, ": piece ", i, " ('", printable(piece), "') is a ", token_type_name(type), " piece of ", piece.size(),
           " bytes; the limit is ", kMaxMatchedPieceBytes, " (such pieces are looked for at every position of a "
           "text, so their length multiplies the work of tokenizing)");
    if (type == TokenType::UserDefined) user_defined.insert(piece, id);
    if (type == TokenType::Control) control.insert(piece, id);
    if (type == TokenType::Unused) has_unused = true;
    if (type == TokenType::Unknown) {
      if (first_unknown >= 0 && vocab.strict)
        fail(src, ": pieces ", first_unknown, " and ", i, " are both of type UNKNOWN; there must be one");
      if (first_unknown < 0) first_unknown = id;
    }
    if (type == TokenType::Byte) {
      const int b = piece_to_byte(piece);
      if (b < 0) fail(src, ": piece ", i, " ('", printable(piece), "') has type BYTE but is not spelled <0xNN>");
      if (vocab.strict && !vocab.byte_fallback)
        fail(src, ": byte piece ", piece, " is present although byte_fallback is off");
      byte_value[i] = static_cast<int16_t>(b);
      if (byte_id[static_cast<size_t>(b)] < 0) byte_id[static_cast<size_t>(b)] = id;
      any_byte = true;
    }
  }
  if (!vocab.strict && any_byte) vocab.byte_fallback = true;  // GGUF files do not record the flag
  if (vocab.byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (byte_id[static_cast<size_t>(b)] < 0)
        fail(src, ": byte fallback needs all 256 byte pieces, but <0x", "0123456789ABCDEF"[b >> 4],
             "0123456789ABCDEF"[b & 15], "> is missing");

  if (vocab.unk_id >= 0) {
    if (vocab.unk_id >= n()) fail(src, ": unknown token id ", vocab.unk_id, " is out of range (", count, " pieces)");
    unk = vocab.unk_id;
  } else {
    if (first_unknown < 0 && vocab.strict) fail(src, ": no piece has type UNKNOWN; SentencePiece needs one");
    unk = first_unknown;
    vocab.unk_id = unk;
  }
  auto check_special = [&](int32_t& v, const char* what) {
    if (v < -1 || v >= n()) fail(src, ": ", what, " id ", v, " is out of range (", count, " pieces)");
  };
  check_special(vocab.bos_id, "BOS");
  check_special(vocab.eos_id, "EOS");
  check_special(vocab.pad_id, "padding");

  // SentencePiece reports the reserved id when a text is both reserved and mergeable.
  for (size_t i = 0; i < count; ++i) {
    if (!is_mergeable(vocab.types[i]) || vocab.pieces[i].empty()) continue;
    const int32_t r = reserved.find(vocab.pieces[i]);
    resolved[i] = r >= 0 ? r : static_cast<int32_t>(i);
  }

  // Per-word merging is exact when no mergeable piece has the space symbol right after another character.
  space = vocab.escape_whitespaces ? utf8::kSpaceSymbol : std::string_view(" ");
  per_word = !has_unused;
  for (size_t i = 0; i < count && per_word; ++i) {
    if (!is_mergeable(vocab.types[i])) continue;
    const std::string_view p = vocab.pieces[i];
    for (size_t at = p.find(space, 1); at != std::string_view::npos; at = p.find(space, at + 1)) {
      if (at < space.size() || p.substr(at - space.size(), space.size()) != space) {
        per_word = false;
        break;
      }
    }
  }
}

// libsentencepiece's Normalizer::Normalize for the identity rules.
void Tokenizer::Impl::normalize(std::string_view in, std::string& out) const {
  out.clear();
  if (in.empty()) return;
  const bool remove_ws = vocab.remove_extra_whitespaces;
  // One normalization unit at `pos`: a user-defined piece, a valid character, or U+FFFD for a bad byte.
  auto unit = [&](size_t pos, std::string_view* text) -> size_t {
    const std::string_view rest = in.substr(pos);
    if (!user_defined.empty()) {
      const auto [len, id] = user_defined.longest(rest);
      if (len > 0) {
        *text = rest.substr(0, len);
        return len;
      }
    }
    size_t len;
    if (utf8::decode_one(rest, &len)) {
      *text = rest.substr(0, len);
    } else {
      *text = utf8::kReplacement;
    }
    return len;
  };
  size_t pos = 0;
  std::string_view text;
  if (remove_ws) {
    while (pos < in.size()) {
      const size_t len = unit(pos, &text);
      if (text != " ") break;
      pos += len;
    }
    if (pos == in.size()) return;
  }
  out.reserve((in.size() - pos) * 3 / 2 + 8);
  if (vocab.add_dummy_prefix) out.append(space);
  bool prev_space = remove_ws;
  while (pos < in.size()) {
    const auto b = static_cast<uint8_t>(in[pos]);
    // Fast path: plain ASCII that is not a space and not the start of a user-defined piece.
    if (b != ' ' && b < 0x80 && (user_defined.empty() || user_defined.longest(in.substr(pos)).first == 0)) {
      out.push_back(static_cast<char>(b));
      prev_space = false;
      ++pos;
      continue;
    }
    const size_t len = unit(pos, &text);
    pos += len;
    if (prev_space)
      while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    if (!text.empty()) {
      for (char c : text) {
        if (c == ' ') out.append(space);
        else out.push_back(c);
      }
      prev_space = text.back() == ' ';
    }
    if (!remove_ws) prev_space = false;
  }
  if (remove_ws)
    while (out.size() >= space.size() && std::string_view(out).substr(out.size() - space.size()) == space)
      out.resize(out.size() - space.size());
}

struct Workspace {
  struct Symbol {
    int32_t prev, next;
    uint32_t begin, len;
    int32_t id;  // mergeable id once merged or matched as user-defined; -1 for a plain character
    bool frozen;
  };
  // A pair that may merge. `key` orders the heap: the score's bits made monotonic in the high half, the
  // complement of the left index in the low half, so a larger key is a higher score, then a pair further
  // left, as in SentencePiece. Whether the pair is still current is checked by length when it is popped.
  struct Candidate {
    uint64_t key;
    int32_t right;
    int32_t id;
    int32_t left() const { return static_cast<int32_t>(~static_cast<uint32_t>(key)); }
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  // Unused merged pieces → the two pieces they were made of (only for vocabularies with Unused pieces).
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unmerge;
  bool previous_unknown = false;  // the last piece emitted was the unknown id (runs of them merge)
};

void Tokenizer::Impl::emit(std::string_view w, int32_t id, std::vector<int32_t>& out, Workspace& ws) const {
  if (id >= 0 && type(id) != TokenType::Unknown) {
    out.push_back(id);
    ws.previous_unknown = false;
    return;
  }
  // Not in the vocabulary (SentencePiece maps it to the unknown piece, then maybe to bytes).
  if (vocab.byte_fallback) {
    for (char c : w) out.push_back(byte_id[static_cast<uint8_t>(c)]);
    return;
  }
  if (id < 0) id = unk;
  if (id < 0) fail("'", printable(w), "' is not in the vocabulary, which has no unknown token and no byte pieces");
  // SentencePiece merges a run of unknown pieces into one.
  if (!ws.previous_unknown) out.push_back(id);
  ws.previous_unknown = true;
}

void Tokenizer::Impl::bpe(std::string_view seg, std::vector<int32_t>& out, Workspace& ws) const {
  auto& sym = ws.symbols;
  auto& heap = ws.heap;
  heap.clear();
  if (seg.empty()) return;
  // Characters (or whole user-defined pieces), written in place: at most one symbol per byte.
  sym.resize(seg.size());
  size_t n_sym = 0;
  for (size_t pos = 0; pos < seg.size(); ++n_sym) {
    Workspace::Symbol& s = sym[n_sym];
    s.prev = static_cast<int32_t>(n_sym) - 1;
    s.next = static_cast<int32_t>(n_sym) + 1;
    s.begin = static_cast<uint32_t>(pos);
    s.id = -1;
    s.frozen = false;
    if (!user_defined.empty()) {
      const auto [len, id] = user_defined.longest(seg.substr(pos));
      if (len > 0) {
        s.len = static_cast<uint32_t>(len);
        s.id = id;
        s.frozen = true;
      }
    }
    if (!s.frozen) s.len = static_cast<uint32_t>(std::min(seg.size() - pos, utf8::lead_length(static_cast<uint8_t>(seg[pos]))));
    pos += s.len;
  }
  sym.resize(n_sym);
  sym.back().next = -1;

  auto worse = [](const Workspace::Candidate& a, const Workspace::Candidate& b) { return a.key < b.key; };
  bool heap_built = false;  // the first pairs are collected, then heapified at once (linear time)
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const auto& l = sym[static_cast<size_t>(left)];
    const auto& r = sym[static_cast<size_t>(right)];
    if (l.frozen || r.frozen) return;
    const std::string_view merged = seg.substr(l.begin, l.len + r.len);
    const int32_t id = mergeable.find(merged);
    if (id < 0) return;
    heap.push_back({score_key[static_cast<size_t>(id)] | static_cast<uint32_t>(~static_cast<uint32_t>(left)), right, id});
    if (heap_built) std::push_heap(heap.begin(), heap.end(), worse);
    if (has_unused && type(id) == TokenType::Unused)
      ws.unmerge[merged] = {seg.substr(l.begin, l.len), seg.substr(r.begin, r.len)};
  };
  for (size_t i = 1; i < sym.size(); ++i) consider(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  std::make_heap(heap.begin(), heap.end(), worse);
  heap_built = true;

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), worse);
    const Workspace::Candidate top = heap.back();
    heap.pop_back();
    const int32_t left = top.left();
    auto& l = sym[static_cast<size_t>(left)];
    auto& r = sym[static_cast<size_t>(top.right)];
    if (l.len == 0 || r.len == 0 || l.len + r.len != piece_size[static_cast<size_t>(top.id)]) continue;  // stale
    l.len += r.len;
    l.id = top.id;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = left;
    r.len = 0;
    consider(l.prev, left);
    consider(left, l.next);
  }

  // Output, splitting Unused pieces back into their parts (recursively).
  auto resegment = [&](auto&& self, std::string_view w, int32_t known_id) -> void {
    const int32_t id = known_id >= 0 ? known_id : lookup(w);
    if (id >= 0 && type(id) == TokenType::Unused) {
      const auto it = ws.unmerge.find(w);
      if (it != ws.unmerge.end()) {
        self(self, it->second.first, -1);
        self(self, it->second.second, -1);
        return;
      }
    }
    emit(w, id, out, ws);
  };
  for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
    const auto& s = sym[static_cast<size_t>(i)];
    const std::string_view w = seg.substr(s.begin, s.len);
    const int32_t id = s.id >= 0 ? resolved[static_cast<size_t>(s.id)] : lookup(w);
    if (has_unused) resegment(resegment, w, id);
    else emit(w, id, out, ws);
  }
}

void Tokenizer::Impl::encode_normalized(std::string_view norm, std::vector<int32_t>& out) const {
  Workspace ws;
  if (!per_word) {
    bpe(norm, out, ws);
    return;
  }
  // Long texts repeat their words: remember where each word's ids already are in `out` and copy them.
  // Words whose ids contain the unknown id are not remembered (a run of unknowns merges across words).
  struct WordHash {
    size_t operator()(std::string_view s) const { return hash_bytes(s.data(), s.size()); }
  };
  std::unordered_map<std::string_view, std::pair<size_t, size_t>, WordHash> seen;
  const bool use_cache = norm.size() >= 2048;
  auto word = [&](std::string_view w) {
    if (!use_cache) {
      bpe(w, out, ws);
      return;
    }
    if (const auto it = seen.find(w); it != seen.end()) {
      const auto [from, count] = it->second;
      for (size_t i = 0; i < count; ++i) out.push_back(out[from + i]);
      ws.previous_unknown = false;
      return;
    }
    const size_t from = out.size();
    bpe(w, out, ws);
    if (std::none_of(out.begin() + static_cast<ptrdiff_t>(from), out.end(),
                     [&](int32_t id) { return type(id) == TokenType::Unknown; }))
      seen.emplace(w, std::make_pair(from, out.size() - from));
  };
  // Cut before each space symbol that follows another character.
  size_t start = 0;
  for (size_t at = norm.find(space, 1); at != std::string_view::npos; at = norm.find(space, at + space.size())) {
    if (at >= space.size() && norm.substr(at - space.size(), space.size()) == space) continue;
    if (at > start) word(norm.substr(start, at - start));
    start = at;
  }
  word(norm.substr(start));
}

void Tokenizer::Impl::encode_fragment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.size() > (size_t{1} << 30)) fail("text of ", text.size(), " bytes is too long to tokenize (limit 1 GiB)");
  std::string norm;
  normalize(text, norm);
  encode_normalized(norm, out);
}

void Tokenizer::Impl::append_piece(int32_t id, bool& at_start, std::string& out) const {
  const TokenType t = type(id);
  if (t == TokenType::Control) return;
  if (t == TokenType::Unknown) {
    out += vocab.unk_surface;
    if (!vocab.unk_surface.empty()) at_start = false;
    return;
  }
  std::string_view p = vocab.pieces[static_cast<size_t>(id)];
  bool consumed_prefix = false;
  if (at_start && (vocab.add_dummy_prefix || vocab.remove_extra_whitespaces) && p.starts_with(utf8::kSpaceSymbol)) {
    p.remove_prefix(utf8::kSpaceSymbol.size());
    // With remove_extra_whitespaces SentencePiece keeps stripping while nothing has been written.
    consumed_prefix = !vocab.remove_extra_whitespaces;
  }
  for (size_t at = p.find(utf8::kSpaceSymbol); at != std::string_view::npos; at = p.find(utf8::kSpaceSymbol)) {
    out.append(p.substr(0, at));
    out.push_back(' ');
    p.remove_prefix(at + utf8::kSpaceSymbol.size());
  }
  out.append(p);
  if (consumed_prefix || !out.empty()) at_start = false;
}

namespace {

// Writes the characters of a byte run. With `final`, an unfinished sequence at the end is invalid (the run
// is over); otherwise it is kept in `pending` in case the next bytes complete it.
void drain_bytes(std::string& pending, std::string& out, bool final) {
  size_t off = 0;
  while (off < pending.size()) {
    const std::string_view rest = std::string_view(pending).substr(off);
    const auto lead = static_cast<uint8_t>(rest[0]);
    size_t need = 1;
    if ((lead & 0xE0) == 0xC0) need = 2;
    else if ((lead & 0xF0) == 0xE0) need = 3;
    else if ((lead & 0xF8) == 0xF0) need = 4;
    if (!final && rest.size() < need &&
        std::all_of(rest.begin() + 1, rest.end(), [](char c) { return utf8::is_trail(static_cast<uint8_t>(c)); }))
      break;  // may still become a valid character
    size_t len;
    if (utf8::decode_one(rest, &len)) out.append(rest.substr(0, len));
    else out.append(utf8::kReplacement);
    off += len;
  }
  pending.erase(0, off);
}

}  // namespace

void Tokenizer::Impl::decode_step(int32_t id, bool& at_start, std::string& pending, std::string& out, bool eager) const {
  check_id(id);
  const int16_t b = byte_value[static_cast<size_t>(id)];
  if (b >= 0) {
    pending.push_back(static_cast<char>(b));
    at_start = false;  // a byte run always yields text
    if (eager) drain_bytes(pending, out, false);
    return;
  }
  drain_bytes(pending, out, true);
  append_piece(id, at_start, out);
}

// ---- Tokenizer ----

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::Tokenizer(const Tokenizer& o) : impl_(o.impl_ ? std::make_unique<Impl>(o.impl_->vocab) : nullptr) {}
Tokenizer& Tokenizer::operator=(const Tokenizer& o) {
  if (this != &o) impl_ = o.impl_ ? std::make_unique<Impl>(o.impl_->vocab) : nullptr;
  return *this;
}

const Tokenizer::Impl& Tokenizer::loaded() const {
  if (!impl_) fail("tokenizer is not loaded");
  return *impl_;
}

Tokenizer Tokenizer::from_vocabulary(Vocabulary vocabulary) {
  Tokenizer t;
  t.impl_ = std::make_unique<Impl>(std::move(vocabulary));
  return t;
}

Tokenizer Tokenizer::from_sentencepiece_bytes(std::span<const uint8_t> bytes, const std::string& name) {
  return from_vocabulary(parse_sentencepiece_model(bytes, name));
}

Tokenizer Tokenizer::from_sentencepiece_file(const std::string& path) {
  MappedFile file(path);
  return from_sentencepiece_bytes(file.bytes(), path);
}

Tokenizer Tokenizer::load(const std::string& path) {
  bool is_gguf = false;
  {
    MappedFile file(path);
    is_gguf = file.size() >= 4 && std::memcmp(file.data(), "GGUF", 4) == 0;
    if (!is_gguf) return from_sentencepiece_bytes(file.bytes(), path);
  }
  return from_gguf(gguf::File::open(path));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  const Impl& impl = loaded();
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && impl.vocab.bos_id >= 0) out.push_back(impl.vocab.bos_id);
  if (!parse_special || impl.control.empty()) {
    impl.encode_fragment(text, out);
    return out;
  }
  // Control-piece texts split the input (longest match, leftmost first); each text fragment between them
  // is encoded as a text of its own, as llama.cpp does.
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto [len, id] = impl.control.longest(text.substr(pos));
    if (len == 0) {
      ++pos;
      continue;
    }
    impl.encode_fragment(text.substr(start, pos - start), out);
    out.push_back(id);
    pos += len;
    start = pos;
  }
  impl.encode_fragment(text.substr(start), out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const Impl& impl = loaded();
  std::string out, pending;
  bool at_start = true;
  for (int32_t id : ids) impl.decode_step(id, at_start, pending, out, false);
  drain_bytes(pending, out, true);
  return out;
}

std::string Tokenizer::decode_continuation(std::span<const int32_t> ids) const {
  const Impl& impl = loaded();
  std::string out, pending;
  bool at_start = false;
  for (int32_t id : ids) impl.decode_step(id, at_start, pending, out, false);
  drain_bytes(pending, out, true);
  return out;
}

int32_t Tokenizer::n_vocab() const { return loaded().n(); }
int32_t Tokenizer::bos_id() const { return loaded().vocab.bos_id; }
int32_t Tokenizer::eos_id() const { return loaded().vocab.eos_id; }
int32_t Tokenizer::unk_id() const { return loaded().unk; }
int32_t Tokenizer::pad_id() const { return loaded().vocab.pad_id; }
bool Tokenizer::add_bos() const { return loaded().vocab.add_bos; }
bool Tokenizer::add_eos() const { return loaded().vocab.add_eos; }
const Vocabulary& Tokenizer::vocabulary() const { return loaded().vocab; }

const std::string& Tokenizer::piece(int32_t id) const {
  const Impl& impl = loaded();
  impl.check_id(id);
  return impl.vocab.pieces[static_cast<size_t>(id)];
}
TokenType Tokenizer::token_type(int32_t id) const {
  const Impl& impl = loaded();
  impl.check_id(id);
  return impl.type(id);
}
float Tokenizer::score(int32_t id) const {
  const Impl& impl = loaded();
  impl.check_id(id);
  return impl.vocab.scores[static_cast<size_t>(id)];
}
std::optional<int32_t> Tokenizer::token_id(std::string_view piece) const {
  const int32_t id = loaded().lookup(piece);
  if (id < 0) return std::nullopt;
  return id;
}

// ---- StreamDecoder ----

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool continuation) : tok_(&tok), at_start_(!continuation) {
  tok.loaded();
}

std::string StreamDecoder::push(int32_t id) {
  std::string out;
  tok_->loaded().decode_step(id, at_start_, pending_, out, true);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  drain_bytes(pending_, out, true);
  return out;
}

}  // namespace moe::tokenizer
