#include "worker/train/update_spectrum.h"

#include <torch/torch.h>

#include "worker/model/torch_compat.h"

namespace relora::train {

UpdateSpectrum update_spectrum(const torch::Tensor& current, const torch::Tensor& reference,
                               double relative_threshold) {
  torch::NoGradGuard no_grad;
  auto delta = current.detach().to(torch::kCPU, torch::kFloat64) - reference.detach().to(torch::kCPU, torch::kFloat64);
  auto sv = model::compat::singular_values(delta).contiguous();  // [min(out, in)] descending
  UpdateSpectrum out;
  out.singular_values.assign(sv.data_ptr<double>(), sv.data_ptr<double>() + sv.numel());
  const double sigma_max = out.singular_values.empty() ? 0.0 : out.singular_values.front();
  out.threshold = relative_threshold * sigma_max;
  if (sigma_max > 0)
    for (double s : out.singular_values) out.rank_above_threshold += s > out.threshold ? 1 : 0;
  return out;
}

}  // namespace relora::train
