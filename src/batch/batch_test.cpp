// batch_test.cpp: the batch layer without an engine: input classification, deterministic ids, the
// journal's recovery from torn and corrupt tails at every byte, shard ranges, merging parts.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "batch/format.h"
#include "batch/journal.h"
#include "batch/merge.h"
#include "testutil/fixtures.h"

namespace moe::batch {
namespace {

using ::moe::testing::TempDir;

std::string slurp(const std::string& path) { return ::moe::testing::read_file(path); }

TEST(BatchFormat, ClassifiesEveryKindOfBadLine) {
  TempDir tmp;
  std::string path = tmp.write("in.jsonl",
                               "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\"}}\n"
                               "\n"
                               "not json\n"
                               "[1,2]\n"
                               "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}\n"
                               "{\"custom_id\":\"b\",\"method\":\"GET\",\"url\":\"/v1/completions\",\"body\":{}}\n"
                               "{\"custom_id\":\"c\",\"method\":\"POST\",\"url\":\"/v1/images\",\"body\":{}}\n"
                               "{\"custom_id\":\"d\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":3}\n"
                               "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n"
                               "{\"custom_id\":\"e\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}");
  Input in = scan_input(path);
  ASSERT_EQ(in.lines.size(), 9u);  // the blank line is not a request
  std::vector<std::string> codes;
  for (const auto& l : in.lines) codes.push_back(l.valid ? "ok" : l.error_code);
  EXPECT_EQ(codes, (std::vector<std::string>{"ok", "invalid_json", "invalid_json", "missing_custom_id", "invalid_method",
                                             "invalid_url", "invalid_body", "duplicate_custom_id", "ok"}));
  EXPECT_EQ(in.lines[1].line_no, 3);
  EXPECT_NE(in.lines[7].error_message.find("line 9"), std::string::npos);
  EXPECT_NE(in.lines[7].error_message.find("line 1"), std::string::npos);
  EXPECT_EQ(in.lines[8].endpoint, Endpoint::Embeddings);
  EXPECT_EQ(in.text(8), "{\"custom_id\":\"e\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}");
  EXPECT_EQ(in.n_valid(), 2u);
}

TEST(BatchFormat, DeeplyNestedLinesAreRefusedBeforeParsing) {
  // 1,000,000 levels inside a body: refused as the line's error, never handed to the request parsers
  // (whose recursive copies would overflow the stack).
  TempDir tmp;
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  std::string path = tmp.write("in.jsonl",
                               "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":" +
                                   deep + "}}\n{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":"
                                          "{\"prompt\":[[[1]]]}}\n");
  Input in = scan_input(path);
  ASSERT_EQ(in.lines.size(), 2u);
  EXPECT_FALSE(in.lines[0].valid);
  EXPECT_EQ(in.lines[0].error_code, "invalid_json");
  EXPECT_NE(in.lines[0].error_message.find("line 1: the line is nested too deeply: more than 256 levels"),
            std::string::npos)
      << in.lines[0].error_message;
  EXPECT_TRUE(in.lines[1].valid);
}

TEST(BatchFormat, EmptyInputIsAnError) {
  TempDir tmp;
  EXPECT_THROW(scan_input(tmp.write("e.jsonl", "\n \n")), Error);
  EXPECT_THROW(scan_input(tmp.file("missing.jsonl")), Error);
}

TEST(BatchFormat, IdsArePureFunctionsOfSaltInputAndIndex) {
  auto a = line_ids("", 42, 7, Endpoint::Chat);
  auto b = line_ids("", 42, 7, Endpoint::Chat);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.body_id, b.body_id);
  EXPECT_TRUE(a.id.starts_with("batch_req_"));
  EXPECT_TRUE(a.body_id.starts_with("chatcmpl-"));
  EXPECT_NE(a.id, line_ids("", 42, 8, Endpoint::Chat).id);
  EXPECT_NE(a.id, line_ids("", 43, 7, Endpoint::Chat).id);
  EXPECT_NE(a.id, line_ids("batch_x", 42, 7, Endpoint::Chat).id);
}

