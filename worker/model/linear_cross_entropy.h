// The LM head and the cross-entropy loss as one chunked operation: NLL of `targets` under
// softmax(h W^T), computed block by block so that the [N, V] logits, log-probabilities and their
// gradients never exist whole (at vocab 32100 and 1024 tokens the whole logits are 131 MB in
// fp32, and linear + log_softmax + nll_loss keep three such tensors alive through backward).
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace relora::model {

// h [N, C], w [V, C], targets [N] int64 -> scale * (sum of the N token NLLs) [] (fp32, or fp64
// for fp64 inputs). Under grad mode, with h or w requiring gradients, it is differentiable in h
// and w (the gradients are computed in the same pass over each block and handed over by
// backward); otherwise a plain evaluation. Same arithmetic as linear + log_softmax + nll_loss:
// the matrix products in the dtype autocast chooses, the softmax in fp32 for bf16/fp16.
// RELORA_LOSS_BLOCK_ELEMENTS overrides the block size (tests use it to exercise several blocks).
torch::Tensor linear_cross_entropy(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& targets,
                                   double scale);

}  // namespace relora::model
