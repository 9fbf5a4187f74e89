// The tokenize pipeline: reader -> encoders -> in-order writer, with shards as commit points.
#include "worker/data/corpus_tokenizer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "worker/data/documents.h"
#include "worker/data/token_file.h"
#include "worker/data/token_index.h"
#include "worker/data/tokenizer.h"

namespace fs = std::filesystem;

namespace relora::data {
namespace {

using Clock = std::chrono::steady_clock;

// A chunk is the unit of work: big enough that queue traffic is negligible next to encoding,
// small enough that a few per thread stay in memory and that the last chunks, which leave the
// other threads idle, are short (~25 ms of encoding).
constexpr size_t kChunkTextBytes = 1 << 18;
constexpr size_t kChunkDocuments = 4096;
// Bumped when the shard contents a run produces, or the meaning of the positions its index
// records, would change: part of every run key. v2: positions count records (a JSON line whose
// text is empty included), since the reader no longer decodes them.
constexpr const char* kRecipe = "tokenize-v2";

// Records as the reader found them; the encoder decodes and encodes them (JSON parsing is a
// large share of the work per byte: in the reader it would cap the pipeline at one core's rate).
struct Chunk {
  struct Record {
    size_t end = 0;        // in `bytes`
    uint64_t input = 0;    // which input it came from
    uint64_t ordinal = 0;  // its index among that input's records
    uint64_t line = 0;     // for a JSON record's errors
    bool json = false;
  };
  uint64_t id = 0;
  // Read side: the records' bytes back to back (one allocation per chunk, not one per record).
  std::string bytes;
  std::vector<Record> records;
  // Encode side, per document kept (a record with an empty text is dropped):
  std::vector<size_t> kept;      // its record
  std::vector<uint32_t> tokens;  // all documents' ids, each followed by EOS
  std::vector<size_t> ends;      // end offset in `tokens`
  uint64_t text_bytes = 0;
};

// Where the next shard's first document is: input file, and records of it already written.
struct Position {
  uint64_t input = 0;
  uint64_t document = 0;
};

std::string shard_name(size_t k) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%05zu.tok", k);
  return name;
}

// Temporary files of a killed run (shard-00003.tok.tmp.<pid>, index.json.tmp.<pid>).
void remove_leftovers(const std::string& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(entry.path());
  }
}

// Keeps the longest prefix of the index's shards whose files are intact; returns where to go on.
Position keep_verified_shards(const std::string& dir, TokenIndex& index) {
  size_t kept = 0;
  for (; kept < index.shards.size(); ++kept) {
    const ShardEntry& e = index.shards[kept];
    try {
      const TokenFile file((fs::path(dir) / e.file).string(), /*verify_checksum=*/true);
      if (file.size() != e.tokens || file.documents() != e.documents || file.stored_crc32() != e.crc32) break;
    } catch (const std::exception&) {
      break;  // redone below
    }
  }
  if (kept < index.shards.size()) index.complete = false;
  index.shards.resize(kept);
  if (kept == 0) return {};
  return {index.shards.back().next_input, index.shards.back().next_document};
}

// The three stages' shared state. State below is protected by mutex_.
class Pipeline {
 public:
  Pipeline(const Tokenizer& tokenizer, const std::vector<std::string>& files, int threads)
      : tokenizer_(tokenizer), files_(files), max_in_flight_(static_cast<uint64_t>(4 * threads + 4)) {}

  // Reader thread: records from the files starting at `from`, into chunks.
  void read(Position from) {
    guard([&] {
      auto chunk = std::make_unique<Chunk>();
      for (uint64_t i = from.input; i < files_.size(); ++i) {
        uint64_t ordinal = 0;
        read_records(files_[i], [&](const DocumentRecord& record) {
          const uint64_t at = ordinal++;
          if (i == from.input && at < from.document) return;  // already in a kept shard
          chunk->bytes.append(record.bytes);
          chunk->records.push_back({chunk->bytes.size(), i, at, record.line, record.json});
          if (chunk->bytes.size() >= kChunkTextBytes || chunk->records.size() >= kChunkDocuments) {
            push(std::move(chunk));
            chunk = std::make_unique<Chunk>();
          }
        }, &file_bytes_read);
        files_bytes_done += fs::file_size(files_[i]);
        file_bytes_read = 0;
      }
      if (!chunk->records.empty()) push(std::move(chunk));
      std::lock_guard<std::mutex> lock(mutex_);
      reading_done_ = true;
      cv_.notify_all();
    });
  }

