#include "worker/model/rotary.h"

#include <stdexcept>

namespace relora::model {

std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t max_seq_len, int64_t head_dim,
                                                      double theta) {
  if (head_dim < 2 || head_dim % 2 != 0) {
    throw std::invalid_argument("rotary_tables: head_dim must be even and >= 2");
  }
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  // inv_freq[i] = theta^(-2i/D), i = 0 .. D/2-1                               [D/2]
  auto inv_freq = torch::pow(theta, torch::arange(0, head_dim, 2, f64) / double(head_dim)).reciprocal();
  auto positions = torch::arange(max_seq_len, f64);                          // [S]
  auto angles = torch::outer(positions, inv_freq);                           // [S, D/2]
  auto emb = torch::cat({angles, angles}, /*dim=*/-1);                       // [S, D]
  return {emb.cos().to(torch::kFloat), emb.sin().to(torch::kFloat)};
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);     // [..., D/2]
  auto x2 = x.narrow(-1, half, half);  // [..., D/2]
  return torch::cat({-x2, x1}, /*dim=*/-1);
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin) {
  // Tables are cast to x's dtype (as HF does) so a bf16 model stays bf16.
  auto c = cos.to(x.scalar_type());  // [T, D]
  auto s = sin.to(x.scalar_type());  // [T, D]
  return x * c + rotate_half(x) * s;
}

}  // namespace relora::model
