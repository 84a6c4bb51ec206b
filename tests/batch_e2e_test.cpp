// batch_e2e_test.cpp: `moe batch` end to end on the bundled model: a 500-request job (completions,
// chat, embeddings, and invalid lines of every kind) killed with SIGKILL at random points and re-run
// until it finishes must write exactly the bytes of an uninterrupted run; a full disk (RLIMIT_FSIZE)
// stops it cleanly and a re-run finishes; --shard parts merged equal the one-process output; and under
// Open MPI, 2 ranks write the same bytes, and killing one rank then re-running completes the job.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "testutil/fixtures.h"

namespace {

using moe::testing::TempDir;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string bundled_model() { return moe::testing::source_dir() + "/models/stories260K-moe.gguf"; }

// A child process with its output in files.
struct Child {
  pid_t pid = -1;
  std::string out, err;
};

Child spawn(const std::vector<std::string>& args, const std::string& dir, rlim_t fsize_limit = RLIM_INFINITY) {
  Child c;
  static int n = 0;
  c.out = dir + "/child" + std::to_string(++n) + ".out";
  c.err = dir + "/child" + std::to_string(n) + ".err";
  std::vector<std::string> a = args;
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  c.pid = ::fork();
  if (c.pid == 0) {
    int o = ::open(c.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(c.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::setpgid(0, 0);  // its own group, so that a kill reaches mpirun's ranks too
    if (fsize_limit != RLIM_INFINITY) {
      struct rlimit rl {fsize_limit, fsize_limit};
      ::setrlimit(RLIMIT_FSIZE, &rl);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return c;
}

// Exit code, or 128 + signal.
int wait_child(const Child& c) {
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string slurp(const std::string& p) { return moe::testing::read_file(p); }

bool exists(const std::string& p) { return std::filesystem::exists(p); }

std::vector<std::string> batch_args(const std::vector<std::string>& extra) {
  std::vector<std::string> a = {moe::testing::moe_binary(), "batch", bundled_model()};
  a.insert(a.end(), extra.begin(), extra.end());
  for (const char* s : {"-t", "1", "--progress", "lines", "--max-num-seqs", "16"}) a.push_back(s);
  return a;
}

// The 500-line job: 36% completions, 30% chat (four shared system prompts: the prefix cache's case),
// 24% embeddings, and 10% lines that must land in the errors file (bad JSON, unknown url, missing
// custom_id, a duplicate custom_id, an invalid body that the route refuses with a 400).
struct Job {
  std::string text;
  std::set<std::string> valid_ids;    // answered with 200
  std::set<std::string> refused_ids;  // answered with a 4xx body
  int64_t line_errors = 0;            // no response at all
};

Job make_job(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  Job job;
  const char* words[] = {"Once", "upon", "a", "time", "there", "was", "a", "little", "girl", "named", "Lily", "who",
                         "loved", "to", "play", "in", "the", "park", "with", "her", "dog"};
  auto phrase = [&](int k) {
    std::string s;
    for (int i = 0; i < k; ++i) s += (i ? " " : "") + std::string(words[rng() % 21]);
    return s;
  };
  for (int i = 0; i < n; ++i) {
    std::string id = "req-" + std::to_string(i);
    int kind = int(rng() % 100);
    json line = {{"custom_id", id}, {"method", "POST"}};
    if (kind < 36) {
      line["url"] = "/v1/completions";
      line["body"] = {{"prompt", phrase(3 + int(rng() % 6))}, {"max_tokens", 1 + int(rng() % 8)}, {"temperature", 0}};
      job.valid_ids.insert(id);
    } else if (kind < 66) {
      line["url"] = "/v1/chat/completions";
      const char* systems[] = {"You tell short stories about a girl and her dog in the park.",
                               "You are a helpful assistant who answers in one sentence.",
                               "Answer like a pirate.", "Be brief."};
      line["body"] = {{"messages", {{{"role", "system"}, {"content", systems[rng() % 4]}},
                                    {{"role", "user"}, {"content", phrase(4)}}}},
                      {"max_tokens", 1 + int(rng() % 8)},
                      {"temperature", 0}};
      job.valid_ids.insert(id);
    } else if (kind < 90) {
      line["url"] = "/v1/embeddings";
      line["body"] = {{"input", phrase(2 + int(rng() % 5))}};
      job.valid_ids.insert(id);
    } else {
      switch (kind) {
        case 90: case 91: job.text += "{\"custom_id\": \"" + id + "\", broken json\n"; ++job.line_errors; continue;
        case 92: case 93:
          line["url"] = "/v1/images/generations";
          line["body"] = json::object();
          ++job.line_errors;
          break;
        case 94: case 95:
          line.erase("custom_id");
          line["url"] = "/v1/completions";
          line["body"] = {{"prompt", "x"}};
          ++job.line_errors;
          break;
        case 96: case 97:
          line["custom_id"] = "req-0";  // a repeat of the first line's id
          line["url"] = "/v1/completions";
          line["body"] = {{"prompt", "x"}, {"max_tokens", 2}};
          ++job.line_errors;
          break;
        default:
          line["url"] = "/v1/completions";
          line["body"] = {{"prompt", "x"}, {"temperature", 5}};  // out of [0, 2]: the route says 400
          job.refused_ids.insert(id);
          break;
      }
    }
    job.text += line.dump() + "\n";
  }
  return job;
}

struct Outputs {
  std::string out, err;
};

// The lines with usage.prompt_tokens_details.cached_tokens set to 0: how much of a prompt the prefix
// cache served depends on which requests happened to run before it, so it is the one field that may
// differ between two runs with prefix caching on (everything the model wrote is the same bytes).
std::string without_cache_counts(const std::string& text) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) {
    auto j = nlohmann::ordered_json::parse(line);
    if (j["response"].is_object()) {
      auto& body = j["response"]["body"];
      if (body.contains("usage") && body["usage"].contains("prompt_tokens_details"))
        body["usage"]["prompt_tokens_details"]["cached_tokens"] = 0;
    }
    out += j.dump() + "\n";
  }
  return out;
}

void expect_same_answers(const Outputs& got, const Outputs& want) {
  EXPECT_EQ(without_cache_counts(got.out), without_cache_counts(want.out));
  EXPECT_EQ(without_cache_counts(got.err), without_cache_counts(want.err));
}

// Checks the exactly-once property directly: each valid id once in the output, each refused id once in
// the errors file with a 400 body, each line error once, every line complete JSON.
void check_outputs(const Job& job, const Outputs& o) {
  std::map<std::string, int> seen;
  std::istringstream out(o.out), err(o.err);
  std::string line;
  while (std::getline(out, line)) {
    json j = json::parse(line);  // throws on a torn line
    ASSERT_EQ(j["response"]["status_code"], 200) << line;
    ++seen[j["custom_id"].get<std::string>()];
  }
  int64_t line_errors = 0;
  while (std::getline(err, line)) {
    json j = json::parse(line);
    if (j["response"].is_null()) {
      ++line_errors;
      EXPECT_TRUE(j["error"]["message"].get<std::string>().starts_with("line ")) << line;
      continue;
    }
    EXPECT_EQ(j["response"]["status_code"], 400) << line;
    EXPECT_EQ(j["response"]["body"]["error"]["param"], "temperature") << line;
    ++seen[j["custom_id"].get<std::string>()];
  }
  EXPECT_EQ(line_errors, job.line_errors);
  for (const auto& id : job.valid_ids) EXPECT_EQ(seen[id], 1) << id;
  for (const auto& id : job.refused_ids) EXPECT_EQ(seen[id], 1) << id;
  EXPECT_EQ(seen.size(), job.valid_ids.size() + job.refused_ids.size());
}

class BatchE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    job_ = new Job(make_job(500, 1234));
    input_ = dir_->write("input.jsonl", job_->text);
    Child c = spawn(batch_args({input_, dir_->file("ref.jsonl")}), dir_->dir());
    auto t0 = Clock::now();
    ref_status_ = wait_child(c);
    ref_seconds_ = std::chrono::duration<double>(Clock::now() - t0).count();
    ref_err_ = slurp(c.err);
    if (ref_status_ == 0) ref_ = new Outputs{slurp(dir_->file("ref.jsonl")), slurp(dir_->file("ref.errors.jsonl"))};
    // Without prefix caching every byte is a function of the input, cached_tokens included (always 0):
    // the reference for the byte-for-byte comparisons.
    Child nc = spawn(batch_args({input_, dir_->file("ref-nc.jsonl"), "--no-enable-prefix-caching"}), dir_->dir());
    if (wait_child(nc) == 0) ref_nc_ = new Outputs{slurp(dir_->file("ref-nc.jsonl")), slurp(dir_->file("ref-nc.errors.jsonl"))};
  }
  static void TearDownTestSuite() {
    delete ref_;
    delete ref_nc_;
    delete job_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_EQ(ref_status_, 0) << ref_err_;
    ASSERT_TRUE(ref_nc_) << "the run without prefix caching failed";
  }

  static Outputs outputs(const std::string& out) {
    std::string errors = out.substr(0, out.size() - 6) + ".errors.jsonl";
    return {slurp(out), slurp(errors)};
  }

  static inline TempDir* dir_ = nullptr;
  static inline Job* job_ = nullptr;
  static inline std::string input_;
  static inline int ref_status_ = -1;
  static inline double ref_seconds_ = 0;
  static inline std::string ref_err_;
  static inline Outputs* ref_ = nullptr;
  static inline Outputs* ref_nc_ = nullptr;
};

TEST_F(BatchE2E, UninterruptedRunAnswersEveryLineOnce) {
  check_outputs(*job_, *ref_);
  // The prefix cache changes what is computed, not what is answered.
  expect_same_answers(*ref_, *ref_nc_);
  EXPECT_NE(ref_err_.find("500 requests"), std::string::npos) << ref_err_;
  EXPECT_NE(ref_err_.find("wrote "), std::string::npos) << ref_err_;
  EXPECT_FALSE(exists(dir_->file("ref.jsonl.moe-batch"))) << "the journal must go once the outputs are written";
  // Running the finished job again does nothing and changes nothing.
  Child again = spawn(batch_args({input_, dir_->file("ref.jsonl")}), dir_->dir());
  EXPECT_EQ(wait_child(again), 0);
  EXPECT_NE(slurp(again.err).find("already complete"), std::string::npos) << slurp(again.err);
  EXPECT_EQ(outputs(dir_->file("ref.jsonl")).out, ref_->out);
}

// Records (answers) in a journal so far: its complete lines.
int64_t journal_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::string all((std::istreambuf_iterator<char>(in)), {});
  return int64_t(std::count(all.begin(), all.end(), '\n'));
}

TEST_F(BatchE2E, SigkillAtRandomPointsThenRerunGivesTheSameAnswers) {
  const std::string out = dir_->file("killed.jsonl");
  const std::string journal = out + ".moe-batch/journal.log";
  const int64_t total = 500;
  std::mt19937 rng(uint32_t(std::random_device{}()));
  int kills = 0;
  std::string log;
  // The first kill lands while the model loads; each later one after a random number of new answers
  // (a random point of the work left), then a random few milliseconds more.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int64_t before = journal_records(journal);
    const int64_t left = total - before;
    if (left < 4) break;
    const int64_t target = before + 1 + int64_t(rng() % uint64_t(std::max<int64_t>(1, left / 3)));
    Child c = spawn(batch_args({input_, out}), dir_->dir());
    int status = 0;
    bool exited = false;
    if (attempt == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 40));
    } else {
      auto deadline = Clock::now() + std::chrono::seconds(120);
      while (journal_records(journal) < target && Clock::now() < deadline) {
        if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
          exited = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    }
    if (exited || ::waitpid(c.pid, &status, WNOHANG) == c.pid) break;  // it finished first
    ::kill(c.pid, SIGKILL);
    ASSERT_EQ(wait_child(c), 128 + SIGKILL);
    ++kills;
    log += "killed with " + std::to_string(journal_records(journal)) + " answers journaled; ";
  }
  EXPECT_GE(kills, 3) << log;
  std::cout << "  " << log << "\n";
  Child last = spawn(batch_args({input_, out}), dir_->dir());
  ASSERT_EQ(wait_child(last), 0) << slurp(last.err);
  Outputs o = outputs(out);
  check_outputs(*job_, o);
  expect_same_answers(o, *ref_);
  EXPECT_TRUE(!HasFailure()) << log;
}

