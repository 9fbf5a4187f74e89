#include "worker/model/fused_cpu_ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

namespace relora::model {
namespace {

template <typename T>
using acc_t = at::opmath_type<T>;

// RMSNorm over the last dimension: y = w * (x * inv), inv = 1 / sqrt(mean(x^2) + eps) per row.
class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& w_in, double eps) {
    auto x = x_in.contiguous();
    auto w = w_in.contiguous();
    const int64_t C = x.size(-1), N = x.numel() / C;
    auto y = torch::empty_like(x);
    torch::Tensor inv;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm_forward", [&] {
      using A = acc_t<scalar_t>;
      inv = torch::empty({N}, x.options().dtype(c10::CppTypeToScalarType<A>::value));
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* wp = w.data_ptr<scalar_t>();
      scalar_t* yp = y.data_ptr<scalar_t>();
      A* ip = inv.data_ptr<A>();
      at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* xr = xp + r * C;
          scalar_t* yr = yp + r * C;
          double ss = 0;
          for (int64_t j = 0; j < C; ++j) ss += double(A(xr[j])) * double(A(xr[j]));
          const A v = static_cast<A>(1.0 / std::sqrt(ss / double(C) + eps));
          ip[r] = v;
          for (int64_t j = 0; j < C; ++j) {
            const scalar_t normed = static_cast<scalar_t>(A(xr[j]) * v);  // cast back before w (as HF)
            yr[j] = static_cast<scalar_t>(A(wp[j]) * A(normed));
          }
        }
      });
    });
    ctx->save_for_backward({x, w, inv});
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto& inv = saved[2];
    auto g = grad_outputs[0].contiguous();
    const int64_t C = x.size(-1), N = x.numel() / C;
    auto gx = torch::empty_like(x);
    torch::Tensor gw;
    constexpr int64_t kRows = 32;  // rows per partial sum of the weight gradient (deterministic)
    const int64_t blocks = (N + kRows - 1) / kRows;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm_backward", [&] {
      using A = acc_t<scalar_t>;
      auto partial = torch::zeros({blocks, C}, x.options().dtype(c10::CppTypeToScalarType<A>::value));
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* wp = w.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      const A* ip = inv.data_ptr<A>();
      scalar_t* gxp = gx.data_ptr<scalar_t>();
      A* pp = partial.data_ptr<A>();
      at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          A* pw = pp + b * C;
          for (int64_t r = b * kRows; r < std::min(N, (b + 1) * kRows); ++r) {
            const scalar_t* xr = xp + r * C;
            const scalar_t* gr = gp + r * C;
            scalar_t* gxr = gxp + r * C;
            const A v = ip[r];
            A dot = 0;
            for (int64_t j = 0; j < C; ++j) {
              const A gj = A(gr[j]), xj = A(xr[j]);
              dot += gj * A(wp[j]) * xj;
              pw[j] += gj * xj * v;
            }
            const A k = v * v * v * dot / A(C);
            for (int64_t j = 0; j < C; ++j) gxr[j] = static_cast<scalar_t>(v * A(gr[j]) * A(wp[j]) - k * A(xr[j]));
          }
        }
      });
      gw = partial.sum(0).to(w.scalar_type());
    });
    return {gx, gw, torch::Tensor()};
  }
};

// Rotary embedding fused with the split into heads: x [B, T, H*D] -> [B, H, T, D] contiguous,
// y = x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1] on the halves of D.
class RotaryHeadsFunction : public torch::autograd::Function<RotaryHeadsFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin, int64_t heads) {
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["heads"] = heads;
    return run(x, cos, sin, heads, /*backward=*/false);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto gx = run(grad_outputs[0], saved[0], saved[1], ctx->saved_data["heads"].toInt(), /*backward=*/true);
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

  // forward: in [B, T, H*D] -> [B, H, T, D]; backward: in = d out [B, H, T, D] -> d x [B, T, H*D].
  static torch::Tensor run(const torch::Tensor& in_raw, const torch::Tensor& cos_in, const torch::Tensor& sin_in,
                           int64_t H, bool backward) {
    auto in = in_raw.contiguous();
    const int64_t B = in.size(0);
    const int64_t T = backward ? in.size(2) : in.size(1);
    const int64_t D = backward ? in.size(3) : in.size(2) / H;
    const int64_t C = H * D, half = D / 2;
    auto out = backward ? torch::empty({B, T, C}, in.options()) : torch::empty({B, H, T, D}, in.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.scalar_type(), "rotary_heads", [&] {
      using A = acc_t<scalar_t>;
      const auto table_type = c10::CppTypeToScalarType<A>::value;
      auto cos = cos_in.to(table_type).contiguous();  // [T, D]
      auto sin = sin_in.to(table_type).contiguous();  // [T, D]
      const A* cp = cos.data_ptr<A>();
      const A* sp = sin.data_ptr<A>();
      const scalar_t* ip = in.data_ptr<scalar_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      at::parallel_for(0, B * T, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / T, t = r % T;
          const A* c = cp + t * D;
          const A* s = sp + t * D;
          for (int64_t h = 0; h < H; ++h) {
            const int64_t flat = r * C + h * D;                // [B, T, H, D]
            const int64_t headed = ((b * H + h) * T + t) * D;  // [B, H, T, D]
            if (!backward) {
              const scalar_t* x = ip + flat;
              scalar_t* y = op + headed;
              for (int64_t i = 0; i < half; ++i) {
                const A x1 = A(x[i]), x2 = A(x[i + half]);
                y[i] = static_cast<scalar_t>(x1 * c[i] - x2 * s[i]);
                y[i + half] = static_cast<scalar_t>(x2 * c[i + half] + x1 * s[i + half]);
              }
            } else {
              const scalar_t* g = ip + headed;
              scalar_t* gx = op + flat;
              for (int64_t i = 0; i < half; ++i) {
                const A g1 = A(g[i]), g2 = A(g[i + half]);
                gx[i] = static_cast<scalar_t>(g1 * c[i] + g2 * s[i + half]);
                gx[i + half] = static_cast<scalar_t>(g2 * c[i + half] - g1 * s[i]);
              }
            }
          }
        }
      });
    });
    return out;
  }
};

}  // namespace

namespace {
std::atomic<bool>& fast_paths_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("RELORA_CPU_FAST_PATHS");
    return env == nullptr || std::string(env) != "0";
  }()};
  return flag;
}
}  // namespace

bool cpu_fast_paths() { return fast_paths_flag().load(std::memory_order_relaxed); }
void set_cpu_fast_paths(bool enabled) { fast_paths_flag().store(enabled); }

bool fused_cpu_kernels_apply(const torch::Tensor& x) {
  const auto t = x.scalar_type();
  return cpu_fast_paths() && x.device().is_cpu() && (t == torch::kFloat || t == torch::kDouble || t == torch::kBFloat16 ||
                                 t == torch::kHalf);
}

torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return RmsNormFunction::apply(x, w, eps);
}

torch::Tensor rotary_into_heads(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                int64_t heads) {
  return RotaryHeadsFunction::apply(x, cos, sin, heads);
}

}  // namespace relora::model
