#include "coordinator/duration.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace relora::coordinator {

std::chrono::milliseconds parse_duration(const std::string& text) {
  const auto bad = [&text](const std::string& why) {
    return std::invalid_argument("invalid duration '" + text + "': " + why +
                                 " (expected a number and a unit: 500ms, 5s, 2m, 1h)");
  };
  size_t unit_at = 0;
  while (unit_at < text.size() && (std::isdigit(static_cast<unsigned char>(text[unit_at])) || text[unit_at] == '.'))
    ++unit_at;
  if (unit_at == 0) throw bad("no number");
  const std::string number = text.substr(0, unit_at);
  const std::string unit = text.substr(unit_at);
  double ms_per_unit = 0;
  if (unit == "ms")
    ms_per_unit = 1;
  else if (unit == "s")
    ms_per_unit = 1000;
  else if (unit == "m")
    ms_per_unit = 60 * 1000;
  else if (unit == "h")
    ms_per_unit = 3600 * 1000;
  else
    throw bad(unit.empty() ? "no unit" : "unknown unit '" + unit + "'");
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(value)) throw bad("not a number");
  const double ms = value * ms_per_unit;
  if (ms > 1e15) throw bad("too long");
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

std::string format_duration(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms != 0 && ms % (3600 * 1000) == 0) return std::to_string(ms / (3600 * 1000)) + "h";
  if (ms != 0 && ms % (60 * 1000) == 0) return std::to_string(ms / (60 * 1000)) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace relora::coordinator
