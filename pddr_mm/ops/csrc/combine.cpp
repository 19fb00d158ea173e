// combine_parts on CPU in one pass over memory.
//
// The PDDR kernels are sums of coefficient x part, each part centred in the kxk window and, when
// grouped, on the block diagonal (see fusion.py). Written with torch ops, every part is one more pass
// over the whole (N, out, in, kh, kw) kernel, and the backward needs a kernel-sized product for the
// coefficient gradients: the work is memory traffic, not arithmetic. Here one output channel's row
// (in * kh * kw values, a few KB) is finished while it sits in L1: the forward reads every part once
// and writes the kernel once; the backward reads the gradient and the parts once, and writes the part
// gradients once, with the coefficient gradients as dot products on the way.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

// The row loops are compiled for AVX-512 and AVX2 as well, picked at load time by the CPU (GCC's
// function multiversioning): a build cached for one machine still runs on any other x86-64 CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define PDDR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PDDR_CLONES
#endif
#define PDDR_INLINE inline __attribute__((always_inline))

namespace {

// The op's kernel-sized outputs (kernels, part gradients) take their memory from here and give it back
// when freed. A training step makes the same tensors again every step, and glibc returns freed blocks of
// this size to the OS, so each fresh one cost a page fault per 4 KB on its first write: in a ResNet-50
// PD-A step the backward took 24-33 ms instead of 17-18 ms. Blocks are reused by exact size; at most
// kCachedBytes are kept unused, beyond that a freed block goes back to the OS.
class BlockPool {
 public:
  static constexpr size_t kCachedBytes = size_t(1) << 30;

