// Fuzz target: load_checkpoint's reading of a checkpoint directory's manifest (meta.json): format
// and version, the recorded size and CRC-32 of state.safetensors, the step. The input is the
// meta.json of a directory that otherwise holds a valid state.safetensors and a COMPLETE marker
// (the seeds record the state's true size and CRC, so mutations reach the code after the check).
// Properties: a bad manifest raises std::runtime_error naming the checkpoint directory (never a
// nlohmann exception); an accepted one has a non-negative step and the fixture's tensors.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/fuzz/checkpoint_fixture.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/train/checkpoint.h"

using relora::fuzz::contract_broken;

namespace {
std::string g_dir;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "relora-fuzz-ckpt-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  g_dir = tmpl + "/step-00000012";
  std::filesystem::create_directories(g_dir);
  relora::train::write_safetensors(g_dir + "/state.safetensors", relora::fuzz::checkpoint_fixture_tensors());
  std::ofstream(g_dir + "/COMPLETE") << "0\n";
  // Removed at exit (libFuzzer exits through exit() when its time is up).
  std::atexit([] { std::error_code ec; std::filesystem::remove_all(std::filesystem::path(g_dir).parent_path(), ec); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream meta(g_dir + "/meta.json", std::ios::binary | std::ios::trunc);
    meta.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const auto ckpt = relora::train::load_checkpoint(g_dir);
    if (ckpt.step < 0) contract_broken("accepted a negative step");
    if (ckpt.state.tensors.size() != relora::fuzz::checkpoint_fixture_tensors().size())
      contract_broken("state tensors lost");
  } catch (const std::runtime_error& e) {
    relora::fuzz::expect_names(e, g_dir);
  }
  return 0;
}
