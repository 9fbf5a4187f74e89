#include "worker/model/activation_checkpoint.h"

#include <mutex>

#include <torch/autograd.h>

#include "worker/model/llama.h"
#include "worker/model/torch_compat.h"

namespace relora::model {
namespace {

// Sets bf16 autocast for CPU and CUDA tensors as the forward had it, and back on destruction.
class AutocastAs {
 public:
  AutocastAs(bool cpu, bool cuda)
      : cpu_was_(compat::autocast_enabled(torch::kCPU)), cuda_was_(compat::autocast_enabled(torch::Device(torch::kCUDA, 0))),
        cpu_(cpu), cuda_(cuda) {
    if (cpu_ != cpu_was_) compat::set_bf16_autocast(/*cuda=*/false, cpu_);
    if (cuda_ != cuda_was_) compat::set_bf16_autocast(/*cuda=*/true, cuda_);
  }
  ~AutocastAs() {
    if (cpu_ != cpu_was_) compat::set_bf16_autocast(/*cuda=*/false, cpu_was_);
    if (cuda_ != cuda_was_) compat::set_bf16_autocast(/*cuda=*/true, cuda_was_);
  }
  AutocastAs(const AutocastAs&) = delete;
  AutocastAs& operator=(const AutocastAs&) = delete;

 private:
  bool cpu_was_, cuda_was_, cpu_, cuda_;
};

class CheckpointedBlock : public torch::autograd::Function<CheckpointedBlock> {
 public:
  // Runs with grad mode off (Function::apply): nothing of the block's graph is recorded.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, BlockImpl* block,
                               const torch::Tensor& cos, const torch::Tensor& sin,
                               const std::optional<at::Generator>& gen) {
    // The model owns the block and outlives every graph built through it.
    ctx->saved_data["block"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(block));
    ctx->saved_data["autocast_cpu"] = compat::autocast_enabled(torch::kCPU);
    ctx->saved_data["autocast_cuda"] = compat::autocast_enabled(torch::Device(torch::kCUDA, 0));
    if (gen) {
      at::Generator g = *gen;  // a handle to the same generator (mutex() is not const)
      std::lock_guard<std::mutex> lock(g.mutex());
      ctx->saved_data["gen"] = g;
      ctx->saved_data["gen_state"] = g.get_state();
    }
    ctx->save_for_backward({x, cos, sin});
    // A cast made here would carry no gradient: were the recomputation to reuse it from the
    // cache, its matrix (A, B) would get none.
    compat::AutocastCacheOff no_cache;
    return block->forward(x, cos, sin);  // [B, T, C]
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto* block = reinterpret_cast<BlockImpl*>(static_cast<intptr_t>(ctx->saved_data["block"].toInt()));
    const auto saved = ctx->get_saved_variables();
    auto x = saved[0].detach().requires_grad_(true);  // [B, T, C]
    torch::Tensor y;
    {
      AutocastAs autocast(ctx->saved_data["autocast_cpu"].toBool(), ctx->saved_data["autocast_cuda"].toBool());
      torch::AutoGradMode grad(true);
      if (ctx->saved_data.count("gen")) {
        // Rewind the dropout stream to where the forward drew this block's masks, recompute, and
        // put it back where the forward left it (later blocks' recomputations rewind on their own).
        auto gen = ctx->saved_data["gen"].toGenerator();
        torch::Tensor now;
        {
          std::lock_guard<std::mutex> lock(gen.mutex());
          now = gen.get_state();
          gen.set_state(ctx->saved_data["gen_state"].toTensor());
        }
        y = block->forward(x, saved[1], saved[2]);
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(now);
      } else {
        y = block->forward(x, saved[1], saved[2]);
      }
    }
    // Accumulates the block's parameter gradients into .grad, as the recorded graph would have.
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed_block(BlockImpl* block, const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin, const std::optional<at::Generator>& dropout_gen) {
  return CheckpointedBlock::apply(x, block, cos, sin, dropout_gen);
}

}  // namespace relora::model