TEST_F(BatchE2E, FullDiskStopsCleanlyAndRerunFinishes) {
  const std::string out = dir_->file("full.jsonl");
  // 48 KiB per file: room for a part of the journal, never for the whole job.
  Child c = spawn(batch_args({input_, out}), dir_->dir(), 48 * 1024);
  int rc = wait_child(c);
  std::string err = slurp(c.err);
  EXPECT_EQ(rc, 1) << err;
  EXPECT_NE(err.find("the disk is full"), std::string::npos) << err;
  EXPECT_FALSE(exists(out));
  Child again = spawn(batch_args({input_, out}), dir_->dir());
  ASSERT_EQ(wait_child(again), 0) << slurp(again.err);
  EXPECT_NE(slurp(again.err).find("resuming"), std::string::npos) << slurp(again.err);
  expect_same_answers(outputs(out), *ref_);
}

TEST_F(BatchE2E, ShardsMergedEqualOneProcess) {
  std::vector<std::string> parts;
  for (int i = 0; i < 3; ++i) {
    parts.push_back(dir_->file("part" + std::to_string(i) + ".jsonl"));
    Child c = spawn(batch_args({input_, parts.back(), "--shard", std::to_string(i) + "/3"}), dir_->dir());
    ASSERT_EQ(wait_child(c), 0) << slurp(c.err);
  }
  // Missing a part: refused, naming what is missing.
  const std::string merged = dir_->file("merged.jsonl");
  Child bad = spawn({moe::testing::moe_binary(), "batch", "--merge", input_, merged, parts[0], parts[2]}, dir_->dir());
  EXPECT_EQ(wait_child(bad), 1);
  EXPECT_NE(slurp(bad.err).find("have no answer in the parts"), std::string::npos) << slurp(bad.err);
  EXPECT_FALSE(exists(merged));
  Child ok = spawn({moe::testing::moe_binary(), "batch", "--merge", input_, merged, parts[2], parts[0], parts[1]},
                   dir_->dir());
  ASSERT_EQ(wait_child(ok), 0) << slurp(ok.err);
  expect_same_answers(outputs(merged), *ref_);
}

