// Writing a whole text file (summaries, benchmark results, checkpoint metadata) with one error
// that names the file, instead of each caller checking its own ofstream.
#pragma once

#include <string>

namespace relora {

// Replaces `path` with `text`; throws std::runtime_error("<path>: write failed: <reason>") if the
// file cannot be opened or written. No fsync: callers that need durability sync the path.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace relora
