// Model presets: the paper's sizes must match its table exactly, and every preset must be a shape
// the model code accepts (heads divide hidden, even head dimension for rotary embeddings).
#include "common/model_presets.h"

#include <gtest/gtest.h>

namespace relora {
namespace {

TEST(ModelPresets, PaperSizesMatchThePaper) {
  auto s = find_model_preset("350m");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->hidden_size, 1024);
  EXPECT_EQ(s->num_layers, 24);
  EXPECT_EQ(s->num_heads, 16);
  EXPECT_EQ(s->intermediate_size, 2736);
  EXPECT_EQ(s->vocab_size, 32100);

  auto b = find_model_preset("1b3");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->hidden_size, 2048);
  EXPECT_EQ(b->num_heads, 32);
  EXPECT_EQ(b->intermediate_size, 5461);

  auto seven = find_model_preset("7B");  // LLaMA-7B's shape
  ASSERT_TRUE(seven.has_value());
  EXPECT_EQ(seven->hidden_size, 4096);
  EXPECT_EQ(seven->num_layers, 32);
  EXPECT_EQ(seven->num_heads, 32);
  EXPECT_EQ(seven->intermediate_size, 11008);
  auto three = find_model_preset("3b");  // OpenLLaMA 3B's shape
  ASSERT_TRUE(three.has_value());
  EXPECT_EQ(three->hidden_size, 3200);
  EXPECT_EQ(three->num_layers, 26);
  EXPECT_EQ(three->intermediate_size, 8640);
}

TEST(ModelPresets, SmallPresets) {
  auto n = find_model_preset("nano");
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->hidden_size, 128);
  EXPECT_EQ(n->num_layers, 4);
  EXPECT_EQ(n->num_heads, 4);
  EXPECT_EQ(n->intermediate_size, 352);
  EXPECT_EQ(n->vocab_size, 4096);
  auto m = find_model_preset("micro");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->hidden_size, 256);
  EXPECT_EQ(m->vocab_size, 8192);
}

TEST(ModelPresets, NamesAreCaseInsensitiveAndUnknownIsNullopt) {
  EXPECT_TRUE(find_model_preset("60M").has_value());
  EXPECT_TRUE(find_model_preset("1B3").has_value());
  EXPECT_FALSE(find_model_preset("13b").has_value());
  EXPECT_FALSE(find_model_preset("").has_value());
}

TEST(ModelPresets, EveryListedPresetIsAValidShape) {
  const auto names = model_preset_names();
  EXPECT_EQ(names, (std::vector<std::string>{"nano", "micro", "60m", "130m", "250m", "350m", "1b3", "3b", "7b"}));
  for (const auto& name : names) {
    auto s = find_model_preset(name);
    ASSERT_TRUE(s.has_value()) << name;
    EXPECT_EQ(s->hidden_size % s->num_heads, 0) << name;
    EXPECT_EQ((s->hidden_size / s->num_heads) % 2, 0) << name;
    EXPECT_GT(s->num_layers, 0) << name;
    EXPECT_GT(s->intermediate_size, 0) << name;
    EXPECT_GT(s->vocab_size, 0) << name;
  }
}

}  // namespace
}  // namespace relora