TEST(BatchCli, BadArgumentsAreNamed) {
  TempDir tmp;
  auto r = moe::testing::run_moe_args({"batch", tmp.file("nope.jsonl"), tmp.file("out.jsonl")});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no such file"), std::string::npos) << r.err;
  std::string in = tmp.write("in.jsonl", "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}\n");
  r = moe::testing::run_moe_args({"batch", in, tmp.file("out.jsonl"), "--shard", "3/2"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--shard"), std::string::npos) << r.err;
  // A stale state directory of another input is refused, not mixed in.
  std::string other = tmp.write("other.jsonl", "{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{}}\n");
  std::filesystem::create_directories(tmp.file("out.jsonl.moe-batch"));
  std::ofstream(tmp.file("out.jsonl.moe-batch/manifest.json")) << "{\"version\":1,\"input_hash\":\"0\",\"requests\":1}\n";
  r = moe::testing::run_moe_args({"batch", other, tmp.file("out.jsonl")});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("belongs to another input"), std::string::npos) << r.err;
}

// ---- Open MPI ----------------------------------------------------------------------------------------

std::string find_mpirun() {
  for (const char* p : {"/usr/bin/mpirun", "/usr/local/bin/mpirun"})
    if (exists(p)) return p;
  return "";
}

std::vector<std::string> mpirun_args(const std::string& mpirun, int np, const std::vector<std::string>& cmd) {
  std::vector<std::string> a = {mpirun, "--oversubscribe", "-np", std::to_string(np)};
  if (::geteuid() == 0) a.push_back("--allow-run-as-root");
  a.insert(a.end(), cmd.begin(), cmd.end());
  return a;
}

// The pids of the `moe` processes whose command line mentions `tag`, by MPI rank.
std::map<int, pid_t> ranks_running(const std::string& tag) {
  std::map<int, pid_t> ranks;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream cmd("/proc/" + std::string(e->d_name) + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(cmd)), {});
    if (cmdline.find(tag) == std::string::npos) continue;
    std::ifstream env("/proc/" + std::string(e->d_name) + "/environ", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(env)), {});
    size_t at = all.find(std::string("OMPI_COMM_WORLD_RANK=").insert(0, 1, '\0'));
    std::ifstream comm("/proc/" + std::string(e->d_name) + "/comm");
    std::string name;
    comm >> name;
    if (at == std::string::npos || name != "moe") continue;
    ranks[std::atoi(all.c_str() + at + 22)] = pid;
  }
  ::closedir(d);
  return ranks;
}

