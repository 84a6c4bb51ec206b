// journal.h: what makes a batch job exactly-once across kill -9, power cuts and full disks.
//
// A job's answers are appended to a journal file, one record per finished request:
//     <crc32 as 8 hex> <index> <o|e> <output line>\n
// (o: the output file, e: the errors file; the CRC covers everything after the first space). A record
// is written with one write(2) and the file is fdatasync'ed in groups. On restart the longest prefix of
// whole records whose CRC matches is kept and the rest (a torn or zero-filled tail) is cut off, so a
// crash at any byte loses at most the unsynced answers, which are simply computed again; records are
// keyed by input index and the first one wins, so nothing can appear twice. The output files are only
// written when every request has a record: to a temporary name, fsync'ed, renamed over the final name,
// and the directory fsync'ed; only then is the journal removed. A re-run after a crash at any point of
// that sequence rewrites the same bytes.
//
// A write that fails for lack of space (ENOSPC, EDQUOT, EFBIG) cuts the journal back to its last whole
// record and throws DiskFull, so the job stops with a clear message and resumes when space is freed.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace moe::batch {

struct DiskFull : Error {
  explicit DiskFull(const std::string& what) : Error(what) {}
};

struct Record {
  int64_t index = 0;
  bool to_errors = false;
  std::string line;  // one complete output line, no newline
};

std::string encode_record(const Record& r);  // with the trailing newline
// Parses one record line (no newline); nullopt when torn or corrupt.
std::optional<Record> decode_record(std::string_view line);

// Reads the good prefix of a journal; calls fn for each record; returns the prefix's byte length.
uint64_t read_journal(const std::string& path, const std::function<void(Record&&)>& fn);

class JournalWriter {
 public:
  // Opens (creating) `path` for appending after its good prefix: a torn tail is cut off and synced.
  // The records of that prefix are passed to `existing`.
  JournalWriter(const std::string& path, const std::function<void(Record&&)>& existing);
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  // Appends one record (not yet durable). Throws DiskFull or moe::Error, leaving the file whole.
  void append(const Record& r);
  // fdatasync: everything appended so far survives a power cut.
  void sync();
  // True when `max_pending` records or `max_age_s` seconds have gone unsynced.
  bool sync_due(int64_t max_pending = 256, double max_age_s = 1.0) const;

  int64_t syncs() const { return syncs_; }
  double sync_seconds() const { return sync_seconds_; }
  uint64_t bytes() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  int64_t pending_ = 0;
  double last_sync_ = 0;  // steady seconds
  int64_t syncs_ = 0;
  double sync_seconds_ = 0;
};

// A file written under a temporary name in the same directory and renamed into place by commit()
// (after fsync of the file, then of the directory). Destroyed uncommitted: the temporary is removed.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(std::string_view bytes);  // buffered; throws DiskFull or moe::Error
  void commit();

 private:
  void flush();
  std::string path_, tmp_;
  int fd_ = -1;
  std::string buf_;
  bool committed_ = false;
};

void write_file_atomic(const std::string& path, std::string_view content);
void fsync_dir(const std::string& dir);
void make_dirs(const std::string& dir);  // mkdir -p, fsyncing each parent it creates
// Throws DiskFull for ENOSPC/EDQUOT/EFBIG, moe::Error otherwise, naming `what`.
[[noreturn]] void throw_io(const std::string& what, int err);

// The identity of a job's input, kept in the state directory's manifest.json so that a re-run with a
// different input (or split) refuses the stale state instead of mixing answers.
struct Manifest {
  uint64_t input_hash = 0;
  int64_t n_lines = 0;
};
// Writes the manifest if the directory has none; throws moe::Error naming both if it differs.
void check_manifest(const std::string& state_dir, const Manifest& m);

// All records in the journals (journal*.log) of `state_dir` for indices in [begin, end), by index
// (first record wins); `own` (a file name in state_dir) is opened for appending and returned.
struct LoadedState {
  std::vector<std::optional<Record>> records;  // [end - begin]
  std::unique_ptr<JournalWriter> writer;
  int64_t done = 0;
};
LoadedState load_state(const std::string& state_dir, const std::string& own, int64_t begin, int64_t end);

// Writes `records` (all present, in index order) to the output and errors files atomically.
void write_outputs(const std::string& output, const std::string& errors,
                   const std::vector<std::optional<Record>>& records);
void remove_state(const std::string& state_dir);

}  // namespace moe::batch
