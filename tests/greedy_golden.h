// greedy_golden.h: `moe run --temp 0` on the stories models against llama.cpp's token ids
// (../shared/golden/stories260K.greedy.jsonl: prompt ids and greedy ids of 8 cases), shared by the CPU
// test (model_e2e_test.cpp) and the Vulkan one (vulkan_e2e_test.cpp), which differ only in the flags.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/fixtures.h"
#include "util/error.h"

namespace moe::testing {

// Every golden case run with `extra_flags` appended: prompt and greedy ids equal, all 8 cases present.
inline void expect_greedy_ids_match_golden(const std::string& extra_flags) {
  std::istringstream lines(read_file(fixture("golden/stories260K.greedy.jsonl")));
  std::string line;
  int cases = 0;
  auto join = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) s += cat(i ? "," : "", ids[i]);
    return s;
  };
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    const std::string model = j["model"], prompt = j["prompt"];
    SCOPED_TRACE(model + ": " + prompt);
    auto r = run_moe(cat("run '", fixture("models/" + model), "' -p '", prompt, "' -n ", j["n_predict"].get<int>(),
                         " --temp 0 -t 1 --print-ids", extra_flags));
    ASSERT_EQ(r.status, 0) << r.err;
    std::istringstream out(r.out);
    std::string prompt_ids, greedy_ids;
    std::getline(out, prompt_ids);
    std::getline(out, greedy_ids);
    EXPECT_EQ(prompt_ids, join(j["prompt_ids"].get<std::vector<int32_t>>()));
    EXPECT_EQ(greedy_ids, join(j["greedy_ids"].get<std::vector<int32_t>>()));
    ++cases;
  }
  EXPECT_EQ(cases, 8);
}

}  // namespace moe::testing
