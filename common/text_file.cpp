#include "common/text_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace relora {

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
}

}  // namespace relora