  // never destroyed: a pooled tensor may be freed after static destruction at exit
  static BlockPool& instance() {
    static BlockPool* pool = new BlockPool();
    return *pool;
  }

  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    const size_t bytes = std::max<size_t>(64, c10::multiply_integers(sizes) * options.dtype().itemsize());
    return at::from_blob(take(bytes), sizes, [this, bytes](void* p) { give(p, bytes); }, options);
  }

  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : free_)
      for (void* p : entry.second) std::free(p);
    free_.clear();
    cached_ = 0;
  }

 private:
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        return p;
      }
    }
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
    return p;
  }

  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kCachedBytes) {
        free_[bytes].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

at::Tensor pooled_empty(std::vector<int64_t> sizes, const at::Tensor& like) {
  TORCH_CHECK(!like.is_cuda(), "pooled_empty is for CPU tensors");
  return BlockPool::instance().empty(sizes, like.options());
}

struct Geometry {
  int64_t groups, h, w, top, left, in_per_group, out_per_group, part_row;
  bool full(int64_t kh, int64_t kw) const { return h == kh && w == kw; }
  // offset of output channel o's first input channel in the dense (in, kh, kw) row
  int64_t base(int64_t o, int64_t kh, int64_t kw) const {
    return (groups > 1 ? (o / out_per_group) * in_per_group : 0) * kh * kw;
  }
};

template <typename T>
PDDR_INLINE void full_add(T* __restrict__ d, const T* __restrict__ s, T c, int64_t n) {
  _Pragma("omp simd")
  for (int64_t e = 0; e < n; ++e) d[e] += c * s[e];
}

// d = sum_k c[k] * parts[k] in one pass (zeros for no parts): the row is written once, not re-read per part
template <typename T>
PDDR_INLINE void dense_sum(T* __restrict__ d, const T* const* parts, const T* c, size_t count, int64_t n) {
  if (count == 0) {
    std::fill(d, d + n, T(0));
    return;
  }
  const T* __restrict__ p0 = parts[0];
  const T c0 = c[0];
  if (count == 1) {
    _Pragma("omp simd")
    for (int64_t e = 0; e < n; ++e) d[e] = c0 * p0[e];
    return;
  }
  const T* __restrict__ p1 = parts[1];
  const T c1 = c[1];
  if (count == 2) {
    _Pragma("omp simd")
    for (int64_t e = 0; e < n; ++e) d[e] = c0 * p0[e] + c1 * p1[e];
    return;
  }
  const T* __restrict__ p2 = parts[2];
  const T c2 = c[2];
  _Pragma("omp simd")
  for (int64_t e = 0; e < n; ++e) d[e] = c0 * p0[e] + c1 * p1[e] + c2 * p2[e];
  for (size_t k = 3; k < count; ++k) full_add(d, parts[k], c[k], n);
}

// grad_part += c * v (when grad_part is given), and returns v . part
template <typename T>
PDDR_INLINE T full_backward(const T* __restrict__ v, const T* __restrict__ part, T* __restrict__ grad_part, T c, int64_t n) {
  T acc = 0;
  if (grad_part) {
    _Pragma("omp simd reduction(+ : acc)")
    for (int64_t e = 0; e < n; ++e) {
      grad_part[e] += c * v[e];
      acc += v[e] * part[e];
    }
  } else {
    _Pragma("omp simd reduction(+ : acc)")
    for (int64_t e = 0; e < n; ++e) acc += v[e] * part[e];
  }
  return acc;
}

std::vector<Geometry> geometries(const std::vector<at::Tensor>& kernels, const std::vector<int64_t>& groups,
                                 int64_t in_channels, int64_t kh, int64_t kw) {
  TORCH_CHECK(kernels.size() == groups.size(), "one groups entry per part");
  std::vector<Geometry> geo;
  for (size_t p = 0; p < kernels.size(); ++p) {
    const auto& k = kernels[p];
    TORCH_CHECK(k.dim() == 4 && k.is_contiguous(), "parts must be contiguous (out, in / groups, h, w)");
    const int64_t g = groups[p], out = k.size(0), h = k.size(2), w = k.size(3);
    TORCH_CHECK(g >= 1 && out % g == 0 && in_channels % g == 0 && k.size(1) == in_channels / g,
                "part ", p, " does not match in_channels / groups");
    TORCH_CHECK(h <= kh && w <= kw && (kh - h) % 2 == 0 && (kw - w) % 2 == 0, "part ", p,
                " cannot be centred in the window");
    geo.push_back({g, h, w, (kh - h) / 2, (kw - w) / 2, in_channels / g, out / g, k.size(1) * h * w});
  }
  return geo;
}

// Calls op(index in the dense (in, kh, kw) row, index in the part's row) for every entry that a part
// smaller than the window occupies in output channel o's row, as count runs of len entries (evenly
// spaced where the part spans the window in one direction); the loops are written out for the run
// lengths of skeleton parts so that the compiler unrolls them. Full parts take the vectorized full_*.
template <typename Op>
PDDR_INLINE void runs(int64_t count, int64_t dst, int64_t dst_stride, int64_t len, Op&& op) {
  if (len == 1) {
    for (int64_t r = 0; r < count; ++r) op(dst + r * dst_stride, r);
  } else if (len == 3) {
    for (int64_t r = 0; r < count; ++r) {
      op(dst + r * dst_stride, 3 * r);
      op(dst + r * dst_stride + 1, 3 * r + 1);
      op(dst + r * dst_stride + 2, 3 * r + 2);
    }
  } else {
    for (int64_t r = 0; r < count; ++r)
      for (int64_t e = 0; e < len; ++e) op(dst + r * dst_stride + e, r * len + e);
  }
}

template <typename Op>
PDDR_INLINE void for_entries(const Geometry& g, int64_t o, int64_t kh, int64_t kw, Op&& op) {
  const int64_t base = g.base(o, kh, kw);
  if (g.w == kw) {  // full width (e.g. 1xk): h rows per input channel
    runs(g.in_per_group, base + g.top * kw, kh * kw, g.h * kw, op);
  } else if (g.h == kh) {  // full height (e.g. kx1): w entries in every window row
    runs(g.in_per_group * kh, base + g.left, kw, g.w, op);
  } else {
    for (int64_t i = 0; i < g.in_per_group; ++i)
      for (int64_t y = 0; y < g.h; ++y) {
        const int64_t dst = base + (i * kh + g.top + y) * kw + g.left, src = (i * g.h + y) * g.w;
        for (int64_t x = 0; x < g.w; ++x) op(dst + x, src + x);
      }
  }
}

void check_coefs(const std::vector<at::Tensor>& coefs, size_t num, int64_t n, int64_t out, at::ScalarType dtype) {
  TORCH_CHECK(coefs.size() == num, "one coefficient tensor per part");
  for (const auto& c : coefs)
    TORCH_CHECK(c.dim() == 2 && c.size(0) == n && c.size(1) == out && c.scalar_type() == dtype,
                "coefficients must be (N, out) tensors of the parts' dtype");
}

// forward over output channels [begin, end): every sample's row of out = sum of coefficient x part
template <typename T>
struct ForwardJob {
  T* dst;
  int64_t n, oc, row, kh, kw;
  const std::vector<Geometry>& geo;
  std::vector<const T*> src;
  std::vector<at::TensorAccessor<T, 2>> coef;
  std::vector<size_t> dense, rest;  // dense: ungrouped full-window parts, which cover the whole row
};

template <typename T>
PDDR_INLINE void forward_rows(const ForwardJob<T>& job, int64_t begin, int64_t end) {
  const auto& geo = job.geo;
  std::vector<const T*> rows(job.dense.size());
  std::vector<T> cs(job.dense.size());
  for (int64_t o = begin; o < end; ++o)
    for (int64_t s = 0; s < job.n; ++s) {
      T* d = job.dst + (s * job.oc + o) * job.row;
      for (size_t k = 0; k < job.dense.size(); ++k) {
        rows[k] = job.src[job.dense[k]] + o * job.row;
        cs[k] = job.coef[job.dense[k]][s][o];
      }
      dense_sum(d, rows.data(), cs.data(), job.dense.size(), job.row);
      for (size_t p : job.rest) {
        const T* part = job.src[p] + o * geo[p].part_row;
        const T cp = job.coef[p][s][o];
        if (geo[p].full(job.kh, job.kw))
          full_add(d + geo[p].base(o, job.kh, job.kw), part, cp, geo[p].part_row);
        else
          for_entries(geo[p], o, job.kh, job.kw, [&](int64_t i, int64_t j) { d[i] += cp * part[j]; });
      }
    }
}

PDDR_CLONES void forward_rows_clone(const ForwardJob<float>& job, int64_t begin, int64_t end) {
  forward_rows(job, begin, end);
}
PDDR_CLONES void forward_rows_clone(const ForwardJob<double>& job, int64_t begin, int64_t end) {
  forward_rows(job, begin, end);
}

// backward over output channels [begin, end): each part's gradient rows and its coefficients' gradients
template <typename T>
struct BackwardJob {
  const T* grad;
  int64_t n, oc, row, kh, kw;
  const std::vector<Geometry>& geo;
  std::vector<const T*> src;
  std::vector<at::TensorAccessor<T, 2>> coef;
  std::vector<T*> grad_part, grad_coef;  // null where not wanted
};

template <typename T>
PDDR_INLINE void backward_rows(const BackwardJob<T>& job, int64_t begin, int64_t end) {
  const auto& geo = job.geo;
  const int64_t kh = job.kh, kw = job.kw;
  for (int64_t o = begin; o < end; ++o)
    for (size_t p = 0; p < geo.size(); ++p) {
      if (!job.grad_part[p] && !job.grad_coef[p]) continue;
      const T* part = job.src[p] + o * geo[p].part_row;
      T* gp = job.grad_part[p] ? job.grad_part[p] + o * geo[p].part_row : nullptr;
      if (gp) std::fill(gp, gp + geo[p].part_row, T(0));
      for (int64_t s = 0; s < job.n; ++s) {
        const T* gs = job.grad + (s * job.oc + o) * job.row;
        const T cs = job.coef[p][s][o];
        T dot = 0;
        if (geo[p].full(kh, kw))
          dot = full_backward(gs + geo[p].base(o, kh, kw), part, gp, cs, geo[p].part_row);
        else if (gp)
          for_entries(geo[p], o, kh, kw, [&](int64_t i, int64_t j) {
            gp[j] += cs * gs[i];
            dot += gs[i] * part[j];
          });
        else
          for_entries(geo[p], o, kh, kw, [&](int64_t i, int64_t j) { dot += gs[i] * part[j]; });
        if (job.grad_coef[p]) job.grad_coef[p][s * job.oc + o] = dot;
      }
    }
}

PDDR_CLONES void backward_rows_clone(const BackwardJob<float>& job, int64_t begin, int64_t end) {
  backward_rows(job, begin, end);
}
PDDR_CLONES void backward_rows_clone(const BackwardJob<double>& job, int64_t begin, int64_t end) {
  backward_rows(job, begin, end);
}

// out: (N, out, in, kh, kw), contiguous; kernels[p]: (out, in / groups[p], h, w); coefs[p]: (N, out)
void combine_forward(at::Tensor out, const std::vector<at::Tensor>& kernels, const std::vector<at::Tensor>& coefs,
                     const std::vector<int64_t>& groups) {
  TORCH_CHECK(out.dim() == 5 && out.is_contiguous() && !out.is_cuda(), "out must be a contiguous CPU (N, out, in, kh, kw)");
  const int64_t n = out.size(0), oc = out.size(1), ic = out.size(2), kh = out.size(3), kw = out.size(4);
  const auto geo = geometries(kernels, groups, ic, kh, kw);
  check_coefs(coefs, kernels.size(), n, oc, out.scalar_type());
  for (const auto& k : kernels) TORCH_CHECK(k.size(0) == oc && k.scalar_type() == out.scalar_type(), "part shape/dtype");
  const int64_t row = ic * kh * kw;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "combine_forward", [&] {
    ForwardJob<scalar_t> job{out.data_ptr<scalar_t>(), n, oc, row, kh, kw, geo, {}, {}, {}, {}};
    for (size_t p = 0; p < kernels.size(); ++p) {
      job.src.push_back(kernels[p].data_ptr<scalar_t>());
      job.coef.push_back(coefs[p].accessor<scalar_t, 2>());
      (geo[p].groups == 1 && geo[p].full(kh, kw) ? job.dense : job.rest).push_back(p);
    }
    at::parallel_for(0, oc, 1, [&](int64_t begin, int64_t end) { forward_rows_clone(job, begin, end); });
  });
}

