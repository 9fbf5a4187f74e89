// Human-written durations for flags ("500ms", "5s", "2m", "1h") and back for messages.
// Pure functions: safe from any thread.
#pragma once

#include <chrono>
#include <string>

namespace relora::coordinator {

// "<non-negative integer or decimal><unit>" with unit one of ms, s, m, h; e.g. "500ms", "1.5s".
// A bare number is rejected (is "5" seconds or milliseconds?). Throws std::invalid_argument
// with a message that quotes the text and lists the accepted forms.
std::chrono::milliseconds parse_duration(const std::string& text);

// The shortest exact spelling parse_duration accepts: 5000ms -> "5s", 300ms -> "300ms",
// 120000ms -> "2m", 1500ms -> "1500ms".
std::string format_duration(std::chrono::milliseconds d);

}  // namespace relora::coordinator
