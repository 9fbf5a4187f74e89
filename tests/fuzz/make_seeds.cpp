// Writes the binary seed corpora with our own writers (see tests/fuzz/CMakeLists.txt):
//   make_seeds tests/fuzz/corpus
// corpus/safetensors/*.safetensors, corpus/checkpoint/*.json (manifests matching the fixture
// state of fuzz_checkpoint), corpus/token_file/*.tok. The job-spec seeds are YAML written by hand.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "tests/fuzz/checkpoint_fixture.h"
#include "worker/data/token_file.h"
#include "worker/train/checkpoint.h"

namespace fs = std::filesystem;
using namespace relora;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds CORPUS_DIR\n";
    return 2;
  }
  const fs::path out = argv[1];
  fs::create_directories(out / "safetensors");
  fs::create_directories(out / "checkpoint");
  fs::create_directories(out / "token_file");

  // safetensors: the checkpoint fixture, every dtype we read, and an empty file.
  train::write_safetensors((out / "safetensors/fixture.safetensors").string(), fuzz::checkpoint_fixture_tensors(),
                           {{"format", "pt"}});
  train::write_safetensors((out / "safetensors/dtypes.safetensors").string(),
                           {{"f32", torch::ones({2}, torch::kFloat32)},
                            {"f64", torch::ones({1, 2}, torch::kFloat64)},
                            {"bf16", torch::ones({2}, torch::kBFloat16)},
                            {"f16", torch::ones({2}, torch::kFloat16)},
                            {"i64", torch::ones({1}, torch::kInt64)},
                            {"i32", torch::ones({1}, torch::kInt32)},
                            {"u8", torch::ones({3}, torch::kUInt8)},
                            {"i8", torch::ones({0}, torch::kInt8)},
                            {"bool", torch::ones({2, 1}, torch::kBool)}});
  train::write_safetensors((out / "safetensors/empty.safetensors").string(), {});

  // checkpoint manifests: what the trainer writes, and the store's minimum.
  const fs::path tmp = fs::temp_directory_path() / "relora-make-seeds";
  fs::remove_all(tmp);
  train::CheckpointStore store(tmp.string(), 5);
  nlohmann::json trainer_meta = {{"merges", 2}, {"optimizer_resets", 2}, {"low_rank", true},
                                 {"last_boundary_step", 10}, {"next_sample", 96}, {"world", 2},
                                 {"tokenizer_model", "runs/x/cache/spm.model"}, {"eos_id", 1}, {"pad_id", 0},
                                 {"spec", {{"name", "seed"}, {"training", {{"steps", "100"}}}}}};
  fs::copy_file(store.save(12, trainer_meta, fuzz::checkpoint_fixture_tensors()) + "/meta.json",
                out / "checkpoint/trainer.json", fs::copy_options::overwrite_existing);
  fs::copy_file(store.save(0, nlohmann::json::object(), fuzz::checkpoint_fixture_tensors()) + "/meta.json",
                out / "checkpoint/minimal.json", fs::copy_options::overwrite_existing);
  fs::remove_all(tmp);

  // token files
  data::write_token_file((out / "token_file/small.tok").string(), {5, 0, 31, 7, 1, 2, 3, 1}, 32, 2);
  data::write_token_file((out / "token_file/empty.tok").string(), {}, 8, 0);
  data::write_token_file((out / "token_file/one.tok").string(), {0}, 1, 1);
  std::cout << "seeds written under " << out << "\n";
  return 0;
}
