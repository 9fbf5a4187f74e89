// The bound a ReLoRA merge under bf16 autocast must respect, shared by the CPU test
// (tests/train/generic_path_test.cpp) and the GPU test (tests/gpu/gpu_train_test.cpp).
//
// Before the merge the layer computes bf16(x) bf16(W)^T + s (bf16(x) bf16(A)^T) bf16(B)^T, after it
// bf16(x) bf16(W')^T with W' = W + s B A in fp32: W, A, B and x A^T are rounded separately before,
// W' once after. With bf16's unit roundoff u = 2^-8 (8 significand bits) and products accumulated
// in fp32 (oneDNN on the CPU, cuBLAS on the GPU), each output differs by at most
//   2u (|x| (|W| + |W'| + s |B| |A|)^T)_j  +  u (|before_j| + |after_j|)
// (input roundings, then each output's own rounding to bf16). A bound relative to |before| alone
// cannot hold: outputs that are small by cancellation keep the absolute error of their terms
// (the H200 run failed such a check by 0.003 with |diff| = 0.0156, one bf16 ulp in [2, 4)).
#pragma once

#include <torch/torch.h>

namespace relora::testing {

// x [N, in]; w, w_merged [out, in]; a [r, in]; b [out, r]; before, after [N, out]. fp32 result.
inline torch::Tensor bf16_merge_error_bound(const torch::Tensor& x, const torch::Tensor& w,
                                            const torch::Tensor& w_merged, const torch::Tensor& a,
                                            const torch::Tensor& b, double scale, const torch::Tensor& before,
                                            const torch::Tensor& after) {
  constexpr double u = 1.0 / 256.0;
  auto f = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kFloat).abs(); };
  auto magnitude = f(w) + f(w_merged) + scale * torch::mm(f(b), f(a));  // [out, in]
  return 2 * u * torch::mm(f(x), magnitude.t()) + u * (f(before) + f(after));
}

}  // namespace relora::testing