  // Encoder threads.
  void encode() {
    guard([&] {
      const auto eos = static_cast<uint32_t>(tokenizer_.eos_id());
      while (true) {
        std::unique_ptr<Chunk> chunk;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          cv_.wait(lock, [&] { return failed_ || !todo_.empty() || reading_done_; });
          if (failed_ || todo_.empty()) return;
          chunk = std::move(todo_.front());
          todo_.pop_front();
        }
        encode_chunk(*chunk, eos);
        std::lock_guard<std::mutex> lock(mutex_);
        done_[chunk->id] = std::move(chunk);
        cv_.notify_all();
      }
    });
  }

  // Writer (calling thread): the next chunk in order, or null when all are written. Waits at
  // most `timeout`, returning null with *timed_out set, so the caller can report progress.
  std::unique_ptr<Chunk> next(std::chrono::milliseconds timeout, bool* timed_out) {
    std::unique_lock<std::mutex> lock(mutex_);
    *timed_out = !cv_.wait_for(lock, timeout, [&] {
      return failed_ || done_.count(consumed_) > 0 || (reading_done_ && consumed_ == produced_);
    });
    if (failed_) std::rethrow_exception(error_);
    if (*timed_out || done_.count(consumed_) == 0) return nullptr;
    auto chunk = std::move(done_[consumed_]);
    done_.erase(consumed_++);
    cv_.notify_all();
    return chunk;
  }

  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_) error_ = e;
    failed_ = true;
    cv_.notify_all();
  }

  std::atomic<uint64_t> file_bytes_read{0};   // of the file being read
  std::atomic<uint64_t> files_bytes_done{0};  // of the files read to the end

 private:
  void encode_chunk(Chunk& chunk, uint32_t eos) const {
    std::string decoded;
    std::string text;
    size_t begin = 0;
    for (size_t r = 0; r < chunk.records.size(); ++r) {
      const Chunk::Record& at = chunk.records[r];
      const DocumentRecord record{std::string_view(chunk.bytes).substr(begin, at.end - begin), at.json, at.line};
      begin = at.end;
      const std::string_view view = record_text(record, files_[at.input], decoded);
      if (view.empty()) continue;
      if (!record.json) text.assign(view);  // a JSON record's text is `decoded` already
      for (int id : tokenizer_.encode(record.json ? decoded : text)) chunk.tokens.push_back(static_cast<uint32_t>(id));
      chunk.tokens.push_back(eos);
      chunk.ends.push_back(chunk.tokens.size());
      chunk.kept.push_back(r);
      chunk.text_bytes += view.size();
    }
    chunk.bytes = {};  // the text is no longer needed while the chunk waits for its turn
  }

  template <typename F>
  void guard(F&& body) {
    try {
      body();
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void push(std::unique_ptr<Chunk> chunk) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return failed_ || produced_ - consumed_ < max_in_flight_; });
    if (failed_) throw std::runtime_error("stopped");  // the first error is already recorded
    chunk->id = produced_++;
    todo_.push_back(std::move(chunk));
    cv_.notify_all();
  }

  const Tokenizer& tokenizer_;
  const std::vector<std::string>& files_;
  const uint64_t max_in_flight_;  // chunks read but not yet written: bounds memory

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Chunk>> todo_;
  std::map<uint64_t, std::unique_ptr<Chunk>> done_;
  uint64_t produced_ = 0;  // chunks handed out by the reader
  uint64_t consumed_ = 0;  // chunks written
  bool reading_done_ = false;
  bool failed_ = false;
  std::exception_ptr error_;
};

// Appends documents to the current shard and commits it at the first document end past the
// target: token file first, then the index that names it.
class ShardWriter {
 public:
  ShardWriter(std::string dir, TokenIndex& index) : dir_(std::move(dir)), index_(index) {}

  void add(const uint32_t* tokens, size_t n, Position after) {
    if (!writer_) writer_ = std::make_unique<TokenWriter>((fs::path(dir_) / shard_name(index_.shards.size())).string());
    writer_->append(tokens, n);
    ++documents_;
    if (writer_->count() >= index_.shard_tokens) commit(after);
  }

  void finish(Position end) {
    if (writer_) commit(end);
    index_.complete = true;
    write_token_index((fs::path(dir_) / kTokenIndexName).string(), index_);
  }

 private:
  void commit(Position after) {
    writer_->commit(index_.vocab_size, documents_);
    index_.shards.push_back(ShardEntry{shard_name(index_.shards.size()), documents_, writer_->count(),
                                       writer_->crc32(), after.input, after.document});
    write_token_index((fs::path(dir_) / kTokenIndexName).string(), index_);
    writer_.reset();
    documents_ = 0;
  }

  std::string dir_;
  TokenIndex& index_;
  std::unique_ptr<TokenWriter> writer_;
  uint64_t documents_ = 0;
};

}  // namespace

