// Llama: parameter modes, seeding, merge invariance, gradients at the first steps, export,
// causality, loss sanity and rotary embeddings. Tiny configs so the suite runs in seconds.
#include "worker/model/llama.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include <torch/utils.h>

#include "worker/model/rotary.h"

namespace relora::model {
namespace {

constexpr int64_t kV = 100, kC = 32, kL = 2, kH = 4, kF = 48, kR = 4;

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = kV;
  c.hidden_size = kC;
  c.num_layers = kL;
  c.num_heads = kH;
  c.intermediate_size = kF;
  c.max_seq_len = 64;
  return c;
}

Llama tiny_model(uint64_t seed = 1) {
  Llama model(tiny_config());
  model->init_weights(seed);
  return model;
}

LoraOptions tiny_lora() { return {/*rank=*/kR, /*alpha=*/8.0, /*dropout=*/0.0}; }

torch::Tensor random_ids(int64_t B, int64_t T, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(kV, {B, T}, torch::kLong);
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Plain SGD on every trainable parameter (here: the factors and the full-rank rest).
void sgd_step(Llama& model, double lr) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : model->trainable_parameters()) {
    if (!p.grad().defined()) continue;
    p.sub_(p.grad() * lr);
    p.mutable_grad().zero_();
  }
}

TEST(ModelLlama, FullModeTrainsEverythingWithoutFactors) {
  auto model = tiny_model();
  EXPECT_FALSE(model->lora_enabled());
  const int64_t expected = 2 * kV * kC + (2 * kL + 1) * kC + kL * (4 * kC * kC + 3 * kC * kF);
  EXPECT_EQ(model->count_trainable_parameters(), expected);
  EXPECT_EQ(model->count_model_parameters(), expected);
  auto trainable = model->trainable_parameters();
  // embed + head + final norm + per layer (2 norms + 7 projections)
  EXPECT_EQ(trainable.size(), static_cast<size_t>(3 + kL * 9));
  std::set<std::string> names;
  for (auto& [name, p] : trainable) {
    names.insert(name);
    EXPECT_EQ(name.find("lora_"), std::string::npos) << name;
  }
  EXPECT_TRUE(names.count("embed_tokens.weight"));
  EXPECT_TRUE(names.count("lm_head"));
  EXPECT_TRUE(names.count("norm.weight"));
  EXPECT_TRUE(names.count("layers.1.self_attn.q_proj.weight"));
  EXPECT_TRUE(names.count("layers.0.mlp.down_proj.weight"));
  EXPECT_TRUE(names.count("layers.0.input_layernorm.weight"));
}

TEST(ModelLlama, LoraModeTrainsFactorsEmbeddingsNormsHead) {
  auto model = tiny_model();
  const int64_t full = model->count_model_parameters();
  model->enable_lora(tiny_lora(), /*seed=*/3);
  EXPECT_TRUE(model->lora_enabled());
  const int64_t per_layer = 8 * kR * kC + 3 * kR * (kC + kF);
  EXPECT_EQ(model->count_trainable_parameters(),
            2 * kV * kC + (2 * kL + 1) * kC + kL * per_layer);
  EXPECT_EQ(model->count_model_parameters(), full);  // A and B are not model parameters
  auto trainable = model->trainable_parameters();
  EXPECT_EQ(trainable.size(), static_cast<size_t>(3 + kL * (2 + 7 * 2)));
  int64_t factors = 0;
  for (auto& [name, p] : trainable) {
    const bool factor = ends_with(name, "lora_A") || ends_with(name, "lora_B");
    const bool full_rank = name == "embed_tokens.weight" || name == "lm_head" ||
                           ends_with(name, "norm.weight") || ends_with(name, "layernorm.weight");
    EXPECT_TRUE(factor || full_rank) << "unexpected trainable parameter " << name;
    factors += factor;
  }
  EXPECT_EQ(factors, kL * 7 * 2);
  for (auto& [name, linear] : model->relora_linears()) {
    EXPECT_FALSE(linear->weight.requires_grad()) << name;
  }
}

TEST(ModelLlama, RankTooLargeThrowsAndLeavesModelUntouched) {
  auto model = tiny_model();
  EXPECT_THROW(model->enable_lora({/*rank=*/kC + 1, 8.0, 0.0}, 1), std::invalid_argument);
  EXPECT_FALSE(model->lora_enabled());
  for (auto& [name, linear] : model->relora_linears()) EXPECT_FALSE(linear->lora_enabled());
}

