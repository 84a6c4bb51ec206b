// error.h: the one exception type of the project and a helper to build its messages.
// Every failure a user can cause (a bad file, a bad request, a bad flag) becomes a moe::Error whose text
// names what is wrong; frontends catch it and print it. Programming errors stay assertions.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Concatenates anything streamable: cat("tensor ", name, " has ", n, " dims").
template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace moe
