// journal.cpp: see journal.h.
#include "batch/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "batch/format.h"

namespace moe::batch {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string parent_dir(const std::string& path) {
  auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

// write(2) all of `bytes` or report the errno.
int write_all(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return ENOSPC;
    done += size_t(n);
  }
  return 0;
}

}  // namespace

void throw_io(const std::string& what, int err) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    throw DiskFull(cat(what, ": ", std::strerror(err), " (the disk is full: free space and run the same command again "
                                                       "to resume)"));
  fail(what, ": ", std::strerror(err));
}

std::string encode_record(const Record& r) {
  std::string body = cat(r.index, r.to_errors ? " e " : " o ", r.line);
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x ", crc32(body));
  return crc + body + "\n";
}

std::optional<Record> decode_record(std::string_view line) {
  if (line.size() < 13 || line[8] != ' ') return std::nullopt;
  uint32_t want = 0;
  for (int i = 0; i < 8; ++i) {
    char c = line[size_t(i)];
    uint32_t v;
    if (c >= '0' && c <= '9') v = uint32_t(c - '0');
    else if (c >= 'a' && c <= 'f') v = uint32_t(c - 'a' + 10);
    else return std::nullopt;
    want = want << 4 | v;
  }
  std::string_view body = line.substr(9);
  if (crc32(body) != want) return std::nullopt;
  size_t sp = body.find(' ');
  if (sp == 0 || sp == std::string_view::npos || sp > 18 || body.size() < sp + 3 || body[sp + 2] != ' ')
    return std::nullopt;
  Record r;
  for (size_t i = 0; i < sp; ++i) {
    if (body[i] < '0' || body[i] > '9') return std::nullopt;
    r.index = r.index * 10 + (body[i] - '0');
  }
  char k = body[sp + 1];
  if (k != 'o' && k != 'e') return std::nullopt;
  r.to_errors = k == 'e';
  r.line = std::string(body.substr(sp + 3));
  return r;
}

uint64_t read_journal(const std::string& path, const std::function<void(Record&&)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  uint64_t good = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline after it: a torn record
    auto r = decode_record(line);
    if (!r) break;
    good += line.size() + 1;
    fn(std::move(*r));
  }
  return good;
}

JournalWriter::JournalWriter(const std::string& path, const std::function<void(Record&&)>& existing) : path_(path) {
  size_ = read_journal(path, existing);
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_io(cat("cannot open the journal ", path), errno);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw_io(cat("cannot stat the journal ", path), errno);
  if (uint64_t(st.st_size) != size_) {
    // A torn tail from a crash: cut it so that new records follow the last whole one.
    if (::ftruncate(fd_, off_t(size_)) != 0) throw_io(cat("cannot repair the journal ", path), errno);
    if (::fdatasync(fd_) != 0) throw_io(cat("cannot sync the journal ", path), errno);
  }
  if (::lseek(fd_, off_t(size_), SEEK_SET) < 0) throw_io(cat("cannot seek in the journal ", path), errno);
  fsync_dir(parent_dir(path));
  last_sync_ = now_s();
}

JournalWriter::~JournalWriter() {
  if (fd_ >= 0) {
    if (pending_ > 0) ::fdatasync(fd_);
    ::close(fd_);
  }
}

void JournalWriter::append(const Record& r) {
  std::string rec = encode_record(r);
  if (int err = write_all(fd_, rec)) {
    // Leave only whole records behind (if this fails too, the CRC catches the tail on the next load).
    if (::ftruncate(fd_, off_t(size_)) == 0) ::lseek(fd_, off_t(size_), SEEK_SET);
    throw_io(cat("cannot append to the journal ", path_), err);
  }
  size_ += rec.size();
  ++pending_;
}

