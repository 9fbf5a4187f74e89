#include "worker/model/relora_linear.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/nn/init.h>
#include <torch/version.h>
#include <torch/utils.h>

#include "worker/model/bf16_rounding.h"
#include "worker/model/fused_cpu_ops.h"
#include "worker/model/torch_compat.h"

namespace relora::model {

ReloraLinearImpl::ReloraLinearImpl(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features < 1 || out_features < 1) {
    throw std::invalid_argument("ReloraLinear: in_features and out_features must be >= 1");
  }
  reset();
}

void ReloraLinearImpl::reset() {
  // reset() also runs on the copy inside Cloneable::clone(), where the copied members still hold
  // the original's tensors: it must re-register exactly the parameters the original has (the
  // values are copied over afterwards), including the branch when it exists.
  if (shards_) throw std::logic_error("ReloraLinear: a layer whose W is sharded cannot be cloned or reset");
  const bool had_branch = lora_A.defined();
  const int64_t rank = had_branch ? lora_A.size(0) : 0;

  weight = register_parameter("weight", torch::empty({out_features_, in_features_}));  // [out, in]
  // nn.Linear's default init; LlamaImpl::init_weights overwrites it with a seeded one.
  torch::nn::init::kaiming_uniform_(weight, /*a=*/std::sqrt(5.0));

  if (had_branch) {
    weight.requires_grad_(false);
    lora_A = register_parameter("lora_A", torch::empty({rank, in_features_}));   // [r, in]
    lora_B = register_parameter("lora_B", torch::zeros({out_features_, rank}));  // [out, r]
  }
}

#if TORCH_VERSION_MAJOR < 2
namespace {

// The low-rank layer as one autograd node (CPU, LibTorch 1.13): y = x W^T + s (x A^T) B^T with W
// frozen. Forward adds the branch by an in-place GEMM into x W^T; backward accumulates the input
// gradient of both paths in one buffer (dx = dy W, then dx += (s dy B) A by a beta = 1 GEMM), so
// neither direction has a separate pass to add the branch. Products run in bf16 under CPU
// autocast (as autocast's linear would), in the tensors' own dtype otherwise.
class ReloraLinearFunction : public torch::autograd::Function<ReloraLinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x2,
                               const torch::Tensor& w, const torch::Tensor& a, const torch::Tensor& b,
                               double scale) {
    const auto cd = at::autocast::is_cpu_enabled() ? at::autocast::get_autocast_cpu_dtype() : x2.scalar_type();
    auto xc = x2.to(cd), wc = w.to(cd), ac = a.to(cd), bc = b.to(cd);
    auto y = torch::mm(xc, wc.t());          // [N, out]
    auto xa = torch::mm(xc, ac.t());         // [N, r]
    y.addmm_(xa, bc.t(), /*beta=*/1.0, /*alpha=*/scale);
    // W, A and B are saved as the parameters themselves and cast again in the backward: saving the
    // casts would keep a bf16 copy of every factor (and of an fp32 W) alive from each layer's
    // forward to its backward (0.2 GiB of factors at 1b3; a whole second W for an fp32 W).
    ctx->save_for_backward({xc, w, a, b, xa});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["x_type"] = static_cast<int64_t>(x2.scalar_type());
    ctx->saved_data["ab_type"] = static_cast<int64_t>(a.scalar_type());
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const auto& xc = saved[0];
    const auto& xa = saved[4];
    const auto cd = xc.scalar_type();  // the products' dtype
    const auto wc = saved[1].to(cd), ac = saved[2].to(cd), bc = saved[3].to(cd);
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto x_type = static_cast<torch::ScalarType>(ctx->saved_data["x_type"].toInt());
    const auto ab_type = static_cast<torch::ScalarType>(ctx->saved_data["ab_type"].toInt());
    auto g = grad_outputs[0].to(xc.scalar_type()).contiguous();  // [N, out]
    auto gxa = torch::mm(g, bc);                                // [N, r], times s below via alpha
    torch::Tensor dx, da, db;
    if (ctx->needs_input_grad(0)) {
      dx = torch::mm(g, wc);                                     // [N, in]
      dx.addmm_(gxa, ac, /*beta=*/1.0, /*alpha=*/scale);
      dx = dx.to(x_type);
    }
    if (ctx->needs_input_grad(2)) da = torch::mm(gxa.t(), xc).mul_(scale).to(ab_type);  // [r, in]
    if (ctx->needs_input_grad(3)) db = torch::mm(g.t(), xa).mul_(scale).to(ab_type);    // [out, r]
    return {dx, torch::Tensor(), da, db, torch::Tensor()};
  }
};

}  // namespace
#endif