TEST(BatchFormat, ResponseLineIsTheOpenAiShape) {
  auto ids = line_ids("", 1, 0, Endpoint::Completions);
  auto j = nlohmann::json::parse(response_line(ids, "q\"1", 200, "{\"x\":1}"));
  EXPECT_EQ(j["id"], ids.id);
  EXPECT_EQ(j["custom_id"], "q\"1");
  EXPECT_EQ(j["response"]["status_code"], 200);
  EXPECT_EQ(j["response"]["request_id"], ids.request_id);
  EXPECT_EQ(j["response"]["body"]["x"], 1);
  EXPECT_TRUE(j["error"].is_null());
}

TEST(BatchFormat, Crc32KnownValue) { EXPECT_EQ(crc32("123456789"), 0xcbf43926u); }

TEST(BatchFormat, ShardRangesCoverEveryIndexOnce) {
  for (int64_t n : {0, 1, 5, 500, 1001})
    for (int count : {1, 2, 3, 7}) {
      int64_t next = 0;
      for (int i = 0; i < count; ++i) {
        auto [b, e] = shard_range(Shard{i, count}, n);
        EXPECT_EQ(b, next);
        EXPECT_LE(b, e);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
  EXPECT_EQ(parse_shard("2/5").index, 2);
  EXPECT_THROW(parse_shard("5/5"), Error);
  EXPECT_THROW(parse_shard("1-4"), Error);
  EXPECT_THROW(parse_shard("a/4"), Error);
  EXPECT_THROW(parse_shard("0/0"), Error);
}

TEST(BatchFormat, DefaultPaths) {
  EXPECT_EQ(default_errors_path("out/results.jsonl"), "out/results.errors.jsonl");
  EXPECT_EQ(default_errors_path("results"), "results.errors.jsonl");
}

TEST(BatchJournal, RecordRoundTripAndCorruptionIsRejected) {
  Record r{123, true, "{\"a\":\"b c\"}"};
  std::string enc = encode_record(r);
  ASSERT_EQ(enc.back(), '\n');
  auto d = decode_record(std::string_view(enc).substr(0, enc.size() - 1));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->index, 123);
  EXPECT_TRUE(d->to_errors);
  EXPECT_EQ(d->line, r.line);
  // Any single flipped byte is caught by the CRC or the syntax.
  for (size_t i = 0; i + 1 < enc.size(); ++i) {
    std::string bad = enc.substr(0, enc.size() - 1);
    bad[i] ^= 0x20;
    EXPECT_FALSE(decode_record(bad)) << "byte " << i;
  }
}

// A crash can leave the journal cut at any byte, or with a zero-filled tail (a power cut after the
// size was updated but before the data). Reopening keeps exactly the whole records before it.
TEST(BatchJournal, TornTailAtEveryByteKeepsTheWholeRecords) {
  TempDir tmp;
  std::vector<std::string> recs;
  std::string whole;
  for (int i = 0; i < 4; ++i) {
    recs.push_back(encode_record(Record{i, i % 2 == 1, nlohmann::json({{"i", i}, {"pad", std::string(size_t(i * 7), 'x')}}).dump()}));
    whole += recs.back();
  }
  for (size_t cut = 0; cut <= whole.size(); ++cut) {
    for (bool zeros : {false, true}) {
      std::string path = tmp.file("j.log");
      {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << whole.substr(0, cut);
        if (zeros) out << std::string(37, '\0');
      }
      size_t expect = 0, bytes = 0;
      for (const auto& r : recs)
        if (bytes + r.size() <= cut) {
          bytes += r.size();
          ++expect;
        }
      std::vector<Record> got;
      {
        JournalWriter w(path, [&](Record&& r) { got.push_back(std::move(r)); });
        EXPECT_EQ(w.bytes(), bytes);
        w.append(Record{99, false, "{}"});
        w.sync();
      }
      ASSERT_EQ(got.size(), expect) << "cut at " << cut;
      for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].index, int64_t(i));
      // The appended record follows the good prefix directly.
      EXPECT_EQ(slurp(path), whole.substr(0, bytes) + encode_record(Record{99, false, "{}"}));
    }
  }
}

