// Activation checkpointing (Llama::set_activation_checkpointing): the same loss and gradients as
// the plain graph, with dropout on the low-rank branch (its masks replayed in the recomputation),
// in fp32 and under bf16 autocast, for much less memory held between forward and backward.
#include <malloc.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/model/llama.h"
#include "worker/model/torch_compat.h"

namespace relora::model {
namespace {

// Bytes the allocator has handed out and not yet had back (heap and mmap()ed blocks): after the
// forward, minus before it, this is what the graph keeps alive for the backward.
int64_t bytes_in_use() {
  const auto info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
}

struct Outcome {
  double loss = 0;
  std::vector<std::pair<std::string, torch::Tensor>> grads;
  int64_t held_after_forward = 0;
};

Outcome forward_backward(bool checkpoint, bool bf16) {
  LlamaConfig config;
  config.vocab_size = 512;
  config.hidden_size = 128;
  config.num_layers = 4;
  config.num_heads = 4;
  config.intermediate_size = 344;
  config.max_seq_len = 128;
  Llama model(config);
  model->init_weights(5);
  model->enable_lora({/*rank=*/8, /*alpha=*/16, /*dropout=*/0.1}, /*seed=*/3);
  auto dropout_gen = compat::make_cpu_generator(9);
  auto draws = compat::make_cpu_generator(10);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, linear] : model->relora_linears()) {
      linear->set_dropout_generator(dropout_gen);
      linear->lora_B.normal_(0.0, 0.02, draws);  // B != 0: A gets gradients too
    }
  }
  model->train();
  model->set_activation_checkpointing(checkpoint);
  const auto ids = torch::randint(0, config.vocab_size, {4, 128}, draws, torch::kLong);  // [B, T]
  dropout_gen.set_current_seed(11);
  Outcome run;
  {
    if (bf16) compat::set_bf16_autocast(/*cuda=*/false, true);
    const int64_t before = bytes_in_use();
    auto loss = model->loss(ids);
    run.held_after_forward = bytes_in_use() - before;
    loss.backward();
    run.loss = loss.item<double>();
    if (bf16) compat::set_bf16_autocast(/*cuda=*/false, false);
  }
  for (const auto& [name, p] : model->trainable_parameters()) {
    EXPECT_TRUE(p.grad().defined()) << name << (checkpoint ? " (checkpointed)" : "");
    if (p.grad().defined()) run.grads.emplace_back(name, p.grad().clone());
  }
  return run;
}

TEST(ModelActivationCheckpointing, SameLossAndGradientsWithDropoutForLessMemory) {
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16 autocast" : "fp32");
    const Outcome plain = forward_backward(false, bf16);
    const Outcome checkpointed = forward_backward(true, bf16);
    // The forward is the same arithmetic: the loss is bit-identical.
    EXPECT_EQ(checkpointed.loss, plain.loss);
    ASSERT_EQ(checkpointed.grads.size(), plain.grads.size());
    for (size_t i = 0; i < plain.grads.size(); ++i) {
      const auto& [name, g] = plain.grads[i];
      const double scale = g.abs().max().item<double>();
      EXPECT_GT(scale, 0.0) << name;
      // Only the order in which a residual's two gradient contributions are added can differ.
      EXPECT_LE((checkpointed.grads[i].second - g).abs().max().item<double>(), 1e-5 * scale) << name;
    }
    std::printf("[activation checkpointing, %s] held between forward and backward: %.2f MiB plain, %.2f MiB "
                "checkpointed (%.2fx less)\n",
                bf16 ? "bf16" : "fp32", plain.held_after_forward / 1048576.0,
                checkpointed.held_after_forward / 1048576.0,
                static_cast<double>(plain.held_after_forward) / static_cast<double>(checkpointed.held_after_forward));
    EXPECT_LT(checkpointed.held_after_forward * 2, plain.held_after_forward);
  }
}

}  // namespace
}  // namespace relora::model
