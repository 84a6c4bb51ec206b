// merge.h: joining the parts of a split job (`moe batch --merge`, and the check that an existing
// OUTPUT is already the complete answer to INPUT). A part is an output file and its errors file as a
// shard wrote them; each line is put back at its input index through its id, which is a pure function
// of the input and the index (format.h), so parts may come in any order and from any machine. A line
// whose id belongs to no request of INPUT, or a request answered twice, is an error naming the file
// and line; requests with no answer are counted and named.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "batch/format.h"
#include "batch/journal.h"

namespace moe::batch {

struct Collected {
  std::vector<std::optional<Record>> records;  // by input index
  int64_t missing = 0;
  std::string first_missing;  // "line N (custom_id X)" of the first request with no answer
};

// Reads `files` (output-format JSONL; `errors[i]` says whether files[i] is an errors file).
Collected collect_parts(const Input& input, const std::string& salt, const std::vector<std::string>& files,
                        const std::vector<bool>& errors);

}  // namespace moe::batch