TEST(BatchJournal, LoadStateFirstRecordWinsAcrossJournals) {
  TempDir tmp;
  {
    JournalWriter a(tmp.file("journal-0-of-2.log"), [](Record&&) {});
    a.append(Record{0, false, "A0"});
    a.append(Record{3, false, "A3"});
    a.sync();
  }
  LoadedState s = load_state(tmp.dir(), "journal.log", 0, 4);
  EXPECT_EQ(s.done, 2);
  EXPECT_EQ(s.records[0]->line, "A0");
  EXPECT_EQ(s.records[3]->line, "A3");
  s.writer->append(Record{1, true, "B1"});
  s.writer->append(Record{0, false, "again"});  // a repeat never replaces the first answer
  s.writer.reset();
  LoadedState t = load_state(tmp.dir(), "journal.log", 0, 2);
  EXPECT_EQ(t.done, 2);
  EXPECT_TRUE(t.records[1]->to_errors);
  EXPECT_EQ(t.records[1]->line, "B1");
}

TEST(BatchJournal, ManifestRefusesAnotherInput) {
  TempDir tmp;
  check_manifest(tmp.dir(), {1, 10});
  check_manifest(tmp.dir(), {1, 10});
  EXPECT_THROW(check_manifest(tmp.dir(), {2, 10}), Error);
}

TEST(BatchJournal, AtomicFileLeavesNothingUncommitted) {
  TempDir tmp;
  std::string path = tmp.file("out.jsonl");
  {
    AtomicFile f(path);
    f.write("half");
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp.dir()), {}), 0);
  write_file_atomic(path, "whole\n");
  EXPECT_EQ(slurp(path), "whole\n");
}

// Two threads replacing one file (the Batch API's cancel handler and its worker both rewrite a batch's
// JSON): each write has its own temporary, so every rename succeeds and the file is always one whole
// version. With one temporary per process, one thread renamed the other's away ("cannot rename").
TEST(BatchJournal, ConcurrentReplacementsOfOneFileAllSucceed) {
  TempDir tmp;
  const std::string path = tmp.file("b.json");
  const std::string a(4096, 'a'), b(4096, 'b');
  std::atomic<int> failures{0};
  auto writer = [&](const std::string& content) {
    for (int i = 0; i < 200; ++i) {
      try {
        write_file_atomic(path, content);
      } catch (const Error&) {
        ++failures;
      }
    }
  };
  std::thread t1(writer, a), t2(writer, b);
  t1.join();
  t2.join();
  EXPECT_EQ(failures.load(), 0);
  const std::string got = slurp(path);
  EXPECT_TRUE(got == a || got == b) << got.size() << " bytes";
  size_t leftovers = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.dir())) leftovers += e.path().filename() != "b.json";
  EXPECT_EQ(leftovers, 0u);
}

TEST(BatchMerge, PartsInAnyOrderGiveInputOrderAndRepeatsAreNamed) {
  TempDir tmp;
  std::string in_text;
  for (int i = 0; i < 6; ++i)
    in_text += cat("{\"custom_id\":\"c", i, "\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}\n");
  Input in = scan_input(tmp.write("in.jsonl", in_text));
  auto line = [&](int i) { return response_line(line_ids("", in.hash, i, Endpoint::Completions), cat("c", i), 200, "{}"); };
  std::string p1 = tmp.write("p1.jsonl", line(4) + "\n" + line(5) + "\n" + line(3) + "\n");
  std::string p1e = tmp.write("p1.errors.jsonl", "");
  std::string p0 = tmp.write("p0.jsonl", line(0) + "\n" + line(2) + "\n");
  std::string p0e = tmp.write("p0.errors.jsonl", line(1) + "\n");
  Collected c = collect_parts(in, "", {p1, p1e, p0, p0e}, {false, true, false, true});
  EXPECT_EQ(c.missing, 0);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(c.records[size_t(i)]);
    EXPECT_EQ(c.records[size_t(i)]->line, line(i));
    EXPECT_EQ(c.records[size_t(i)]->to_errors, i == 1);
  }
  Collected partial = collect_parts(in, "", {p1, p1e}, {false, true});
  EXPECT_EQ(partial.missing, 3);
  EXPECT_EQ(partial.first_missing, "line 1 (custom_id c0)");
  std::string dup = tmp.write("dup.jsonl", line(2) + "\n");
  EXPECT_THROW(collect_parts(in, "", {p0, dup}, {false, false}), Error);
  std::string alien = tmp.write("alien.jsonl", response_line(line_ids("", in.hash + 1, 0, Endpoint::Completions), "x", 200, "{}") + "\n");
  EXPECT_THROW(collect_parts(in, "", {alien}, {false}), Error);
}

}  // namespace
}  // namespace moe::batch
