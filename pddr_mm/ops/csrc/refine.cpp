// PD-B's refinement module (refine.py: mean over H, W -> fc1 -> ReLU -> fc2 -> softmax) for CPU inference.
//
// At batch 1 every PD-B layer runs these five ops right after the previous layer's convolution has pushed
// their code and data out of cache: each torch op then costs 100-200 us instead of its few us in a loop,
// about 2.5 ms per deployed ResNet-18 forward. These plain loops touch little code. The weights feed the
// per-sample kernels, so the sums are accumulated in double: rounding stays far below the fused-vs-
// unfused tolerance.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

template <typename T>
void pool(const T* x, int64_t rows, int64_t hw, T* pooled) {
  // rows of one channel each; enough per task that small maps do not wake the other threads
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = x + r * hw;
      double acc = 0;
      _Pragma("omp simd reduction(+ : acc)")
      for (int64_t e = 0; e < hw; ++e) acc += row[e];
      pooled[r] = T(acc / double(hw));
    }
  });
}

// out[j] = b[j] + w[j] . v, w (rows, cols)
template <typename T>
void linear(const T* v, const T* w, const T* b, int64_t rows, int64_t cols, double* out) {
  for (int64_t j = 0; j < rows; ++j) {
    const T* wj = w + j * cols;
    double acc = 0;
    _Pragma("omp simd reduction(+ : acc)")
    for (int64_t i = 0; i < cols; ++i) acc += double(wj[i]) * double(v[i]);
    out[j] = acc + double(b[j]);
  }
}

template <typename T>
void weights(const T* x, int64_t n, int64_t c, int64_t hw, const T* w1, const T* b1, int64_t hidden, const T* w2,
             const T* b2, int64_t nb, T* out) {
  std::vector<T> pooled(n * c), h(hidden);
  std::vector<double> acc(std::max(hidden, nb));
  pool(x, n * c, hw, pooled.data());
  for (int64_t s = 0; s < n; ++s) {
    linear(pooled.data() + s * c, w1, b1, hidden, c, acc.data());
    for (int64_t j = 0; j < hidden; ++j) h[j] = T(std::max(acc[j], 0.0));
    linear(h.data(), w2, b2, nb, hidden, acc.data());
    const double top = *std::max_element(acc.begin(), acc.begin() + nb);
    double total = 0;
    for (int64_t j = 0; j < nb; ++j) total += (acc[j] = std::exp(acc[j] - top));
    for (int64_t j = 0; j < nb; ++j) out[s * nb + j] = T(acc[j] / total);
  }
}

at::Tensor refine_weights(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                          const at::Tensor& b2) {
  TORCH_CHECK(x.dim() == 4 && !x.is_cuda() && x.is_contiguous(), "x must be a contiguous CPU (N, C, H, W) tensor");
  const int64_t n = x.size(0), c = x.size(1), hidden = w1.size(0), nb = w2.size(0);
  TORCH_CHECK(w1.dim() == 2 && w1.size(1) == c && b1.dim() == 1 && b1.size(0) == hidden, "fc1 must be (hidden, C)");
  TORCH_CHECK(w2.dim() == 2 && w2.size(1) == hidden && b2.dim() == 1 && b2.size(0) == nb, "fc2 must be (branches, hidden)");
  for (const auto* t : {&w1, &b1, &w2, &b2})
    TORCH_CHECK(t->is_contiguous() && !t->is_cuda() && t->scalar_type() == x.scalar_type(),
                "fc weights must be contiguous CPU tensors of x's dtype");
  auto out = at::empty({n, nb}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "refine_weights", [&] {
    weights(x.data_ptr<scalar_t>(), n, c, x.size(2) * x.size(3), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
            hidden, w2.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), nb, out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

void register_refine(pybind11::module& m) {
  m.def("refine_weights", &refine_weights, "PD-B refinement: softmax(fc2(relu(fc1(mean_hw(x))))) (CPU inference)");
}
