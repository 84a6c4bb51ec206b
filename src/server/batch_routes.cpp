// batch_routes.cpp: see batch_routes.h.
#include "server/batch_routes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "batch/format.h"
#include "batch/journal.h"
#include "server/batch_exec.h"
#include "server/request.h"
#include "server/response.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

ApiError not_found(const std::string& what, const std::string& id) {
  return ApiError(404, cat("No such ", what, " object: ", id), "id", "invalid_request_error", "not_found");
}

ApiError storage_error(const batch::DiskFull& e) {
  return ApiError(507, e.what(), "", "server_error", "insufficient_storage");
}

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; });
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::vector<std::string>& active_statuses() {
  static const std::vector<std::string> s = {"validating", "in_progress", "finalizing", "cancelling"};
  return s;
}

}  // namespace

struct BatchRoutes::Impl {
  Backend& backend;
  BatchApiOptions opts;
  Guarded guarded;
  std::string files_dir, batches_dir;

  std::mutex save_mu;  // one writer of a batch's file at a time (save_batch)
  std::mutex mu;       // guards everything below
  std::map<std::string, ojson> files;    // id -> file object
  std::map<std::string, ojson> batches;  // id -> batch object
  std::deque<std::string> queue;         // batch ids to run, oldest first
  std::condition_variable cv;
  bool stopping = false;
  std::string running_id;
  BatchRunner* runner = nullptr;
  std::thread worker;

  Impl(Backend& b, BatchApiOptions o, Guarded g) : backend(b), opts(std::move(o)), guarded(std::move(g)) {
    files_dir = opts.data_dir + "/files";
    batches_dir = opts.data_dir + "/batches";
    batch::make_dirs(files_dir);
    batch::make_dirs(batches_dir);
    load();
  }

  // ---- storage -----------------------------------------------------------------------------------

  std::string file_path(const std::string& id) const { return files_dir + "/" + id + ".jsonl"; }
  std::string batch_path(const std::string& id) const { return batches_dir + "/" + id + ".json"; }
  std::string state_dir(const std::string& id) const { return batches_dir + "/" + id + ".state"; }