#define MOE_REQUIRE_MPIRUN(var)                                                                          \
  std::string var = find_mpirun();                                                                       \
  if (var.empty()) {                                                                                     \
    if (moe::testing::running_in_ci()) FAIL() << "mpirun is missing; scripts/install-deps.sh installs openmpi-bin"; \
    GTEST_SKIP() << "mpirun not found (install openmpi-bin and libopenmpi-dev, then rebuild, to run this test)"; \
  }

TEST_F(BatchE2E, MpiTwoRanksEqualOneProcessByteForByte) {
  MOE_REQUIRE_MPIRUN(mpirun);
  const std::string out = dir_->file("mpi.jsonl");
  Child c = spawn(mpirun_args(mpirun, 2, batch_args({input_, out, "--no-enable-prefix-caching"})), dir_->dir());
  ASSERT_EQ(wait_child(c), 0) << slurp(c.err) << slurp(c.out);
  std::string err = slurp(c.err);
  EXPECT_NE(err.find("[0/2]"), std::string::npos) << err;
  EXPECT_NE(err.find("[1/2]"), std::string::npos) << err;
  Outputs o = outputs(out);
  EXPECT_EQ(o.out, ref_nc_->out);
  EXPECT_EQ(o.err, ref_nc_->err);
  EXPECT_FALSE(exists(out + ".moe-batch"));
}

