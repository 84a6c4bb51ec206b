// tool_stream.cpp: the incremental tool-call parser (see tool_stream.h). A small state machine: in Text
// mode it releases content up to anything that may start a marker; a marker switches it to Call mode,
// where it waits until the region after the marker is complete (closing tag, or the end of a JSON
// value found by a bracket scanner that knows strings), then parses it with nlohmann::json.
#include "server/tool_stream.h"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

namespace moe::server {

using nlohmann::ordered_json;

namespace {

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
constexpr std::string_view kMistralCallId = "[CALL_ID]";
constexpr std::string_view kPythonTag = "<|python_tag|>";
// Deeper JSON than this in a call is treated as malformed (bounds the scanner's stack).
constexpr size_t kMaxJsonDepth = 512;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

// The end (one past the closing bracket) of the JSON object or array starting at s[i]; npos while it
// is incomplete; `bad` when the brackets do not match or nest too deep.
size_t json_end(std::string_view s, size_t i, bool& bad) {
  bad = false;
  std::vector<char> closers;
  bool in_string = false, escaped = false;
  for (size_t k = i; k < s.size(); ++k) {
    char c = s[k];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (closers.size() >= kMaxJsonDepth) {
        bad = true;
        return std::string_view::npos;
      }
      closers.push_back(c == '{' ? '}' : ']');
    } else if (c == '}' || c == ']') {
      if (closers.empty() || closers.back() != c) {
        bad = true;
        return std::string_view::npos;
      }
      closers.pop_back();
      if (closers.empty()) return k + 1;
    }
  }
  return std::string_view::npos;
}

// Whether `tail` (the end of the held text) is a proper prefix of `marker`.
bool is_marker_prefix(std::string_view tail, std::string_view marker) {
  return tail.size() < marker.size() && marker.substr(0, tail.size()) == tail;
}

std::string_view trim(std::string_view s) {
  size_t b = skip_space(s, 0);
  size_t e = s.size();
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

ToolCallParser::ToolCallParser(ToolFormat format, std::vector<std::string> tool_names, size_t max_calls,
                               std::function<std::string()> new_id)
    : format_(format), names_(std::move(tool_names)), max_calls_(max_calls), new_id_(std::move(new_id)) {
  if (!new_id_) new_id_ = [format] { return new_tool_call_id(format); };
  switch (format_) {
    case ToolFormat::Hermes: markers_ = {std::string(kHermesOpen)}; break;
    case ToolFormat::Mistral: markers_ = {std::string(kMistralCalls)}; break;
    case ToolFormat::Llama3: markers_ = {std::string(kPythonTag)}; break;
    case ToolFormat::None: break;
  }
}

bool ToolCallParser::call_from_json(const std::string& text, ToolCall& call, bool allow_id) const {
  ordered_json j;
  try {
    j = ordered_json::parse(text);
  } catch (const ordered_json::exception&) {
    return false;
  }
  return [&](const ordered_json& o) {
    if (!o.is_object()) return false;
    auto name = o.find("name");
    if (name == o.end() || !name->is_string()) return false;
    call.name = name->get<std::string>();
    if (!names_.empty() && std::find(names_.begin(), names_.end(), call.name) == names_.end()) return false;
    auto args = o.find("arguments");
    if (args == o.end()) args = o.find("parameters");
    ordered_json a = ordered_json::object();
    if (args != o.end()) {
      if (args->is_string()) {  // some models write the arguments as JSON text
        try {
          a = ordered_json::parse(args->get<std::string>());
        } catch (const ordered_json::exception&) {
          return false;
        }
      } else {
        a = *args;
      }
    }
    if (!a.is_object()) return false;
    call.arguments = a.dump();
    call.id.clear();
    if (allow_id)
      if (auto id = o.find("id"); id != o.end() && id->is_string() && !id->get<std::string>().empty())
        call.id = id->get<std::string>();
    return true;
  }(j);
}

ToolCallParser::Region ToolCallParser::try_region(std::string_view region, bool final) {
  Region r;
  if (marker_ == kHermesOpen) {
    // <tool_call> JSON </tool_call>: the JSON's end is found by the scanner, so a closing tag inside
    // one of its strings does not end it. Malformed: the region runs to the next closing tag.
    auto bad_to_close = [&] {
      size_t close = region.find(kHermesClose);
      if (close == std::string_view::npos && !final) return r;  // wait: the closing tag may come
      r.status = Region::Bad;
      r.consumed = close == std::string_view::npos ? region.size() : close + kHermesClose.size();
      return r;
    };
    const size_t b = skip_space(region, 0);
    if (b == region.size()) return final ? bad_to_close() : r;
    if (region[b] != '{') return bad_to_close();
    bool bad_json = false;
    const size_t end = json_end(region, b, bad_json);
    if (bad_json) return bad_to_close();
    if (end == std::string_view::npos) return final ? bad_to_close() : r;
    const size_t j = skip_space(region, end);
    std::string_view rest = region.substr(j);
    size_t consumed = 0;
    if (rest.substr(0, kHermesClose.size()) == kHermesClose) consumed = j + kHermesClose.size();
    else if (rest.empty() || is_marker_prefix(rest, kHermesClose)) {
      if (!final) return r;
      if (!rest.empty()) return bad_to_close();
      consumed = region.size();  // the closing tag never came: the call stands on its own
    } else {
      return bad_to_close();
    }
    ToolCall c;
    if (!call_from_json(std::string(region.substr(b, end - b)), c, false)) return bad_to_close();
    r.status = Region::Done;
    r.consumed = consumed;
    r.calls.push_back(std::move(c));
    return r;
  }
  const size_t i = skip_space(region, 0);
  if (i == region.size()) {
    r.status = final ? Region::Bad : Region::Incomplete;
    return r;
  }
  bool bad = false;
  if (marker_ == kMistralCalls && region[i] != '[' && region[i] != '{') {
    // Mistral v7 / Small 3.x: name[CALL_ID]id[ARGS]{...} or name[ARGS]{...}.
    size_t k = i;
    while (k < region.size() && region[k] != '[' && !is_space(region[k])) ++k;
    if (k == region.size()) {
      r.status = final ? Region::Bad : Region::Incomplete;
      return r;
    }
    std::string name(region.substr(i, k - i));
    std::string id;
    auto expect = [&](std::string_view tag) -> int {  // 1 matched, 0 incomplete, -1 not there
      std::string_view rest = region.substr(k);
      if (rest.substr(0, tag.size()) == tag) {
        k += tag.size();
        return 1;
      }
      return is_marker_prefix(rest, tag) ? 0 : -1;
    };
    int m = expect(kMistralCallId);
    if (m == 1) {
      size_t b = k;
      while (k < region.size() && region[k] != '[') ++k;
      if (k == region.size()) {
        r.status = final ? Region::Bad : Region::Incomplete;
        return r;
      }
      id = std::string(region.substr(b, k - b));
      m = expect(kMistralArgs);
    } else if (m == -1) {
      m = expect(kMistralArgs);
    }
    if (m != 1) {
      r.status = (m == 0 && !final) ? Region::Incomplete : Region::Bad;
      return r;
    }
    if (k == region.size() || region[k] != '{') {
      r.status = (k == region.size() && !final) ? Region::Incomplete : Region::Bad;
      return r;
    }
    size_t end = json_end(region, k, bad);
    if (end == std::string_view::npos) {
      r.status = (bad || final) ? Region::Bad : Region::Incomplete;
      return r;
    }
    ordered_json obj = {{"name", name}, {"arguments", nullptr}};
    try {
      obj["arguments"] = ordered_json::parse(region.substr(k, end - k));
    } catch (const ordered_json::exception&) {
      r.status = Region::Bad;
      return r;
    }
    ToolCall c;
    if (name.empty() || !call_from_json(obj.dump(), c, false)) {
      r.status = Region::Bad;
      return r;
    }
    c.id = id;
    r.calls.push_back(std::move(c));
    r.status = Region::Done;
    r.consumed = end;
    return r;
  }
  // A JSON value: Mistral's array of calls, or one call object (Llama 3, python_tag, Mistral).
  if (region[i] != '{' && region[i] != '[') {
    r.status = Region::Bad;
    return r;
  }
  size_t end = json_end(region, i, bad);
  if (end == std::string_view::npos) {
    r.status = (bad || final) ? Region::Bad : Region::Incomplete;
    return r;
  }
  r.consumed = end;
  r.status = Region::Bad;
  const std::string value(region.substr(i, end - i));
  if (region[i] == '{') {
    ToolCall c;
    if (!call_from_json(value, c, marker_ == kMistralCalls)) return r;
    r.calls.push_back(std::move(c));
  } else {
    if (marker_ != kMistralCalls) return r;
    ordered_json arr;
    try {
      arr = ordered_json::parse(value);
    } catch (const ordered_json::exception&) {
      return r;
    }
    if (arr.empty()) return r;
    for (const auto& e : arr) {
      ToolCall c;
      if (!call_from_json(e.dump(), c, true)) return r;
      r.calls.push_back(std::move(c));
    }
  }
  r.status = Region::Done;
  return r;
}

void ToolCallParser::accept(std::vector<ToolCall>& calls, Output& out) {
  for (auto& c : calls) {
    if (n_calls_ >= max_calls_) {
      done_ = true;
      return;
    }
    if (c.id.empty()) c.id = new_id_();
    ++n_calls_;
    out.calls.push_back(std::move(c));
  }
  if (n_calls_ >= max_calls_) done_ = true;
}

void ToolCallParser::run(Output& out, bool final) {
  while (!done_) {
    if (mode_ == Mode::Call) {
      Region r = try_region(buf_, final);
      if (r.status == Region::Incomplete) return;
      if (r.status == Region::Done) {
        accept(r.calls, out);
        buf_.erase(0, r.consumed);
        skip_sep_ = true;
        at_start_ = true;
      } else {
        // Malformed: the marker and what the region used are content, as the model wrote them. A JSON
        // region that failed at its first byte gives back only the marker; the rest is read again as text.
        out.content += marker_ + buf_.substr(0, r.consumed);
        buf_.erase(0, r.consumed);
        at_start_ = false;
      }
      mode_ = Mode::Text;
      marker_.clear();
      continue;
    }
    // Text mode.
    if (skip_sep_) {
      size_t k = 0;
      while (k < buf_.size() && (is_space(buf_[k]) || (format_ == ToolFormat::Llama3 && buf_[k] == ';'))) ++k;
      buf_.erase(0, k);
      if (buf_.empty()) return;
      skip_sep_ = false;
    }
    if (format_ == ToolFormat::Llama3 && at_start_) {
      size_t k = skip_space(buf_, 0);
      if (k == buf_.size()) {
        if (!final) return;  // only whitespace so far: undecided
      } else if (buf_[k] == '{') {
        out.content += buf_.substr(0, k);  // whitespace before the reply's JSON (empty at the start)
        buf_.erase(0, k);
        mode_ = Mode::Call;
        marker_.clear();
        continue;
      }
      at_start_ = false;
    }
    // The first marker in the held text opens a call region.
    size_t pos = std::string::npos;
    const std::string* found = nullptr;
    for (const auto& m : markers_) {
      size_t p = buf_.find(m);
      if (p < pos) pos = p, found = &m;
    }
    if (found) {
      size_t e = pos;
      while (e > 0 && is_space(buf_[e - 1])) --e;  // whitespace before a call is a separator
      out.content += buf_.substr(0, e);
      buf_.erase(0, pos + found->size());
      marker_ = *found;
      mode_ = Mode::Call;
      continue;
    }
    if (final) {
      // Trailing whitespace after calls is a separator; otherwise it is the model's content.
      if (n_calls_ == 0 || !trim(buf_).empty()) out.content += buf_;
      buf_.clear();
      return;
    }
    // Hold back a tail that may begin a marker, and trailing whitespace (it may precede a call).
    size_t keep = buf_.size();
    for (const auto& m : markers_)
      for (size_t len = std::min(m.size() - 1, buf_.size()); len > 0; --len)
        if (is_marker_prefix(std::string_view(buf_).substr(buf_.size() - len), m)) {
          keep = std::min(keep, buf_.size() - len);
          break;
        }
    while (keep > 0 && is_space(buf_[keep - 1])) --keep;
    out.content += buf_.substr(0, keep);
    buf_.erase(0, keep);
    return;
  }
  buf_.clear();
}

ToolCallParser::Output ToolCallParser::feed(std::string_view text) {
  Output out;
  if (done_) return out;
  buf_.append(text);
  run(out, false);
  return out;
}

ToolCallParser::Output ToolCallParser::finish() {
  Output out;
  if (!done_) run(out, true);
  return out;
}

std::vector<ToolCall> apply_tool_calls(nlohmann::json& choice, const std::string& text, const ChatTools& tools) {
  ToolCallParser p(tools);
  ToolCallParser::Output all = p.feed(text);
  ToolCallParser::Output rest = p.finish();
  all.content += rest.content;
  for (auto& c : rest.calls) all.calls.push_back(std::move(c));
  nlohmann::json& message = choice["message"];
  if (all.calls.empty()) {
    message["content"] = all.content;
    return all.calls;
  }
  message["content"] = all.content.empty() ? nlohmann::json(nullptr) : nlohmann::json(all.content);
  message["tool_calls"] = openai_tool_calls_json(all.calls);
  choice["finish_reason"] = tool_finish_reason(choice.value("finish_reason", std::string("stop")), all.calls.size());
  return all.calls;
}

}  // namespace moe::server
