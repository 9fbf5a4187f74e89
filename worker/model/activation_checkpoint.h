// Activation checkpointing of decoder blocks (training.activation_checkpointing).
//
// A block's forward runs without recording a graph: only its input x [B, T, C] is kept. The
// backward runs the block's forward again (with grad), back-propagates the incoming gradient
// through that recomputed graph (which accumulates the block's parameter gradients, as the plain
// graph would) and hands x's gradient on. Memory: one [B, T, C] tensor per block instead of every
// activation of every block, plus one block's activations while it is recomputed. Compute: one
// more forward of the blocks.
//
// The recomputation must be the same arithmetic as the forward: the autocast state of the forward
// is restored around it (the backward may run on another thread, as CUDA's does), and the dropout
// generator is rewound to its state before the block's forward, so every mask is drawn again
// bit for bit; afterwards it is put back where the forward sequence left it.
#pragma once

#include <optional>

#include <ATen/core/Generator.h>
#include <torch/types.h>

namespace relora::model {

class BlockImpl;

// block(x, cos, sin) with the block's activations recomputed in the backward. `dropout_gen`: the
// generator the block's dropout draws from (none: the block draws nothing random). The block must
// outlive the graph (the model owns it). x [B, T, C], cos/sin [T, D] -> [B, T, C].
torch::Tensor checkpointed_block(BlockImpl* block, const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin, const std::optional<at::Generator>& dropout_gen);

}  // namespace relora::model
