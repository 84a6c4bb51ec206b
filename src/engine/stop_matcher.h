// stop_matcher.h: stop strings over streamed text. Text that might be the start of a stop string is
// held back until it is known not to be, so a client never sees any part of a stop string, and the
// sequence ends as soon as one appears (even across token boundaries).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace moe::engine {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  // Feeds new text; returns the text now safe to emit. Sets stopped() when a stop string appeared
  // (the returned text then ends right before it, and later input is ignored).
  std::string push(std::string_view text);
  // At the end of the sequence: whatever was held back (nothing after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace moe::engine