TEST(ModelLlama, SeedsMakeSeparateModelsAgree) {
  auto a = tiny_model(/*seed=*/5);
  torch::manual_seed(123);  // the global generator must not matter
  auto b = tiny_model(/*seed=*/5);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& item : pa) EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  auto c = tiny_model(/*seed=*/6);
  EXPECT_FALSE(torch::equal(a->embed_tokens->weight, c->embed_tokens->weight));
  EXPECT_NEAR(a->lm_head.std().item<double>(), 0.02, 0.002);

  a->enable_lora(tiny_lora(), 11);
  b->enable_lora(tiny_lora(), 11);
  c->enable_lora(tiny_lora(), 12);
  auto la = a->relora_linears(), lb = b->relora_linears(), lc = c->relora_linears();
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_TRUE(torch::equal(la[i].second->lora_A, lb[i].second->lora_A)) << la[i].first;
    EXPECT_FALSE(torch::equal(la[i].second->lora_A, lc[i].second->lora_A)) << la[i].first;
  }
  // Projections of equal shape still get different A (per-index seeds).
  EXPECT_FALSE(torch::equal(la[0].second->lora_A, la[1].second->lora_A));
  a->merge_and_reinit(20);
  b->merge_and_reinit(20);
  la = a->relora_linears();
  lb = b->relora_linears();
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_TRUE(torch::equal(la[i].second->lora_A, lb[i].second->lora_A)) << la[i].first;
  }
}

TEST(ModelLlama, FirstStepsGradientsFlowThroughFactors) {
  auto model = tiny_model();
  model->enable_lora(tiny_lora(), 3);
  auto ids = random_ids(2, 16, 1);
  // Step 1: B = 0, so dL/dA = s * B^T (...) is exactly zero while dL/dB is not.
  model->loss(ids).backward();
  for (auto& [name, linear] : model->relora_linears()) {
    ASSERT_TRUE(linear->lora_B.grad().defined()) << name;
    EXPECT_GT(linear->lora_B.grad().abs().max().item<double>(), 0.0) << name;
    ASSERT_TRUE(linear->lora_A.grad().defined()) << name;
    EXPECT_EQ(linear->lora_A.grad().abs().max().item<double>(), 0.0) << name;
  }
  sgd_step(model, 0.1);
  // Step 2: B moved off zero, so A now gets a gradient too.
  model->loss(ids).backward();
  for (auto& [name, linear] : model->relora_linears()) {
    EXPECT_GT(linear->lora_A.grad().abs().max().item<double>(), 0.0) << name;
  }
}

TEST(ModelLlama, MergeAndReinitKeepsFunction) {
  auto model = tiny_model();
  model->enable_lora(tiny_lora(), 3);
  auto ids = random_ids(4, 16, 2);
  for (int step = 0; step < 4; ++step) {
    model->loss(ids).backward();
    sgd_step(model, 0.5);
  }
  for (auto& [name, linear] : model->relora_linears()) {
    ASSERT_GT(linear->lora_B.abs().max().item<double>(), 0.0) << name;
  }
  model->eval();
  auto test_ids = random_ids(2, 24, 3);
  torch::NoGradGuard no_grad;
  auto before = model->forward(test_ids);
  auto exported_before = model->export_state();
  model->merge_and_reinit(/*seed=*/4);
  auto after = model->forward(test_ids);
  EXPECT_LT(max_abs_diff(before, after), 1e-5);
  for (auto& [name, linear] : model->relora_linears()) {
    EXPECT_TRUE((linear->lora_A != 0).all().item<bool>()) << name;
    EXPECT_EQ(linear->lora_B.abs().max().item<double>(), 0.0) << name;
  }
  // The exported (merged) model is the same function before and after the merge.
  auto exported_after = model->export_state();
  for (size_t i = 0; i < exported_before.size(); ++i) {
    EXPECT_LT(max_abs_diff(exported_before[i].second, exported_after[i].second), 1e-6)
        << exported_before[i].first;
  }
}

TEST(ModelLlama, ExportStateHasHuggingFaceNamesAndShapes) {
  auto model = tiny_model();
  model->enable_lora(tiny_lora(), 3);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, linear] : model->relora_linears()) linear->lora_B.normal_();
  }
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  expected.push_back({"model.embed_tokens.weight", {kV, kC}});
  for (int64_t i = 0; i < kL; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* n : {"q", "k", "v", "o"}) {
      expected.push_back({p + "self_attn." + n + "_proj.weight", {kC, kC}});
    }
    expected.push_back({p + "mlp.gate_proj.weight", {kF, kC}});
    expected.push_back({p + "mlp.up_proj.weight", {kF, kC}});
    expected.push_back({p + "mlp.down_proj.weight", {kC, kF}});
    expected.push_back({p + "input_layernorm.weight", {kC}});
    expected.push_back({p + "post_attention_layernorm.weight", {kC}});
  }
  expected.push_back({"model.norm.weight", {kC}});
  expected.push_back({"lm_head.weight", {kV, kC}});

  auto state = model->export_state();
  ASSERT_EQ(state.size(), expected.size());
  for (size_t i = 0; i < state.size(); ++i) {
    EXPECT_EQ(state[i].first, expected[i].first);
    EXPECT_EQ(state[i].second.sizes(), expected[i].second) << state[i].first;
    EXPECT_EQ(state[i].second.scalar_type(), torch::kFloat);
    EXPECT_TRUE(state[i].second.device().is_cpu());
    EXPECT_TRUE(state[i].second.is_contiguous());
  }
  // Projections are exported merged: W + s B A.
  auto q = model->relora_linears()[0].second;
  auto merged = q->weight + q->scale() * q->lora_B.matmul(q->lora_A);
  EXPECT_LT(max_abs_diff(state[1].second, merged), 1e-6);
  EXPECT_GT(max_abs_diff(state[1].second, q->weight), 1e-3);
  // Exports are copies: changing them leaves the model alone.
  state[0].second.zero_();
  EXPECT_GT(model->embed_tokens->weight.abs().max().item<double>(), 0.0);
}