void JournalWriter::sync() {
  if (pending_ == 0) return;
  double t0 = now_s();
  if (::fdatasync(fd_) != 0) throw_io(cat("cannot sync the journal ", path_), errno);
  double t1 = now_s();
  sync_seconds_ += t1 - t0;
  ++syncs_;
  pending_ = 0;
  last_sync_ = t1;
}

bool JournalWriter::sync_due(int64_t max_pending, double max_age_s) const {
  return pending_ >= max_pending || (pending_ > 0 && now_s() - last_sync_ >= max_age_s);
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  // Unique per object, not only per process: two threads replacing the same file must not share (and
  // rename away) one temporary.
  static std::atomic<uint64_t> serial{0};
  tmp_ = cat(path_, ".tmp.", ::getpid(), ".", serial.fetch_add(1, std::memory_order_relaxed));
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_io(cat("cannot create ", tmp_), errno);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::flush() {
  if (int err = write_all(fd_, buf_)) throw_io(cat("cannot write ", tmp_), err);
  buf_.clear();
}

void AtomicFile::write(std::string_view bytes) {
  buf_ += bytes;
  if (buf_.size() >= (size_t(1) << 20)) flush();
}

void AtomicFile::commit() {
  flush();
  if (::fsync(fd_) != 0) throw_io(cat("cannot sync ", tmp_), errno);
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw_io(cat("cannot rename ", tmp_, " to ", path_), errno);
  committed_ = true;
  fsync_dir(parent_dir(path_));
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io(cat("cannot open the directory ", dir), errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw_io(cat("cannot sync the directory ", dir), err);
}

void make_dirs(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return;
  std::string parent = parent_dir(dir);
  if (parent != dir) make_dirs(parent);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_io(cat("cannot create the directory ", dir), errno);
  fsync_dir(parent);
}

void check_manifest(const std::string& state_dir, const Manifest& m) {
  using nlohmann::json;
  const std::string path = state_dir + "/manifest.json";
  char hash[24];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(m.input_hash));
  json want = {{"version", 1}, {"input_hash", hash}, {"requests", m.n_lines}};
  std::ifstream in(path);
  if (in) {
    json have = json::parse(in, nullptr, false);
    if (have.is_discarded() || have != want)
      fail("the job state in ", state_dir, " belongs to another input (", (have.is_discarded() ? "unreadable" : have.dump()),
           ", this input is ", want.dump(), "); remove that directory to start over, or give another OUTPUT");
    return;
  }
  write_file_atomic(path, want.dump() + "\n");
}

LoadedState load_state(const std::string& state_dir, const std::string& own, int64_t begin, int64_t end) {
  LoadedState s;
  s.records.resize(size_t(end - begin));
  auto keep = [&](Record&& r) {
    if (r.index < begin || r.index >= end) return;
    auto& slot = s.records[size_t(r.index - begin)];
    if (slot) return;
    slot = std::move(r);
    ++s.done;
  };
  std::vector<std::string> others;
  if (DIR* d = ::opendir(state_dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.starts_with("journal") && name.ends_with(".log") && name != own) others.push_back(name);
    }
    ::closedir(d);
  }
  for (const auto& name : others) read_journal(state_dir + "/" + name, keep);
  s.writer = std::make_unique<JournalWriter>(state_dir + "/" + own, keep);
  return s;
}

void write_outputs(const std::string& output, const std::string& errors,
                   const std::vector<std::optional<Record>>& records) {
  AtomicFile out(output), err(errors);
  for (const auto& r : records) {
    if (!r) fail("internal error: writing the outputs before every request has an answer");
    (r->to_errors ? err : out).write(r->line);
    (r->to_errors ? err : out).write("\n");
  }
  err.commit();
  out.commit();
}

void remove_state(const std::string& state_dir) {
  std::error_code ec;
  std::filesystem::remove_all(state_dir, ec);
  if (ec) fail("cannot remove the finished job's state ", state_dir, ": ", ec.message());
  fsync_dir(parent_dir(state_dir));
}

}  // namespace moe::batch