TokenizeResult tokenize_corpus(const TokenizeOptions& options,
                               const std::function<void(const TokenizeProgress&)>& on_progress) {
  const auto start = Clock::now();
  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer_model);
  if (tokenizer.eos_id() < 0) throw std::runtime_error("tokenizer " + options.tokenizer_model + " has no EOS piece");
  if (options.shard_tokens == 0) throw std::runtime_error("shard size must be at least one token");
  const std::vector<std::string> files = expand_input_paths(options.inputs);
  if (files.empty()) throw std::runtime_error("no input files to tokenize");
  for (const auto& f : files) {
    if (fs::path(f).extension() == ".tok") throw std::runtime_error(f + " is a token file already: give the text it was made from");
  }
  fs::create_directories(options.out_dir);
  remove_leftovers(options.out_dir);

  TokenIndex index;
  index.vocab_size = static_cast<uint32_t>(tokenizer.vocab_size());
  index.eos_id = tokenizer.eos_id();
  index.tokenizer_model = fs::absolute(options.tokenizer_model).lexically_normal().string();
  index.tokenizer_fingerprint = tokenizer.fingerprint();
  index.shard_tokens = options.shard_tokens;
  index.run_key = inputs_digest(files, std::string(kRecipe) + "|" + tokenizer.fingerprint() + "|" +
                                           std::to_string(options.shard_tokens));
  for (const auto& f : files) index.inputs.push_back(fs::absolute(f).lexically_normal().string());

  const std::string index_file = (fs::path(options.out_dir) / kTokenIndexName).string();
  Position from;
  if (fs::exists(index_file)) {
    TokenIndex previous = read_token_index(index_file);
    if (previous.run_key != index.run_key) {
      throw std::runtime_error(options.out_dir + " holds the index of another tokenize run (other inputs, tokenizer "
                               "or shard size, or a relora version that recorded positions differently): use an "
                               "empty output directory");
    }
    from = keep_verified_shards(options.out_dir, previous);
    index.shards = previous.shards;
    index.complete = previous.complete;
  }
  TokenizeResult result;
  result.index_file = index_file;
  result.shards_reused = index.shards.size();
  uint64_t input_bytes_total = 0;
  for (const auto& f : files) input_bytes_total += fs::file_size(f);

  TokenizeProgress progress;
  progress.input_bytes_total = input_bytes_total;
  progress.documents = index.documents();
  progress.tokens = index.tokens();
  progress.shards = index.shards.size();
  if (!index.complete) {
    const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    Pipeline pipeline(tokenizer, files, threads);
    for (uint64_t i = 0; i < from.input && i < files.size(); ++i) pipeline.files_bytes_done += fs::file_size(files[i]);
    std::vector<std::thread> workers;
    workers.emplace_back([&] { pipeline.read(from); });
    for (int t = 0; t < threads; ++t) workers.emplace_back([&] { pipeline.encode(); });
    ShardWriter shards(options.out_dir, index);
    auto last_report = Clock::now();
    auto report = [&](bool force) {
      const auto now = Clock::now();
      if (!force && now - last_report < std::chrono::milliseconds(500)) return;
      last_report = now;
      progress.seconds = std::chrono::duration<double>(now - start).count();
      progress.input_bytes_done = pipeline.files_bytes_done + pipeline.file_bytes_read;
      progress.shards = index.shards.size();
      on_progress(progress);
    };
    try {
      while (true) {
        bool timed_out = false;
        auto chunk = pipeline.next(std::chrono::milliseconds(500), &timed_out);
        report(false);
        if (timed_out) continue;
        if (!chunk) break;
        size_t begin = 0;
        for (size_t d = 0; d < chunk->ends.size(); ++d) {
          const Chunk::Record& record = chunk->records[chunk->kept[d]];
          shards.add(chunk->tokens.data() + begin, chunk->ends[d] - begin, {record.input, record.ordinal + 1});
          begin = chunk->ends[d];
        }
        progress.documents += chunk->ends.size();
        progress.tokens += chunk->tokens.size();
        progress.text_bytes += chunk->text_bytes;
      }
      shards.finish({files.size(), 0});
    } catch (...) {
      pipeline.fail(std::current_exception());
      for (auto& w : workers) w.join();
      throw;
    }
    for (auto& w : workers) w.join();
  }
  progress.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  progress.input_bytes_done = input_bytes_total;
  progress.shards = index.shards.size();
  progress.finished = true;
  on_progress(progress);
  result.documents = index.documents();
  result.tokens = index.tokens();
  result.shards = index.shards.size();
  result.text_bytes = progress.text_bytes;
  result.seconds = progress.seconds;
  return result;
}

}  // namespace relora::data