// returns (grad of every part or an undefined tensor, grad of every coefficient or an undefined tensor)
std::vector<std::vector<at::Tensor>> combine_backward(at::Tensor grad, const std::vector<at::Tensor>& kernels,
                                                      const std::vector<at::Tensor>& coefs,
                                                      const std::vector<int64_t>& groups,
                                                      const std::vector<bool>& want_kernel,
                                                      const std::vector<bool>& want_coef) {
  TORCH_CHECK(grad.dim() == 5 && grad.is_contiguous() && !grad.is_cuda(), "grad must be a contiguous CPU 5-d tensor");
  const int64_t n = grad.size(0), oc = grad.size(1), ic = grad.size(2), kh = grad.size(3), kw = grad.size(4);
  const auto geo = geometries(kernels, groups, ic, kh, kw);
  check_coefs(coefs, kernels.size(), n, oc, grad.scalar_type());
  TORCH_CHECK(want_kernel.size() == kernels.size() && want_coef.size() == kernels.size(), "one flag per part");
  std::vector<at::Tensor> grad_kernels, grad_coefs;
  for (size_t p = 0; p < kernels.size(); ++p) {
    grad_kernels.push_back(want_kernel[p] ? pooled_empty(kernels[p].sizes().vec(), kernels[p]) : at::Tensor());
    grad_coefs.push_back(want_coef[p] ? at::empty({n, oc}, grad.options()) : at::Tensor());
  }
  const int64_t row = ic * kh * kw;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "combine_backward", [&] {
    BackwardJob<scalar_t> job{grad.data_ptr<scalar_t>(), n, oc, row, kh, kw, geo, {}, {}, {}, {}};
    for (size_t p = 0; p < kernels.size(); ++p) {
      job.src.push_back(kernels[p].data_ptr<scalar_t>());
      job.coef.push_back(coefs[p].accessor<scalar_t, 2>());
      job.grad_part.push_back(want_kernel[p] ? grad_kernels[p].data_ptr<scalar_t>() : nullptr);
      job.grad_coef.push_back(want_coef[p] ? grad_coefs[p].data_ptr<scalar_t>() : nullptr);
    }
    at::parallel_for(0, oc, 1, [&](int64_t begin, int64_t end) { backward_rows_clone(job, begin, end); });
  });
  return {grad_kernels, grad_coefs};
}

