#include "worker/train/checkpoint.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/test_paths.h"

namespace relora::train {
namespace {

namespace fs = std::filesystem;
using relora::testing::TempDir;

NamedTensors sample_tensors(float fill) {
  return {{"model/w", torch::full({4, 3}, fill)},
          {"optim/w/step", torch::tensor({int64_t{7}})},
          {"rng/cpu", torch::arange(10, torch::kUInt8)}};
}

void flip_byte(const std::string& path, std::streamoff offset_from_end) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-offset_from_end, std::ios::end);
  char c;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(-offset_from_end, std::ios::end);
  f.write(&c, 1);
}

TEST(TrainCheckpoint, RoundTripsTensorsAndMeta) {
  TempDir dir;
  CheckpointStore store(dir.path(), 3);
  const std::string path = store.save(12, {{"merges", 2}}, sample_tensors(1.5f));
  EXPECT_TRUE(fs::exists(path + "/COMPLETE"));
  auto ckpt = load_checkpoint(path);
  EXPECT_EQ(ckpt.step, 12);
  EXPECT_EQ(ckpt.meta["merges"], 2);
  EXPECT_TRUE(torch::equal(ckpt.state.tensors.at("model/w"), torch::full({4, 3}, 1.5f)));
  EXPECT_EQ(ckpt.state.tensors.at("optim/w/step").item<int64_t>(), 7);
  EXPECT_TRUE(torch::equal(ckpt.state.tensors.at("rng/cpu"), torch::arange(10, torch::kUInt8)));
  // A store directory resolves to its newest checkpoint.
  EXPECT_EQ(load_checkpoint(dir.path()).step, 12);
}

TEST(TrainCheckpoint, KeepsOnlyTheNewestK) {
  TempDir dir;
  CheckpointStore store(dir.path(), 2);
  for (int step : {1, 2, 3, 4}) store.save(step, {}, sample_tensors(step));
  auto complete = store.list_complete();
  ASSERT_EQ(complete.size(), 2u);
  EXPECT_NE(complete[0].find("step-00000003"), std::string::npos);
  EXPECT_NE(complete[1].find("step-00000004"), std::string::npos);
}

TEST(TrainCheckpoint, CorruptFileIsNamedAndPreviousOneUsed) {
  TempDir dir;
  CheckpointStore store(dir.path(), 3);
  store.save(1, {}, sample_tensors(1));
  const std::string newest = store.save(2, {}, sample_tensors(2));
  const std::string state = newest + "/state.safetensors";
  flip_byte(state, 3);
  try {
    load_checkpoint(newest);
    FAIL() << "a corrupt checkpoint loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(state), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  std::vector<std::string> skipped;
  auto ckpt = store.load_latest(&skipped);
  ASSERT_TRUE(ckpt.has_value());
  EXPECT_EQ(ckpt->step, 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("checksum"), std::string::npos);
}

TEST(TrainCheckpoint, TruncatedAndIncompleteCheckpointsAreRejected) {
  TempDir dir;
  CheckpointStore store(dir.path(), 3);
  const std::string path = store.save(5, {}, sample_tensors(5));
  fs::resize_file(path + "/state.safetensors", 20);
  EXPECT_THROW(load_checkpoint(path), std::runtime_error);

  const std::string second = store.save(6, {}, sample_tensors(6));
  fs::remove(second + "/COMPLETE");  // as if the process died before the commit marker
  EXPECT_EQ(store.list_complete().size(), 1u);
  try {
    load_checkpoint(second);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("incomplete"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(store.load_latest().has_value());  // the only complete one is truncated
}

TEST(TrainSafetensors, RejectsGarbageNamingTheFile) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  std::ofstream(path) << "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}";
  try {
    read_safetensors(path);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(TrainSafetensors, WritesTheStandardLayout) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"a", torch::ones({2, 2})}, {"b", torch::zeros({3}, torch::kBFloat16)}}, {{"format", "pt"}});
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  EXPECT_NE(header.find("\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"), std::string::npos) << header;
  EXPECT_NE(header.find("\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]}"), std::string::npos) << header;
  EXPECT_EQ(fs::file_size(path), 8 + n + 22);
  auto back = read_safetensors(path);
  EXPECT_EQ(back.metadata.at("format"), "pt");
  EXPECT_TRUE(torch::equal(back.tensors.at("a"), torch::ones({2, 2})));
}

}  // namespace
}  // namespace relora::train
