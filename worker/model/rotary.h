// Rotary position embeddings (RoPE) in Hugging Face LLaMA's rotate-half layout.
//
// Dimension legend: S table length (max_seq_len), T sequence, D head dim, B batch, H heads.
// For pair index i < D/2 the frequency is inv_freq[i] = theta^(-2i/D); channel j and j + D/2 are
// rotated together by angle t * inv_freq[j mod D/2]:
//   out = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]   (halves of D)
// This is what transformers' LlamaRotaryEmbedding / apply_rotary_pos_emb compute, so exported
// q/k weights need no permutation to load there.
#pragma once

#include <utility>

#include <torch/types.h>

namespace relora::model {

// cos, sin tables [S, D] in fp32 (angles computed in fp64 first, then rounded once).
std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t max_seq_len, int64_t head_dim,
                                                      double theta);

// [..., D] -> [..., D]: [x1, x2] -> [-x2, x1].
torch::Tensor rotate_half(const torch::Tensor& x);

// x [B, H, T, D], cos/sin [T, D] (broadcast over B and H) -> [B, H, T, D] in x's dtype.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin);

}  // namespace relora::model