namespace {

// The frozen W as a product with x needs it. Autocast casts its own operands (a bf16 W is then
// used as it is: no copy); outside autocast a W stored in another dtype than x (bf16 W, fp32
// evaluation) is cast for this product only.
torch::Tensor frozen_operand(const torch::Tensor& w, const torch::Tensor& x) {
  if (w.scalar_type() == x.scalar_type() || compat::autocast_enabled(x.device())) return w;
  return w.to(x.scalar_type());
}

// Salt that keeps a merge's rounding bits apart from the A it draws from the same seed.
constexpr uint64_t kRoundingSeedSalt = 0xbb67ae8584caa73bULL;

// y = x W^T for a frozen W of which this process keeps only some rows. The whole W is gathered for
// the product and dropped with it, and gathered again in the backward for dx = dy W: nothing of W
// is saved between the two (nor of x: a frozen W has no gradient). Products run in the dtype
// autocast gives them (bf16 under CPU or CUDA autocast), as torch::linear's would.
class ShardedFrozenProduct : public torch::autograd::Function<ShardedFrozenProduct> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x2,
                               ReloraLinearImpl* layer) {
    // The layer outlives every graph built through it (the model owns it), so the backward may
    // reach it through a plain address.
    ctx->saved_data["layer"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(layer));
    ctx->saved_data["x_type"] = static_cast<int64_t>(x2.scalar_type());
    return torch::linear(x2, frozen_operand(layer->full_weight(), x2));  // [N, out]
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto* layer = reinterpret_cast<ReloraLinearImpl*>(static_cast<intptr_t>(ctx->saved_data["layer"].toInt()));
    const auto x_type = static_cast<torch::ScalarType>(ctx->saved_data["x_type"].toInt());
    const auto& g = grad_outputs[0];  // [N, out], in the forward product's dtype
    auto w = layer->full_weight();    // gathered again: a collective, in the same order on every holder
    auto dx = torch::mm(g.contiguous(), w.to(g.scalar_type())).to(x_type);  // [N, in]
    return {dx, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor ReloraLinearImpl::forward(const torch::Tensor& x) {
  if (!lora_enabled()) return torch::linear(x, weight);  // [..., out]
#if TORCH_VERSION_MAJOR < 2
  const bool drop_now = dropout_ > 0.0 && is_training();
  // W may be stored in autocast's dtype (a bf16 frozen W): the function then uses it uncopied.
  const bool w_ok = x.scalar_type() == weight.scalar_type() ||
                    (at::autocast::is_cpu_enabled() && weight.scalar_type() == at::autocast::get_autocast_cpu_dtype());
  if (!drop_now && !shards_ && cpu_fast_paths() && x.device().is_cpu() && !weight.requires_grad() && w_ok &&
      lora_A.scalar_type() == x.scalar_type() && lora_B.scalar_type() == x.scalar_type()) {
    auto out_sizes = x.sizes().vec();
    out_sizes.back() = out_features_;
    auto y = ReloraLinearFunction::apply(x.reshape({-1, in_features_}), weight, lora_A, lora_B, scale_);
    return y.view(out_sizes);  // [..., out]
  }
#endif
  // Flattened to [N, in] so that the branch can be added by one in-place GEMM (beta = 1) into the
  // frozen product's output: no separate [N, out] branch tensor, no extra pass to add it, and s is
  // applied to the small [N, r] tensor rather than to [N, out] (forward and backward).
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = out_features_;
  auto x2 = x.reshape({-1, in_features_});  // [N, in] (a view when x is contiguous)
  // [N, out]; neither product's backward reads y: safe to add in place.
  auto y = shards_ ? ShardedFrozenProduct::apply(x2, this) : torch::linear(x2, frozen_operand(weight, x2));
  // Dropout applies to the branch's input only; skip the copy when it would be the identity.
  const bool drop = dropout_ > 0.0 && is_training();
  const auto& xd = drop ? apply_dropout(x2) : x2;  // [N, in]
  auto xa = torch::linear(xd, lora_A).mul_(scale_);                        // [N, r]
  // Under autocast y and xa are bf16 while B is the fp32 master: in-place ops are not autocast.
  const auto& b = lora_B.scalar_type() == y.scalar_type() ? lora_B : lora_B.to(y.scalar_type());
  y.addmm_(xa, b.t());  // y += s (x A^T) B^T
  return y.view(out_sizes);  // [..., out]
}

// Inverted dropout as ATen's dropout computes it (a Bernoulli(1 - p) mask scaled by 1 / (1 - p)),
// drawn from this layer's generator when it has one.
torch::Tensor ReloraLinearImpl::apply_dropout(const torch::Tensor& x) const {
  if (!dropout_gen_) return torch::dropout(x, dropout_, /*train=*/true);
  torch::Tensor keep;
  {
    torch::NoGradGuard no_grad;
    keep = torch::empty_like(x).bernoulli_(1.0 - dropout_, *dropout_gen_).div_(1.0 - dropout_);
  }
  return x * keep;
}

void ReloraLinearImpl::enable_lora(const LoraOptions& options, uint64_t seed) {
  if (lora_enabled()) {
    throw std::logic_error("ReloraLinear::enable_lora: the low-rank branch already exists");
  }
  const int64_t max_rank = std::min(in_features_, out_features_);
  if (options.rank < 1 || options.rank > max_rank) {
    throw std::invalid_argument("ReloraLinear::enable_lora: rank " + std::to_string(options.rank) +
                                " outside [1, min(in, out) = " + std::to_string(max_rank) + "]");
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    throw std::invalid_argument("ReloraLinear::enable_lora: dropout must be in [0, 1)");
  }
  scale_ = options.alpha / static_cast<double>(options.rank);
  dropout_ = options.dropout;

  // Branch tensors follow W's dtype and device (the model may already sit on a GPU).
  const auto opts = weight.options().requires_grad(false);
  lora_A = register_parameter("lora_A", torch::empty({options.rank, in_features_}, opts));  // [r, in]
  lora_B = register_parameter("lora_B", torch::zeros({out_features_, options.rank}, opts));  // [out, r]
  draw_lora_A(seed);
  weight.requires_grad_(false);  // only the factors train from now on
  if (options.frozen_dtype && *options.frozen_dtype != weight.scalar_type()) {
    torch::NoGradGuard no_grad;
    // set_data keeps the parameter object (module list, optimizer references) and frees the old
    // storage: the wider W never coexists with more than one layer's narrower copy. (set_ would
    // keep the old dtype on the new bytes.)
    weight.set_data(weight.to(*options.frozen_dtype));
  }
}

void ReloraLinearImpl::merge_and_reinit(uint64_t seed) {
  if (!lora_enabled()) return;
  torch::NoGradGuard no_grad;
  // In place, so that optimizer and DDP references to W, A, B stay valid.
  const RowRange rows = weight_rows();
  if (weight.scalar_type() == torch::kBFloat16) {
    // fp32 for this layer only (transient), rounded back stochastically: unbiased, so updates
    // below half an ulp accumulate over merges instead of vanishing (bf16_rounding.h). The bits
    // follow the element's index in the whole W: a sharded holder rounds its rows as a whole W
    // would be rounded.
    auto merged = weight.to(torch::kFloat).add_(lora_delta(rows));  // [rows, in]
    weight.copy_(round_to_bf16_stochastic(merged, seed ^ kRoundingSeedSalt, rows.begin * in_features_));
  } else {
    weight.add_(lora_delta(rows).to(weight.scalar_type()));
  }
  draw_lora_A(seed);
  lora_B.zero_();
}

torch::Tensor ReloraLinearImpl::lora_delta() const { return lora_delta({0, out_features_}); }

torch::Tensor ReloraLinearImpl::lora_delta(RowRange rows) const {
  torch::NoGradGuard no_grad;
  if (!lora_enabled()) {
    return torch::zeros({rows.size(), in_features_}, weight.options().dtype(torch::kFloat));
  }
  // fp32 even when the factors are bf16: the product is what gets folded into the master W.
  const auto b = lora_B.slice(0, rows.begin, rows.end).to(torch::kFloat);  // [rows, r]
  return torch::matmul(b, lora_A.to(torch::kFloat)).mul_(scale_);          // [rows, in]
}

torch::Tensor ReloraLinearImpl::merged_weight() {
  torch::NoGradGuard no_grad;
  // Always a fresh fp32 tensor, never an alias of the live W.
  auto w = full_weight().to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);  // [out, in]
  if (lora_enabled()) w.add_(lora_delta());
  return w;
}

void ReloraLinearImpl::shard_weight(std::shared_ptr<FrozenWeightShards> shards) {
  if (!lora_enabled())
    throw std::logic_error("ReloraLinear::shard_weight: W trains without the low-rank branch; only a frozen W is sharded");
  if (shards_) throw std::logic_error("ReloraLinear::shard_weight: W is already sharded");
  const RowRange rows = shards->rows_kept(out_features_);
  torch::NoGradGuard no_grad;
  // set_ keeps the parameter itself (the module's list and every reference to it stay valid) and
  // lets the other rows' storage go.
  weight.set_(weight.slice(0, rows.begin, rows.end).clone());  // [rows, in]
  row_begin_ = rows.begin;
  shards_ = std::move(shards);
}

RowRange ReloraLinearImpl::weight_rows() const {
  return shards_ ? RowRange{row_begin_, row_begin_ + weight.size(0)} : RowRange{0, out_features_};
}

torch::Tensor ReloraLinearImpl::full_weight() {
  if (!shards_) return weight;
  torch::NoGradGuard no_grad;
  return shards_->gather(weight, out_features_);  // [out, in]
}

void ReloraLinearImpl::draw_lora_A(uint64_t seed) {
  torch::NoGradGuard no_grad;
  // kaiming_uniform(a = sqrt(5)) on A [r, in]: gain = sqrt(2 / (1 + 5)), bound = gain *
  // sqrt(3 / fan_in) = 1 / sqrt(in). Drawn in fp32 on the CPU from a private generator, then
  // copied, so every device and every rank given the same seed ends with bit-identical A.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
  auto gen = compat::make_cpu_generator(seed);
  auto a = torch::empty(lora_A.sizes(), torch::kFloat).uniform_(-bound, bound, gen);  // [r, in]
  lora_A.copy_(a);
}

}  // namespace relora::model
