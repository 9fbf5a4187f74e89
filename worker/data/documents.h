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

// Hex digest of `salt` and each file's absolute path, size and mtime: the cache key of anything
// derived from these files (a trained tokenizer, a token file). Changing a file invalidates it.
std::string inputs_digest(const std::vector<std::string>& files, const std::string& salt);

}  // namespace relora::data
