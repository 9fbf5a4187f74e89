// Fuzz target: read_safetensors, the reader of checkpoint state and exported models.
// Properties: bad files raise std::runtime_error naming the file (never a c10::Error, a
// nlohmann exception or an allocation the file's size does not justify); an accepted file's
// tensors all lie within it.
#include "tests/fuzz/fuzz_util.h"
#include "worker/train/safetensors.h"

using relora::fuzz::contract_broken;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static relora::fuzz::MemFile file("state.safetensors");
  file.rewrite(data, size);
  try {
    const auto st = relora::train::read_safetensors(file.path());
    uint64_t bytes = 0;
    for (const auto& [name, t] : st.tensors) {
      if (!t.is_contiguous() || t.device() != torch::kCPU) contract_broken("tensor '" + name + "' is not a CPU contiguous tensor");
      bytes += static_cast<uint64_t>(t.numel()) * t.element_size();
    }
    if (bytes > size) contract_broken("tensors hold more bytes than the file");
  } catch (const std::runtime_error& e) {
    relora::fuzz::expect_names(e, file.path());
  }
  return 0;
}