  static std::vector<std::string> list_dir(const std::string& dir, const std::string& suffix) {
    std::vector<std::string> names;
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > suffix.size() && n.ends_with(suffix)) names.push_back(n.substr(0, n.size() - suffix.size()));
      }
      ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  void load() {
    for (const auto& id : list_dir(files_dir, ".json")) {
      ojson f = ojson::parse(read_text(files_dir + "/" + id + ".json"), nullptr, false);
      if (f.is_discarded() || !f.is_object()) fail("the file object ", files_dir, "/", id, ".json is corrupt");
      files[id] = std::move(f);
    }
    std::vector<std::pair<int64_t, std::string>> resume;
    for (const auto& id : list_dir(batches_dir, ".json")) {
      ojson b = ojson::parse(read_text(batch_path(id)), nullptr, false);
      if (b.is_discarded() || !b.is_object()) fail("the batch object ", batch_path(id), " is corrupt");
      const std::string status = b.value("status", "");
      if (std::find(active_statuses().begin(), active_statuses().end(), status) != active_statuses().end())
        resume.emplace_back(b.value("created_at", int64_t(0)), id);
      batches[id] = std::move(b);
    }
    std::sort(resume.begin(), resume.end());
    for (auto& [t, id] : resume) queue.push_back(id);
    if (!resume.empty()) log_info("batch: resuming ", resume.size(), " unfinished batch(es) from ", opts.data_dir);
  }

  void write_batch(const ojson& b) {
    batch::write_file_atomic(batch_path(b["id"].get<std::string>()), b.dump() + "\n");
  }

  // Writes batch `id` as it is in memory now. The HTTP threads (cancel) and the worker (progress,
  // finish) change a batch concurrently: one writer at a time, each copying the newest state once it
  // holds save_mu, so the file always ends at the last change (never an older copy written last).
  void save_batch(const std::string& id) {
    std::lock_guard save_lock(save_mu);
    ojson copy;
    {
      std::lock_guard lock(mu);
      copy = batches[id];
    }
    write_batch(copy);
  }

  // ---- files -------------------------------------------------------------------------------------

  ojson file_object(const std::string& id, int64_t bytes, const std::string& filename, const std::string& purpose) {
    ojson f;
    f["id"] = id;
    f["object"] = "file";
    f["bytes"] = bytes;
    f["created_at"] = unix_now();
    f["filename"] = filename;
    f["purpose"] = purpose;
    f["status"] = "processed";
    f["expires_at"] = nullptr;
    f["status_details"] = nullptr;
    return f;
  }

  void upload(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    if (!req.is_multipart_form_data())
      throw ApiError(400, "upload the file as multipart/form-data with the fields 'purpose' and 'file'");
    const std::string id = "file-" + random_hex(24);
    const std::string tmp = files_dir + "/" + id + ".upload";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) batch::throw_io(cat("cannot create ", tmp), errno);
    struct Cleanup {
      int& fd;
      const std::string& tmp;
      bool keep = false;
      ~Cleanup() {
        if (fd >= 0) ::close(fd);
        if (!keep) ::unlink(tmp.c_str());
      }
    } cleanup{fd, tmp};
    std::string field, purpose, filename;
    bool has_file = false, too_big = false;
    int write_err = 0;
    uint64_t bytes = 0;
    bool ok = reader(
        [&](const httplib::MultipartFormData& part) {
          field = part.name;
          if (field == "file") {
            has_file = true;
            filename = part.filename.empty() ? "upload.jsonl" : part.filename;
          }
          return true;
        },
        [&](const char* data, size_t len) {
          if (field == "purpose") {
            if (purpose.size() + len > 64) return false;
            purpose.append(data, len);
          } else if (field == "file") {
            if (bytes + len > opts.max_upload_bytes) {
              too_big = true;
              return false;
            }
            size_t done = 0;
            while (done < len) {
              ssize_t n = ::write(fd, data + done, len - done);
              if (n < 0 && errno == EINTR) continue;
              if (n <= 0) {
                write_err = n < 0 ? errno : ENOSPC;
                return false;
              }
              done += size_t(n);
            }
            bytes += len;
          }
          return true;
        });
    if (too_big) {
      res.set_header("Connection", "close");
      throw ApiError(413, cat("the file is larger than the upload limit of ", opts.max_upload_bytes, " bytes"), "file",
                     "invalid_request_error", "file_too_large");
    }
    if (write_err) {
      res.set_header("Connection", "close");
      try {
        batch::throw_io(cat("cannot store the upload"), write_err);
      } catch (const batch::DiskFull& e) {
        throw storage_error(e);
      }
    }
    if (!ok) throw ApiError(400, "the upload could not be read (a malformed multipart body?)");
    if (!has_file) throw invalid_param("file", "the multipart body has no 'file' field", "missing_required_parameter");
    if (purpose != "batch")
      throw invalid_param("purpose", cat("'purpose' must be \"batch\" (this server stores batch inputs only), got '", purpose, "'"));
    if (::fsync(fd) != 0) batch::throw_io(cat("cannot sync ", tmp), errno);
    ::close(fd);
    fd = -1;
    if (::rename(tmp.c_str(), file_path(id).c_str()) != 0) batch::throw_io(cat("cannot store ", id), errno);
    cleanup.keep = true;
    ojson f = file_object(id, int64_t(bytes), filename, "batch");
    batch::write_file_atomic(files_dir + "/" + id + ".json", f.dump() + "\n");
    {
      std::lock_guard lock(mu);
      files[id] = f;
    }
    respond(res, f);
  }

  static void respond(httplib::Response& res, const ojson& j, int status = 200) {
    res.status = status;
    res.set_content(j.dump(-1, ' ', false, ojson::error_handler_t::replace), "application/json");
  }

  ojson get_file_object(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = files.find(id);
    if (!valid_id(id) || it == files.end()) throw not_found("File", id);
    return it->second;
  }

  void file_content(const std::string& id, httplib::Response& res) {
    get_file_object(id);
    auto in = std::make_shared<std::ifstream>(file_path(id), std::ios::binary);
    if (!*in) throw not_found("File", id);
    in->seekg(0, std::ios::end);
    const size_t size = size_t(in->tellg());
    res.set_content_provider(size, "application/jsonl", [in](size_t offset, size_t length, httplib::DataSink& sink) {
      std::string buf(std::min<size_t>(length, 1 << 16), '\0');
      in->clear();
      in->seekg(std::streamoff(offset));
      in->read(buf.data(), std::streamsize(buf.size()));
      auto got = size_t(in->gcount());
      if (got == 0) return false;
      return sink.write(buf.data(), got);
    });
  }

  void list_files(httplib::Response& res) {
    ojson data = ojson::array();
    {
      std::lock_guard lock(mu);
      for (auto& [id, f] : files) data.push_back(f);
    }
    std::sort(data.begin(), data.end(), [](const ojson& a, const ojson& b) { return a["created_at"] > b["created_at"]; });
    respond(res, ojson{{"object", "list"}, {"data", data}, {"has_more", false}});
  }

  // ---- batches -----------------------------------------------------------------------------------

  void create_batch(const std::string& text, httplib::Response& res) {
    json body = parse_body(text);
    auto str = [&](const char* key) -> std::string {
      auto it = body.find(key);
      if (it == body.end() || !it->is_string())
        throw invalid_param(key, cat("'", key, "' is required and must be a string"), "missing_required_parameter");
      return it->get<std::string>();
    };
    const std::string input = str("input_file_id");
    const std::string endpoint = str("endpoint");
    const std::string window = str("completion_window");
    if (!batch::endpoint_from_url(endpoint))
      throw invalid_param("endpoint", "'endpoint' must be /v1/chat/completions, /v1/completions or /v1/embeddings");
    if (window != "24h") throw invalid_param("completion_window", "'completion_window' must be \"24h\"");
    ojson metadata = nullptr;
    if (auto it = body.find("metadata"); it != body.end() && !it->is_null()) {
      if (!it->is_object() || it->size() > 16) throw invalid_param("metadata", "'metadata' must be an object of at most 16 pairs");
      for (auto& [k, v] : it->items())
        if (!v.is_string() || k.size() > 64 || v.get<std::string>().size() > 512)
          throw invalid_param("metadata", "'metadata' values must be strings (keys up to 64, values up to 512 characters)");
      metadata = ojson::parse(it->dump());
    }
    {
      std::lock_guard lock(mu);
      auto f = files.find(input);
      if (!valid_id(input) || f == files.end()) throw ApiError(404, cat("No such File object: ", input), "input_file_id", "invalid_request_error", "not_found");
      if (f->second.value("purpose", "") != "batch")
        throw invalid_param("input_file_id", cat("the file ", input, " was not uploaded with purpose \"batch\""));
    }
    const int64_t now = unix_now();
    ojson b;
    b["id"] = "batch_" + random_hex(24);
    b["object"] = "batch";
    b["endpoint"] = endpoint;
    b["errors"] = nullptr;
    b["input_file_id"] = input;
    b["completion_window"] = window;
    b["status"] = "validating";
    b["output_file_id"] = nullptr;
    b["error_file_id"] = nullptr;
    b["created_at"] = now;
    b["in_progress_at"] = nullptr;
    b["expires_at"] = now + 24 * 3600;
    b["finalizing_at"] = nullptr;
    b["completed_at"] = nullptr;
    b["failed_at"] = nullptr;
    b["expired_at"] = nullptr;
    b["cancelling_at"] = nullptr;
    b["cancelled_at"] = nullptr;
    b["request_counts"] = {{"total", 0}, {"completed", 0}, {"failed", 0}};
    b["metadata"] = metadata;
    try {
      write_batch(b);
    } catch (const batch::DiskFull& e) {
      throw storage_error(e);
    }
    {
      std::lock_guard lock(mu);
      batches[b["id"].get<std::string>()] = b;
      queue.push_back(b["id"].get<std::string>());
    }
    cv.notify_all();
    respond(res, b);
  }

  ojson get_batch_object(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = batches.find(id);
    if (!valid_id(id) || it == batches.end()) throw not_found("Batch", id);
    return it->second;
  }

  void list_batches(const httplib::Request& req, httplib::Response& res) {
    int64_t limit = 20;
    if (req.has_param("limit")) {
      const std::string v = req.get_param_value("limit");
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 1 || n > 100) throw invalid_param("limit", "'limit' must be an integer in [1, 100]");
      limit = n;
    }
    const std::string after = req.has_param("after") ? req.get_param_value("after") : "";
    std::vector<ojson> all;
    {
      std::lock_guard lock(mu);
      for (auto& [id, b] : batches) all.push_back(b);
    }
    // Newest first; ties by id so that the order (and the `after` cursor) is stable.
    std::sort(all.begin(), all.end(), [](const ojson& a, const ojson& b) {
      if (a["created_at"] != b["created_at"]) return a["created_at"] > b["created_at"];
      return a["id"] > b["id"];
    });
    size_t start = 0;
    if (!after.empty()) {
      auto it = std::find_if(all.begin(), all.end(), [&](const ojson& b) { return b["id"] == after; });
      if (it == all.end()) throw invalid_param("after", cat("no batch ", after));
      start = size_t(it - all.begin()) + 1;
    }
    ojson data = ojson::array();
    for (size_t i = start; i < all.size() && int64_t(data.size()) < limit; ++i) data.push_back(all[i]);
    ojson out{{"object", "list"}, {"data", data}};
    out["first_id"] = data.empty() ? ojson(nullptr) : data.front()["id"];
    out["last_id"] = data.empty() ? ojson(nullptr) : data.back()["id"];
    out["has_more"] = start + data.size() < all.size();
    respond(res, out);
  }

  void cancel_batch(const std::string& id, httplib::Response& res) {
    ojson b;
    {
      std::lock_guard lock(mu);
      auto it = batches.find(id);
      if (!valid_id(id) || it == batches.end()) throw not_found("Batch", id);
      const std::string status = it->second["status"];
      if (status == "validating" || status == "in_progress") {
        it->second["status"] = "cancelling";
        it->second["cancelling_at"] = unix_now();
        if (running_id == id && runner) runner->stop();
      } else if (status != "cancelling") {
        throw ApiError(409, cat("the batch ", id, " is ", status, " and can no longer be cancelled"), "", "invalid_request_error",
                       "batch_not_cancellable");
      }
      b = it->second;
    }
    try {
      save_batch(id);
    } catch (const batch::DiskFull& e) {
      throw storage_error(e);
    }
    cv.notify_all();
    respond(res, b);
  }

  // ---- the job thread ----------------------------------------------------------------------------

  // Applies `change` to the batch object under the lock and persists it.
  void update(const std::string& id, const std::function<void(ojson&)>& change) {
    {
      std::lock_guard lock(mu);
      change(batches[id]);
    }
    save_batch(id);
  }

  std::string status_of(const std::string& id) {
    std::lock_guard lock(mu);
    return batches[id]["status"];
  }

  // Writes the output (and errors) file of a finished or cancelled batch from its journal records.
  void finalize(const std::string& id, const batch::LoadedState& state, bool cancelled) {
    update(id, [&](ojson& b) {
      if (!cancelled) {
        b["status"] = "finalizing";
        if (b["finalizing_at"].is_null()) b["finalizing_at"] = unix_now();
      }
    });
    // Ids fixed by the batch id: finishing again after a crash rewrites the same two files.
    const std::string out_id = "file-" + batch::derived_hex(id, 0, 0, "output").substr(0, 24);
    const std::string err_id = "file-" + batch::derived_hex(id, 0, 0, "errors").substr(0, 24);
    int64_t n_out = 0, n_err = 0, out_bytes = 0, err_bytes = 0;
    {
      // Streamed to disk in input order (a job's answers need not fit in memory twice).
      batch::AtomicFile out(file_path(out_id)), err(file_path(err_id));
      for (const auto& r : state.records) {
        if (!r) continue;
        (r->to_errors ? err : out).write(r->line);
        (r->to_errors ? err : out).write("\n");
        ++(r->to_errors ? n_err : n_out);
        (r->to_errors ? err_bytes : out_bytes) += int64_t(r->line.size() + 1);
      }
      out.commit();
      if (n_err > 0) err.commit();
    }
    ojson of = file_object(out_id, out_bytes, cat(id, "_output.jsonl"), "batch_output");
    batch::write_file_atomic(files_dir + "/" + out_id + ".json", of.dump() + "\n");
    ojson ef;
    if (n_err > 0) {
      ef = file_object(err_id, err_bytes, cat(id, "_error.jsonl"), "batch_output");
      batch::write_file_atomic(files_dir + "/" + err_id + ".json", ef.dump() + "\n");
    }
    {
      std::lock_guard lock(mu);
      files[out_id] = of;
      if (n_err > 0) files[err_id] = ef;
    }
    update(id, [&](ojson& b) {
      b["output_file_id"] = out_id;
      b["error_file_id"] = n_err > 0 ? ojson(err_id) : ojson(nullptr);
      b["request_counts"]["completed"] = n_out;
      b["request_counts"]["failed"] = n_err;
      b["status"] = cancelled ? "cancelled" : "completed";
      b[cancelled ? "cancelled_at" : "completed_at"] = unix_now();
    });
    std::error_code ec;
    std::filesystem::remove_all(state_dir(id), ec);
  }

  void fail_batch(const std::string& id, const std::string& code, const std::string& message) {
    update(id, [&](ojson& b) {
      b["status"] = "failed";
      b["failed_at"] = unix_now();
      b["errors"] = {{"object", "list"},
                     {"data", ojson::array({{{"code", code}, {"message", message}, {"param", nullptr}, {"line", nullptr}}})}};
    });
  }

  void run_one(const std::string& id) {
    std::string endpoint, input_id;
    {
      std::lock_guard lock(mu);
      endpoint = batches[id]["endpoint"];
      input_id = batches[id]["input_file_id"];
    }
    batch::Input input;
    try {
      input = batch::scan_input(file_path(input_id));
    } catch (const Error& e) {
      fail_batch(id, "invalid_file", e.what());
      return;
    }
    // Every line must be for the batch's endpoint (OpenAI's rule); others are answered as errors.
    for (auto& l : input.lines)
      if (l.valid && batch::endpoint_url(l.endpoint) != endpoint) {
        l.valid = false;
        l.error_code = "mismatched_url";
        l.error_message = cat("line ", l.line_no, ": the url is not the batch's endpoint ", endpoint);
      }
    const int64_t n = int64_t(input.lines.size());
    batch::make_dirs(state_dir(id));
    batch::check_manifest(state_dir(id), {input.hash, n});
    batch::LoadedState state = batch::load_state(state_dir(id), "journal.log", 0, n);
    int64_t failed = 0;
    for (const auto& r : state.records) failed += r && r->to_errors;
    const int64_t done_before = state.done;
    if (status_of(id) == "cancelling") {
      finalize(id, state, true);
      return;
    }
    update(id, [&](ojson& b) {
      b["status"] = "in_progress";
      if (b["in_progress_at"].is_null()) b["in_progress_at"] = unix_now();
      b["request_counts"] = {{"total", n}, {"completed", done_before - failed}, {"failed", failed}};
    });
    std::vector<int64_t> todo;
    for (int64_t i = 0; i < n; ++i)
      if (!state.records[size_t(i)]) todo.push_back(i);

    BatchExecOptions eo;
    eo.served_model_name = opts.served_model_name;
    eo.model_aliases = opts.model_aliases;
    eo.id_salt = id;
    BatchRunner r(backend, eo);
    {
      std::lock_guard lock(mu);
      if (stopping) return;
      runner = &r;
      running_id = id;
      if (batches[id]["status"] == "cancelling") r.stop();
    }
    std::exception_ptr failure;
    try {
      r.run(input, todo, *state.writer, std::max(1, opts.in_flight), [&](const BatchProgress& p) {
        std::lock_guard lock(mu);
        auto& counts = batches[id]["request_counts"];
        counts["completed"] = done_before - failed + (p.done - p.failed);
        counts["failed"] = failed + p.failed;
      });
    } catch (...) {
      failure = std::current_exception();
    }
    bool shutting_down;
    {
      std::lock_guard lock(mu);
      runner = nullptr;
      running_id.clear();
      shutting_down = stopping;
    }
    if (failure) std::rethrow_exception(failure);
    if (shutting_down) return;  // resumed after the restart
    const bool cancelled = status_of(id) == "cancelling";
    state.writer.reset();
    batch::LoadedState full = batch::load_state(state_dir(id), "journal.log", 0, n);
    full.writer.reset();
    finalize(id, full, cancelled);
  }

  void work() {
    for (;;) {
      std::string id;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        id = queue.front();
        queue.pop_front();
      }
      try {
        run_one(id);
      } catch (const batch::DiskFull& e) {
        // Not the job's fault: leave it in progress and try again once space may have been freed.
        log_error("batch ", id, ": ", e.what());
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::seconds(5), [&] { return stopping; });
        if (!stopping) queue.push_back(id);
      } catch (const std::exception& e) {
        log_error("batch ", id, ": ", e.what());
        try {
          fail_batch(id, "server_error", e.what());
        } catch (const std::exception& e2) {
          log_error("batch ", id, ": cannot record the failure: ", e2.what());
        }
      }
    }
  }
};

