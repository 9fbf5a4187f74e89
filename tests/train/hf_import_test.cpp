// Starting from a Hugging Face LLaMA directory (model.from_hf): every dtype and layout loads
// exactly, our export loads back to identical logits and loss, and each kind of broken or
// mismatched checkpoint is one error naming the tensor and the file.
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <tuple>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/job_spec.h"
#include "tests/test_paths.h"
#include "tests/train/hf_checkpoint.h"
#include "worker/train/hf_config.h"
#include "worker/train/hf_weights.h"
#include "worker/train/safetensors.h"

namespace relora::train {
namespace {

namespace fs = std::filesystem;
using relora::testing::HfLayout;
using relora::testing::TempDir;

model::LlamaConfig tiny_config() {
  model::LlamaConfig c;
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.intermediate_size = 64;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.max_seq_len = 16;
  return c;
}

model::Llama tiny_model(uint64_t seed) {
  model::Llama m(tiny_config());
  m->init_weights(seed);
  m->eval();
  return m;
}

torch::Tensor sample_ids() { return (torch::arange(32, torch::kLong) * 37 % 96).reshape({2, 16}); }  // [B=2, T=16]

// The what() of the exception `f` throws ("" if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string load_error(const std::string& dir) {
  return error_of([&] {
    model::Llama m = tiny_model(2);
    load_hf_weights(m, dir);
  });
}

void expect_same_model(model::Llama& a, model::Llama& b) {
  const auto sa = a->export_state(), sb = b->export_state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
  torch::NoGradGuard no_grad;
  const auto ids = sample_ids();
  EXPECT_TRUE(torch::equal(a->forward(ids), b->forward(ids)));
  EXPECT_EQ(a->loss(ids).item<double>(), b->loss(ids).item<double>());
}

TEST(TrainHfImport, ExportImportRoundTripGivesIdenticalLogitsAndLoss) {
  TempDir dir;
  model::Llama exported = tiny_model(1);
  export_hf_model(exported, "", 16, dir.path());  // our own export, untouched
  model::Llama imported = tiny_model(2);           // other weights until the import
  const auto info = load_hf_weights(imported, dir.path());
  EXPECT_EQ(info.files, std::vector<std::string>{dir.file("model.safetensors")});
  EXPECT_EQ(info.tensors, 3 + 9 * 2);
  EXPECT_EQ(info.parameters, exported->count_model_parameters());
  EXPECT_FALSE(info.tied);
  expect_same_model(exported, imported);
}

// A low-rank model exports W + s B A: the import is that merged model.
TEST(TrainHfImport, ExportOfALowRankModelImportsItsMergedWeights) {
  TempDir dir;
  model::Llama trained = tiny_model(1);
  trained->enable_lora({/*rank=*/4, /*alpha=*/8, /*dropout=*/0.0}, /*seed=*/3);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, linear] : trained->relora_linears()) linear->lora_B.normal_(0, 0.1);
  }
  export_hf_model(trained, "", 16, dir.path());
  model::Llama imported = tiny_model(2);
  load_hf_weights(imported, dir.path());
  const auto want = trained->export_state();
  const auto got = imported->export_state();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(torch::equal(want[i].second, got[i].second)) << want[i].first;
}

class TrainHfLayouts : public ::testing::TestWithParam<std::tuple<torch::ScalarType, int, bool>> {};

TEST_P(TrainHfLayouts, LoadsExactly) {
  const auto [dtype, shards, tied] = GetParam();
  const HfLayout layout{dtype, shards, tied};
  TempDir dir;
  model::Llama reference = tiny_model(1);
  relora::testing::make_representable(reference, layout);
  relora::testing::write_hf_checkpoint(reference, dir.path(), layout);
  ASSERT_EQ(fs::exists(dir.file("model.safetensors.index.json")), shards > 1);
  model::Llama imported = tiny_model(2);
  const auto info = load_hf_weights(imported, dir.path());
  EXPECT_EQ(info.files.size(), static_cast<size_t>(shards));
  EXPECT_EQ(info.tied, tied);
  EXPECT_EQ(info.tensors, tied ? 20 : 21);
  expect_same_model(reference, imported);
}

std::string layout_name(const ::testing::TestParamInfo<TrainHfLayouts::ParamType>& info) {
  const torch::ScalarType dtype = std::get<0>(info.param);
  const char* name = dtype == torch::kFloat ? "F32" : dtype == torch::kBFloat16 ? "BF16" : "F16";
  return std::string(name) + (std::get<1>(info.param) > 1 ? "_3Shards" : "_OneFile") +
         (std::get<2>(info.param) ? "_Tied" : "_Untied");
}