TEST_F(BatchE2E, MpiKilledRankThenRerunCompletes) {
  MOE_REQUIRE_MPIRUN(mpirun);
  const std::string out = dir_->file("mpikill.jsonl");
  const std::string journal1 = out + ".moe-batch/journal-1-of-2.log";
  const std::vector<std::string> cmd = batch_args({input_, out, "--no-enable-prefix-caching"});
  Child c = spawn(mpirun_args(mpirun, 2, cmd), dir_->dir());
  // Kill rank 1 once it has answered something (its journal has records), well before it is done.
  auto deadline = Clock::now() + std::chrono::seconds(60);
  std::map<int, pid_t> ranks;
  while (Clock::now() < deadline) {
    ranks = ranks_running(out);
    std::error_code ec;
    if (ranks.count(1) && std::filesystem::file_size(journal1, ec) > 2000 && !ec) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(ranks.count(1)) << "rank 1 never started: " << slurp(c.err);
  ::kill(ranks[1], SIGKILL);
  int rc = wait_child(c);
  EXPECT_NE(rc, 0) << "mpirun must report the dead rank";
  EXPECT_FALSE(exists(out));
  EXPECT_TRUE(exists(out + ".moe-batch/journal-0-of-2.log"));
  Child again = spawn(mpirun_args(mpirun, 2, cmd), dir_->dir());
  ASSERT_EQ(wait_child(again), 0) << slurp(again.err);
  EXPECT_NE(slurp(again.err).find("resuming"), std::string::npos) << slurp(again.err);
  Outputs o = outputs(out);
  check_outputs(*job_, o);
  EXPECT_EQ(o.out, ref_nc_->out);
  EXPECT_EQ(o.err, ref_nc_->err);
}

}  // namespace
