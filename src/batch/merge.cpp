// merge.cpp: see merge.h.
#include "batch/merge.h"

#include <fstream>
#include <unordered_map>

#include "util/error.h"

namespace moe::batch {

Collected collect_parts(const Input& input, const std::string& salt, const std::vector<std::string>& files,
                        const std::vector<bool>& errors) {
  std::unordered_map<std::string, int64_t> by_id;
  by_id.reserve(input.lines.size());
  for (size_t i = 0; i < input.lines.size(); ++i)
    by_id.emplace(line_ids(salt, input.hash, int64_t(i), input.lines[i].endpoint).id, int64_t(i));
  Collected c;
  c.records.resize(input.lines.size());
  for (size_t f = 0; f < files.size(); ++f) {
    std::ifstream in(files[f], std::ios::binary);
    if (!in) fail("cannot read the part ", files[f]);
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string())
        fail(files[f], ":", line_no, ": not an output line of a batch job (no \"id\")");
      auto it = by_id.find(j["id"].get<std::string>());
      if (it == by_id.end())
        fail(files[f], ":", line_no, ": the id ", j["id"].dump(), " is not one of ", input.path,
             " (a part of another input?)");
      auto& slot = c.records[size_t(it->second)];
      if (slot)
        fail(files[f], ":", line_no, ": request ", it->second + 1, " (line ", input.lines[size_t(it->second)].line_no,
             " of the input) is answered twice");
      slot = Record{it->second, bool(errors[f]), std::move(line)};
    }
  }
  for (size_t i = 0; i < c.records.size(); ++i) {
    if (c.records[i]) continue;
    if (c.missing++ == 0) {
      const auto& l = input.lines[i];
      c.first_missing = cat("line ", l.line_no, l.custom_id.empty() ? "" : cat(" (custom_id ", l.custom_id, ")"));
    }
  }
  return c;
}

}  // namespace moe::batch
