// Reading training text as a sequence of documents, whatever the file format.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace relora::data {

// Expands directories (recursively, sorted, skipping hidden files) into the files they hold;
// throws std::runtime_error naming the first path that does not exist.
std::vector<std::string> expand_input_paths(const std::vector<std::string>& paths);

// Calls `on_document` for each document of `path`:
//  - .json / .jsonl (optionally .gz or .zst): one JSON object per line; its "text" field is a document
//    (the C4 shard format). A line that is not JSON or lacks "text" is an error naming file:line.
//  - anything else (optionally .gz or .zst): plain UTF-8 text; documents are separated by lines holding
//    only "<|endoftext|>" (TinyStories) or "%" (fortune files); without separators the whole
//    file is one document.
// Empty documents are skipped. `bytes_read`, when given, follows the bytes of the file consumed
// (compressed bytes for .gz/.zst), for progress reports from another thread.
void read_documents(const std::string& path, const std::function<void(std::string_view)>& on_document,
                    std::atomic<uint64_t>* bytes_read = nullptr);

// A document as its file holds it, before decoding: for JSON lines the raw line, whose "text"
// field record_text() extracts; for plain text the document itself. Lets a pipeline read files
// in one thread and decode the records in many.
struct DocumentRecord {
  std::string_view bytes;
  bool json = false;
  uint64_t line = 0;  // 1-based line of a JSON record, for error messages
};

// Calls `on_record` for each record of `path`, in order: every non-blank line of a JSON-lines
// file (whether or not its text turns out empty), every non-blank document of a plain-text one.
// Same formats, compressions and `bytes_read` as read_documents().
void read_records(const std::string& path, const std::function<void(const DocumentRecord&)>& on_record,
                  std::atomic<uint64_t>* bytes_read = nullptr);

// The document text of a record: a plain-text record's bytes, or a JSON record's "text" field
// decoded into `storage`. Throws naming path:line for a line that is not a JSON object with a
// string "text". May be empty (read_documents skips those).
std::string_view record_text(const DocumentRecord& record, const std::string& path, std::string& storage);

// Hex digest of `salt` and each file's absolute path, size and mtime: the cache key of anything
// derived from these files (a trained tokenizer, a token file). Changing a file invalidates it.
std::string inputs_digest(const std::vector<std::string>& files, const std::string& salt);

}  // namespace relora::data