BatchRoutes::BatchRoutes(Backend& backend, BatchApiOptions options, Guarded guarded)
    : impl_(std::make_unique<Impl>(backend, std::move(options), std::move(guarded))) {}

BatchRoutes::~BatchRoutes() { stop(); }

void BatchRoutes::install(httplib::Server& http) {
  Impl* s = impl_.get();
  http.Post("/v1/files", [s](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    s->guarded(req, res, [&] {
      try {
        s->upload(req, res, reader);
      } catch (const batch::DiskFull& e) {
        throw storage_error(e);
      }
    });
  });
  http.Get("/v1/files", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->list_files(res); });
  });
  http.Get(R"(/v1/files/([A-Za-z0-9_-]{1,64}))", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->respond(res, s->get_file_object(req.matches[1])); });
  });
  http.Get(R"(/v1/files/([A-Za-z0-9_-]{1,64})/content)", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->file_content(req.matches[1], res); });
  });
  http.Post("/v1/batches", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->create_batch(req.body, res); });
  });
  http.Get("/v1/batches", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->list_batches(req, res); });
  });
  http.Get(R"(/v1/batches/([A-Za-z0-9_-]{1,64}))", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->respond(res, s->get_batch_object(req.matches[1])); });
  });
  http.Post(R"(/v1/batches/([A-Za-z0-9_-]{1,64})/cancel)", [s](const httplib::Request& req, httplib::Response& res) {
    s->guarded(req, res, [&] { s->cancel_batch(req.matches[1], res); });
  });
}

void BatchRoutes::start() {
  if (!impl_->worker.joinable()) impl_->worker = std::thread([s = impl_.get()] { s->work(); });
}

void BatchRoutes::stop() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.mu);
    s.stopping = true;
    if (s.runner) s.runner->stop();
  }
  s.cv.notify_all();
  if (s.worker.joinable()) s.worker.join();
}

}  // namespace moe::server
