#include "worker/model/linear_cross_entropy.h"

#include "worker/model/torch_compat.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <tuple>

#include <torch/autograd.h>
#include <torch/torch.h>

namespace relora::model {
namespace {

torch::ScalarType accumulation_type(const torch::Tensor& x) {
  const auto t = x.scalar_type();
  return (t == torch::kBFloat16 || t == torch::kHalf) ? torch::kFloat : t;
}

// Rows of the [rows, V] logits block that the chunked head + cross-entropy holds at a time:
// about 32M elements (128 MB in fp32), at least one row. Fewer, larger blocks keep the head's
// matrix products efficient (each block re-packs W and re-reads the [V, C] weight gradient).
// RELORA_LOSS_BLOCK_ELEMENTS overrides the block size (tests use it to exercise several blocks).
int64_t loss_chunk_rows(int64_t rows, int64_t vocab) {
  int64_t elements = int64_t{1} << 25;
  if (const char* env = std::getenv("RELORA_LOSS_BLOCK_ELEMENTS")) elements = std::max<int64_t>(1, std::atoll(env));
  return std::max<int64_t>(1, std::min<int64_t>(rows, elements / std::max<int64_t>(1, vocab)));
}

// NLL of targets under softmax(h W^T), summed over rows (the caller divides for a mean), computed
// block by block so that the [N, V] logits, log-probabilities and their gradients never exist
// whole. When gradients are wanted they are computed in the same pass (d logits = softmax -
// one-hot, then d h = d logits W and d W = d logits^T h, block by block) and the backward only
// scales them by the incoming gradient. Same arithmetic as linear + log_softmax + nll_loss: the
// log-softmax in fp32 for bf16/fp16 products, matrix products in the dtype autocast chooses.
class LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
 public:
  // h [N, C], w [V, C], targets [N] int64, scale: multiplies the summed NLL (1/N for a mean).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h,
                               const torch::Tensor& w, const torch::Tensor& targets, double scale) {
    const bool need_h = h.requires_grad(), need_w = w.requires_grad();
    auto [loss, grad_h, grad_w] = run(h, w, targets, scale, need_h, need_w);
    ctx->save_for_backward({grad_h, grad_w});
    return loss;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const auto& g = grad_outputs[0];
    // The usual case (loss.backward() of the mean) hands the gradients over without a pass.
    const bool unit = g.numel() == 1 && g.item<double>() == 1.0;
    for (auto& t : saved) {
      if (t.defined() && !unit) t.mul_(g.to(t.scalar_type()));
    }
    return {saved[0], saved[1], torch::Tensor(), torch::Tensor()};
  }

  // Returns (scale * sum of NLL [] in fp32 or wider, grad_h [N, C] or undefined, grad_w [V, C] or undefined).
  static std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> run(const torch::Tensor& h,
                                                                     const torch::Tensor& w,
                                                                     const torch::Tensor& targets, double scale,
                                                                     bool need_h, bool need_w) {
    torch::NoGradGuard no_grad;
    // Under autocast the head is cast once for this call (its gradient is computed here), rather
    // than by autocast for each block's products and then kept in autocast's cache for the rest of
    // the step (0.12 GiB at 1b3).
    const torch::Tensor wm = compat::autocast_enabled(w.device()) && w.scalar_type() == torch::kFloat
                                 ? w.to(torch::kBFloat16)
                                 : w;  // [V, C]
    const int64_t N = h.size(0), C = h.size(1), V = w.size(0);
    const int64_t rows = loss_chunk_rows(N, V);
    torch::Tensor grad_h = need_h ? torch::empty({N, C}, h.options()) : torch::Tensor();
    torch::Tensor grad_w = need_w ? torch::empty({V, C}, w.options()) : torch::Tensor();
    torch::Tensor loss;
    for (int64_t r0 = 0; r0 < N; r0 += rows) {
      const int64_t n = std::min(rows, N - r0);
      auto hb = h.narrow(0, r0, n);                          // [n, C]
      auto logits = torch::mm(hb, wm.t());                   // [n, V], autocast may make it bf16
      const auto mm_type = logits.scalar_type();
      const bool reduced = mm_type != h.scalar_type() || mm_type != w.scalar_type();
      auto t = targets.narrow(0, r0, n).unsqueeze(1);        // [n, 1]
      if (!need_h && !need_w) {
        auto lp = torch::log_softmax(logits.to(accumulation_type(logits)), 1);  // [n, V]
        auto nll = lp.gather(1, t).sum().neg();                                // []
        loss = loss.defined() ? loss.add_(nll) : nll;
        continue;
      }
      // With gradients: one softmax pass gives both. NLL = -log p[target], which is exact while
      // p[target] is a normal float (NLL below ~87); rows beyond that (a diverging model) take
      // their NLL from the log-softmax of the logits instead.
      auto xl = logits.to(accumulation_type(logits));  // [n, V]
      logits = torch::Tensor();
      auto p = torch::softmax(xl, 1);                  // [n, V]
      auto pt = p.gather(1, t);                        // [n, 1]
      const double tiny = static_cast<double>(std::numeric_limits<float>::min());
      auto small = pt.le(tiny).squeeze(1);             // [n]
      auto nll = pt.log().sum().neg();
      if (small.any().item<bool>()) {
        auto rows_idx = small.nonzero().squeeze(1);
        auto exact = torch::log_softmax(xl.index_select(0, rows_idx), 1).gather(1, t.index_select(0, rows_idx));
        nll = pt.masked_fill(small.unsqueeze(1), 1.0).log().sum().neg() - exact.sum();
      }
      xl = torch::Tensor();
      loss = loss.defined() ? loss.add_(nll) : nll;
      // d(sum NLL)/d logits = softmax - one-hot.
      p.scatter_add_(1, t, torch::full({n, 1}, -1.0, p.options()));
      auto pg = p.to(mm_type);  // [n, V] in the matrix products' dtype
      p = torch::Tensor();
      if (need_h) {
        auto gh = grad_h.narrow(0, r0, n);  // [n, C], contiguous rows
        if (!reduced) {
          torch::mm_out(gh, pg, w);
          gh.mul_(scale);
        } else {
          gh.copy_(torch::mm(pg, wm)).mul_(scale);
        }
      }
      if (need_w) {
        if (!reduced) {
          // First block overwrites (beta = 0), later ones accumulate; the scale rides on alpha.
          grad_w.addmm_(pg.t(), hb, /*beta=*/r0 == 0 ? 0.0 : 1.0, /*alpha=*/scale);
        } else {
          auto part = torch::mm(pg.t(), hb);  // [V, C] bf16
          if (r0 == 0) torch::mul_out(grad_w, part, scale);
          else grad_w.add_(part, scale);
        }
      }
    }
    return {loss.mul_(scale), grad_h, grad_w};
  }
};

}  // namespace

torch::Tensor linear_cross_entropy(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& targets,
                                   double scale) {
  if (torch::GradMode::is_enabled() && (h.requires_grad() || w.requires_grad())) {
    return LinearCrossEntropy::apply(h, w, targets, scale);
  }
  return std::get<0>(LinearCrossEntropy::run(h, w, targets, scale, false, false));
}

}  // namespace relora::model