INSTANTIATE_TEST_SUITE_P(DtypesAndLayouts, TrainHfLayouts,
                         ::testing::Combine(::testing::Values(torch::kFloat, torch::kBFloat16, torch::kHalf),
                                            ::testing::Values(1, 3), ::testing::Bool()),
                         layout_name);

// A checkpoint written by `write`, then changed by `corrupt`: the error of loading it.
class TrainHfBroken : public ::testing::Test {
 protected:
  void SetUp() override {
    model::Llama m = tiny_model(1);
    relora::testing::write_hf_checkpoint(m, dir_.path(), layout_);
  }
  // Rewrites one safetensors file with `edit` applied to its tensors.
  void rewrite(const std::string& file, const std::function<void(std::map<std::string, torch::Tensor>&)>& edit) {
    auto st = read_safetensors(dir_.file(file));
    edit(st.tensors);
    write_safetensors(dir_.file(file), NamedTensors(st.tensors.begin(), st.tensors.end()));
  }
  TempDir dir_;
  HfLayout layout_;
};

TEST_F(TrainHfBroken, MissingTensorIsNamed) {
  rewrite("model.safetensors", [](auto& t) { t.erase("model.layers.1.mlp.up_proj.weight"); });
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find("missing tensor 'model.layers.1.mlp.up_proj.weight' of shape [64, 32]"), std::string::npos) << e;
  EXPECT_NE(e.find(dir_.file("model.safetensors")), std::string::npos) << e;
}

TEST_F(TrainHfBroken, UntiedCheckpointWithoutHeadIsMissingIt) {
  rewrite("model.safetensors", [](auto& t) { t.erase("lm_head.weight"); });
  EXPECT_NE(load_error(dir_.path()).find("missing tensor 'lm_head.weight'"), std::string::npos);
}

TEST_F(TrainHfBroken, WrongShapeNamesTensorFileAndBothShapes) {
  rewrite("model.safetensors", [](auto& t) { t["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({32, 16}); });
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(dir_.file("model.safetensors") + ": tensor 'model.layers.0.self_attn.k_proj.weight' has shape "
                   "[32, 16], " + dir_.file("config.json") + " makes it [32, 32]"),
            std::string::npos)
      << e;
}

TEST_F(TrainHfBroken, WrongDtypeIsNamed) {
  rewrite("model.safetensors", [](auto& t) { t["model.norm.weight"] = torch::ones({32}, torch::kLong); });
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find("tensor 'model.norm.weight' has dtype Long; F32, BF16 or F16 expected"), std::string::npos) << e;
}

TEST_F(TrainHfBroken, UnexpectedTensorIsNamed) {
  rewrite("model.safetensors", [](auto& t) { t["model.layers.0.self_attn.q_proj.bias"] = torch::zeros({32}); });
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(dir_.file("model.safetensors") + ": unexpected tensor 'model.layers.0.self_attn.q_proj.bias'"),
            std::string::npos)
      << e;
}

TEST_F(TrainHfBroken, RotaryBuffersOfOlderTransformersAreSkipped) {
  rewrite("model.safetensors", [](auto& t) { t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch::ones({4}); });
  EXPECT_EQ(load_error(dir_.path()), "");
}

TEST_F(TrainHfBroken, TruncatedFileNamesFileAndTensor) {
  const auto path = dir_.file("model.safetensors");
  fs::resize_file(path, fs::file_size(path) - 100);
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(path + ": not a valid safetensors file: tensor 'lm_head.weight'"), std::string::npos) << e;
}

TEST_F(TrainHfBroken, HeaderThatIsNotJsonIsNamed) {
  const auto path = dir_.file("model.safetensors");
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.put('#');
  f.close();
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(path + ": not a valid safetensors file: header is not JSON"), std::string::npos) << e;
}

TEST_F(TrainHfBroken, ConfigFieldMissingIsNamed) {
  auto config = relora::testing::read_json(dir_.file("config.json"));
  config.erase("num_attention_heads");
  relora::testing::write_json(dir_.file("config.json"), config);
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(dir_.file("config.json") + ": num_attention_heads: missing"), std::string::npos) << e;
}

TEST_F(TrainHfBroken, GroupedQueryAttentionIsRefused) {
  auto config = relora::testing::read_json(dir_.file("config.json"));
  config["num_key_value_heads"] = 2;
  relora::testing::write_json(dir_.file("config.json"), config);
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find("num_key_value_heads: 2 differs from num_attention_heads 4"), std::string::npos) << e;
}

TEST_F(TrainHfBroken, NoWeightsAtAllIsNamed) {
  fs::remove(dir_.file("model.safetensors"));
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(dir_.path() + ": neither model.safetensors nor model.safetensors.index.json"), std::string::npos)
      << e;
}

class TrainHfBrokenShards : public TrainHfBroken {
 protected:
  void SetUp() override {
    layout_.shards = 2;
    TrainHfBroken::SetUp();
  }
};

