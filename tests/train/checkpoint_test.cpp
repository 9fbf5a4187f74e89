#include "worker/train/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <functional>

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

// Regressions found by fuzzing (tests/fuzz/fuzz_safetensors and fuzz_checkpoint, docs/reliability.md
// "Bad input"): each input below crashed the reader (an escaping nlohmann exception, undefined
// behaviour, an unchecked allocation) or was accepted. Each must now be a std::runtime_error
// naming the file and the problem.
std::string write_safetensors_header(const TempDir& dir, const std::string& name, const std::string& header,
                                     size_t data_bytes) {
  const std::string path = dir.file(name);
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << std::string(data_bytes, '\0');
  return path;
}

std::string read_error(const std::string& path) {
  try {
    read_safetensors(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "<no exception>";
}

TEST(TrainSafetensorsFuzzRegression, MalformedHeadersAreErrorsNamingTheFile) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"__metadata__":"x"})", "__metadata__ is not a JSON object"},
      {R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", "shape too large"},
      {R"({"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "shape too large"},
      {R"({"t":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}})", "dimension that is not an integer"},
      {R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "negative dimension"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,1e300]}})", "data_offsets is not a pair"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", "data_offsets is not a pair"},
      {R"({"t":{"dtype":"F32","shape":7,"data_offsets":[0,4]}})", "lacks shape or data_offsets"},
      {R"({"t":[1,2]})", "is not described by a JSON object"},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
       "tensors 'a' and 'b' overlap"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = write_safetensors_header(dir, "case" + std::to_string(i), cases[i].first, 8);
    const std::string error = read_error(path);
    EXPECT_NE(error.find(path), std::string::npos) << cases[i].first << ": " << error;
    EXPECT_NE(error.find(cases[i].second), std::string::npos) << cases[i].first << ": " << error;
  }
  // Empty tensors may share an offset; zero-sized dimensions next to huge ones are fine.
  const std::string ok = write_safetensors_header(
      dir, "ok", R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[0,4611686018427387904],"data_offsets":[0,0]},"c":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2);
  EXPECT_EQ(read_error(ok), "<no exception>");
}

TEST(TrainCheckpointFuzzRegression, MalformedManifestsAreErrorsNamingTheFile) {
  TempDir dir;
  CheckpointStore store(dir.path(), 3);
  const std::string path = store.save(4, {}, sample_tensors(1));
  std::ifstream in(path + "/meta.json");
  const nlohmann::json good = nlohmann::json::parse(in);
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json m = good;
    edit(m);
    return m.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"4", "checkpoint metadata is not a JSON object"},
      {"[1, 2]", "checkpoint metadata is not a JSON object"},
      {R"({"format": 1, "version": 1})", "not a relora checkpoint of version 1"},
      {with([](auto& m) { m["version"] = "1"; }), "not a relora checkpoint of version 1"},
      {with([](auto& m) { m.erase("files"); }), "files.state.safetensors must record the file's size and CRC-32"},
      {with([](auto& m) { m["files"] = 3; }), "files.state.safetensors must record the file's size and CRC-32"},
      {with([](auto& m) { m["files"]["state.safetensors"]["bytes"] = -1.5e300; }), "files.state.safetensors must record the file's size"},
      {with([](auto& m) { m["files"]["state.safetensors"]["crc32"] = "x"; }), "files.state.safetensors must record the file's size"},
      {with([](auto& m) { m["files"]["state.safetensors"]["crc32"] = uint64_t{1} << 40; }), "files.state.safetensors must record the file's size"},
      {with([](auto& m) { m["step"] = 1e300; }), "step is missing or not a non-negative integer"},
      {with([](auto& m) { m["step"] = -3; }), "step is missing or not a non-negative integer"},
      {with([](auto& m) { m.erase("step"); }), "step is missing or not a non-negative integer"},
      {with([](auto& m) { m["shards"] = "optim-rank-00000.safetensors"; }), "shards is not a list of file names"},
      {with([](auto& m) { m["shards"] = {"../state.safetensors"}; }), "shards lists a name that is not a shard file"},
      {with([](auto& m) { m["shards"] = {"optim-rank-00000.safetensors"}; }),
       "files.optim-rank-00000.safetensors must record the file's size and CRC-32"},
  };
  for (const auto& [meta, expected] : cases) {
    std::ofstream(path + "/meta.json", std::ios::trunc) << meta;
    try {
      load_checkpoint(path);
      ADD_FAILURE() << "accepted " << meta;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(path + "/meta.json"), std::string::npos) << meta << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << meta << ": " << e.what();
    }
  }
  // load_latest reports such a checkpoint as skipped rather than failing the resume.
  std::vector<std::string> skipped;
  EXPECT_FALSE(store.load_latest(&skipped).has_value());
  EXPECT_EQ(skipped.size(), 1u);
  std::ofstream(path + "/meta.json", std::ios::trunc) << good.dump();
  EXPECT_EQ(load_checkpoint(path).step, 4);
}

}  // namespace
}  // namespace relora::train