TEST(ModelLlama, CausalEarlierLogitsIgnoreLaterTokens) {
  auto model = tiny_model();
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = random_ids(2, 12, 4);
  auto changed = ids.clone();
  changed.select(1, 8).add_(1).remainder_(kV);  // change position 8 only
  auto a = model->forward(ids), b = model->forward(changed);  // [B, T, V]
  EXPECT_LT(max_abs_diff(a.narrow(1, 0, 8), b.narrow(1, 0, 8)), 1e-6);
  EXPECT_GT(max_abs_diff(a.narrow(1, 8, 4), b.narrow(1, 8, 4)), 1e-4);  // later ones do see it
}

TEST(ModelLlama, UntrainedLossNearLogVAndNllSumAgrees) {
  auto model = tiny_model();
  model->eval();
  auto ids = random_ids(3, 20, 5);
  const double loss = model->loss(ids).item<double>();
  EXPECT_NEAR(loss, std::log(static_cast<double>(kV)), 0.5);
  auto [sum, count] = model->nll_sum(ids);
  EXPECT_EQ(count, 3 * 19);
  EXPECT_NEAR(sum / static_cast<double>(count), loss, 1e-5);
}

TEST(ModelLlama, ForwardRejectsBadShapes) {
  auto model = tiny_model();
  EXPECT_THROW(model->forward(torch::zeros({2, 65}, torch::kLong)), c10::Error);  // > max_seq_len
  EXPECT_THROW(model->loss(torch::zeros({2, 1}, torch::kLong)), c10::Error);     // nothing to predict
  LlamaConfig bad = tiny_config();
  bad.num_heads = 5;  // 32 not divisible by 5
  EXPECT_THROW(Llama{bad}, std::invalid_argument);
}

TEST(ModelLlama, CloneAndDoublePrecision) {
  auto model = tiny_model();
  model->enable_lora(tiny_lora(), 3);
  auto copy = std::dynamic_pointer_cast<LlamaImpl>(model->clone());
  ASSERT_TRUE(copy->lora_enabled());
  EXPECT_EQ(copy->count_trainable_parameters(), model->count_trainable_parameters());
  auto ids = random_ids(1, 8, 6);
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_abs_diff(copy->forward(ids), model->forward(ids)), 1e-6);
  copy->to(torch::kDouble);  // moves the rotary buffers too
  EXPECT_EQ(copy->forward(ids).scalar_type(), torch::kDouble);
  EXPECT_LT(max_abs_diff(copy->forward(ids).to(torch::kFloat), model->forward(ids)), 1e-4);
}

TEST(ModelRotary, MatchesHandComputedValue) {
  // D = 4, theta = 10000: inv_freq = [1, 0.01]; at position 3 the angles are [3, 0.03, 3, 0.03].
  auto [cos, sin] = rotary_tables(/*max_seq_len=*/8, /*head_dim=*/4, /*theta=*/10000.0);
  ASSERT_EQ(cos.sizes(), (std::vector<int64_t>{8, 4}));
  EXPECT_NEAR(cos[3][0].item<double>(), std::cos(3.0), 1e-6);
  EXPECT_NEAR(sin[3][3].item<double>(), std::sin(0.03), 1e-6);
  EXPECT_NEAR(cos[0][1].item<double>(), 1.0, 1e-7);

  auto x = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({1, 1, 1, 4});  // [B, H, T, D]
  auto out = apply_rotary(x, cos.narrow(0, 3, 1), sin.narrow(0, 3, 1));  // position 3
  // out = x cos + rotate_half(x) sin, rotate_half([1, 2, 3, 4]) = [-3, -4, 1, 2]
  const double c1 = std::cos(3.0), s1 = std::sin(3.0), c2 = std::cos(0.03), s2 = std::sin(0.03);
  const double expected[4] = {1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2};
  auto flat = out.view({-1});
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(flat[i].item<double>(), expected[i], 1e-6) << i;
}

}  // namespace
}  // namespace relora::model