// PD-B inference on CPU, one call per layer: sample s convolved with sum_p weights[s, branches[p]] x
// kernels[p], plus weights[s] . biases (+ bias). The kernels of buffer.size(0) samples are mixed per pass
// over the stored kernels, into the reused buffer. The same computation as the torch form in
// fusion.mixed_conv2d, without Python or torch's small ops (index, expand, mm) between its steps: at batch
// 1 each of those runs with its code cold after the previous layer's mixing and convolution, about 100 us
// apiece. Only the convolutions are torch ops. (The refinement module that gives the weights stays a
// Python module call, so that hooks on it see every forward.)
at::Tensor mixed_conv(const at::Tensor& x, const at::Tensor& weights, const std::vector<at::Tensor>& kernels,
                      const std::vector<int64_t>& groups, const std::vector<int64_t>& branches, const at::Tensor& biases,
                      const c10::optional<at::Tensor>& bias, at::Tensor buffer, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4 && !x.is_cuda(), "x must be a CPU (N, C, H, W) tensor");
  TORCH_CHECK(buffer.dim() == 5 && buffer.is_contiguous() && buffer.scalar_type() == x.scalar_type(),
              "the buffer must be a contiguous (chunk, out, in, kh, kw) tensor of x's dtype");
  const int64_t n = x.size(0), oc = buffer.size(1), row = buffer.size(2) * buffer.size(3) * buffer.size(4);
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == n && weights.is_contiguous() &&
                  weights.scalar_type() == x.scalar_type(),
              "weights must be a contiguous (N, branches) tensor of x's dtype");
  const int64_t nb = weights.size(1);
  TORCH_CHECK(branches.size() == kernels.size(), "one branch index per part");
  for (int64_t b : branches) TORCH_CHECK(b >= 0 && b < nb, "branch index out of range");
  TORCH_CHECK(biases.dim() == 2 && biases.size(0) == nb && biases.size(1) == oc && biases.is_contiguous() &&
                  biases.scalar_type() == x.scalar_type(),
              "biases must be a contiguous (branches, out) tensor of x's dtype");
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias)
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == oc && bias->is_contiguous() &&
                    bias->scalar_type() == x.scalar_type(),
                "bias must be a contiguous (out, ) tensor of x's dtype");
  const int64_t chunk = buffer.size(0);
  TORCH_CHECK(chunk >= 1, "the buffer must hold at least one kernel");
  std::vector<at::Tensor> parts;  // a model in channels_last memory format has strided kernels
  for (const auto& k : kernels) parts.push_back(k.contiguous());
  const auto options = x.options();
  const int64_t item = x.element_size();
  auto sample_bias = at::empty({n, oc}, options);
  std::vector<at::Tensor> outs;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixed_conv", [&] {
    const scalar_t* w = weights.data_ptr<scalar_t>();
    const scalar_t* bs = biases.data_ptr<scalar_t>();
    const scalar_t* own = has_bias ? bias->data_ptr<scalar_t>() : nullptr;
    scalar_t* sb = sample_bias.data_ptr<scalar_t>();
    for (int64_t s = 0; s < n; ++s)
      for (int64_t o = 0; o < oc; ++o) {
        scalar_t acc = own ? own[o] : scalar_t(0);
        for (int64_t b = 0; b < nb; ++b) acc += w[s * nb + b] * bs[b * oc + o];
        sb[s * oc + o] = acc;
      }
    // part p's coefficient for sample s is the weight of its branch, the same for every output channel
    std::vector<scalar_t> coef(parts.size() * chunk);
    char* kernel_base = static_cast<char*>(buffer.data_ptr());
    for (int64_t start = 0; start < n; start += chunk) {
      const int64_t m = std::min(chunk, n - start);
      std::vector<at::Tensor> coefs;
      for (size_t p = 0; p < parts.size(); ++p) {
        for (int64_t s = 0; s < m; ++s) coef[p * chunk + s] = w[(start + s) * nb + branches[p]];
        coefs.push_back(at::from_blob(coef.data() + p * chunk, {m, oc}, {1, 0}, options));
      }
      combine_forward(at::from_blob(kernel_base, {m, oc, buffer.size(2), buffer.size(3), buffer.size(4)}, options),
                      parts, coefs, groups);
      for (int64_t s = 0; s < m; ++s) {
        const auto kernel = at::from_blob(kernel_base + s * oc * row * item,
                                          {oc, buffer.size(2), buffer.size(3), buffer.size(4)}, options);
        const auto b = at::from_blob(sb + (start + s) * oc, {oc}, options);
        outs.push_back(at::conv2d(n == 1 ? x : x.narrow(0, start + s, 1), kernel, b, stride, padding, dilation));
      }
    }
  });
  return outs.size() == 1 ? outs[0] : at::cat(outs);
}

}  // namespace

void register_refine(pybind11::module& m);  // refine.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_refine(m);
  m.def("combine_forward", &combine_forward, "sum of coefficient x part into dense per-sample kernels (CPU)");
  m.def("combine_backward", &combine_backward, "gradients of combine_forward (CPU)");
  m.def("mixed_conv", &mixed_conv, "PD-B inference with fixed branch kernels, one kernel per sample (CPU)");
  m.def("empty", &pooled_empty, "an uninitialised CPU tensor of the given sizes, dtype of like, from the block pool");
  m.def("cached_bytes", [] { return BlockPool::instance().cached_bytes(); }, "bytes the block pool holds unused");
  m.def("release_cached", [] { BlockPool::instance().release(); }, "return the block pool's unused blocks to the OS");
}