TEST_F(TrainHfBrokenShards, ShardNamedInIndexMissingIsNamed) {
  fs::remove(dir_.file("model-00002-of-00002.safetensors"));
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find(dir_.file("model.safetensors.index.json") + ": names shard model-00002-of-00002.safetensors for "
                                                               "tensor '"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
}

TEST_F(TrainHfBrokenShards, TensorTheIndexPutsInAShardThatLacksItIsNamed) {
  rewrite("model-00001-of-00002.safetensors", [](auto& t) { t.erase("model.embed_tokens.weight"); });
  const auto e = load_error(dir_.path());
  EXPECT_NE(e.find("names model-00001-of-00002.safetensors for tensor 'model.embed_tokens.weight', which " +
                   dir_.file("model-00001-of-00002.safetensors") + " does not hold"),
            std::string::npos)
      << e;
}

TEST_F(TrainHfBrokenShards, IndexPathOutsideTheDirectoryIsRefused) {
  auto index = relora::testing::read_json(dir_.file("model.safetensors.index.json"));
  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  relora::testing::write_json(dir_.file("model.safetensors.index.json"), index);
  EXPECT_NE(load_error(dir_.path()).find("'../elsewhere.safetensors' is not a file name"), std::string::npos);
}

// ---- the job spec --------------------------------------------------------------------------

relora::v1::JobSpec from_hf_spec(const std::string& dir, const std::string& model_extra = "") {
  auto spec = parse_job_spec_yaml("name: hf\nmodel: {from_hf: \"" + dir + "\"" + model_extra +
                                  "}\ndata: {train: [x.txt], seq_len: 16}\ntraining: {steps: 10}\n"
                                  "relora: {mode: relora, cycle_steps: 5}\n");
  resolve_job_spec(spec);
  validate_job_spec(spec);  // valid without a shape: the worker reads it from config.json
  return spec;
}

TEST(TrainHfSpec, ShapeAndTokenizerComeFromTheDirectory) {
  TempDir dir;
  model::Llama m = tiny_model(1);
  export_hf_model(m, "", 16, dir.path());
  std::ofstream(dir.file("tokenizer.model")) << "a SentencePiece model";  // only its presence counts here
  auto spec = apply_hf_config(from_hf_spec(dir.path()));
  const auto& mo = spec.model();
  EXPECT_EQ(mo.hidden_size(), 32);
  EXPECT_EQ(mo.num_layers(), 2);
  EXPECT_EQ(mo.num_heads(), 4);
  EXPECT_EQ(mo.intermediate_size(), 64);
  EXPECT_EQ(mo.vocab_size(), 96);
  EXPECT_EQ(mo.rms_norm_eps(), 1e-5);
  EXPECT_EQ(mo.rope_theta(), 500000.0);
  EXPECT_EQ(spec.relora().rank(), 8);  // the default, hidden_size / 4, once the shape is known
  EXPECT_EQ(spec.data().tokenizer_model(), dir.file("tokenizer.model"));
  const auto again = apply_hf_config(spec);
  EXPECT_EQ(again.SerializeAsString(), spec.SerializeAsString());
}

TEST(TrainHfSpec, DisagreeingPresetOrFieldNamesBothValues) {
  TempDir dir;
  model::Llama m = tiny_model(1);
  export_hf_model(m, "", 16, dir.path());
  auto e = error_of([&] { apply_hf_config(from_hf_spec(dir.path(), ", preset: micro")); });
  EXPECT_NE(e.find("model.hidden_size: 256 (model.preset micro) disagrees with hidden_size 32 in " +
                   dir.file("config.json")),
            std::string::npos)
      << e;
  e = error_of([&] { apply_hf_config(from_hf_spec(dir.path(), ", rms_norm_eps: 1e-6")); });
  EXPECT_NE(e.find("model.rms_norm_eps: 1e-06 disagrees with rms_norm_eps 1e-05"), std::string::npos) << e;
  // Agreeing fields are fine.
  EXPECT_EQ(error_of([&] { apply_hf_config(from_hf_spec(dir.path(), ", hidden_size: 32, num_layers: 2")); }), "");
}

TEST(TrainHfSpec, FromHfAndWarmStartCheckpointAreExclusive) {
  auto spec = parse_job_spec_yaml("name: hf\nmodel: {from_hf: d}\ndata: {train: [x.txt]}\ntraining: {steps: 10}\n"
                                  "relora: {mode: relora, cycle_steps: 5, warm_start_checkpoint: c}\n");
  resolve_job_spec(spec);
  EXPECT_NE(error_of([&] { validate_job_spec(spec); }).find("relora.warm_start_checkpoint: set together with model.from_hf"),
            std::string::npos);
}

}  // namespace
}  // namespace relora::train
