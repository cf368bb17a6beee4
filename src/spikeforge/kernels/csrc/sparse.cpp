// Sparse spike arithmetic (spikeforge.kernels.sparse): y = x W^T + b and dL/dW = g^T x from the non-zeros of x,
// given as sorted flat indices idx into the row-major [N, I] input and, unless x is binary, their values.
// Work is split by tiles of output columns: each thread packs its tile of W (or accumulates its tile of dL/dW) in a
// private contiguous buffer that stays in cache, and walks the non-zeros in order, so sums run in a fixed order;
// the rows a few non-zeros ahead are prefetched (their addresses are known from idx). One parallel region per call
// keeps the kernels robust on a loaded machine, where every extra parallel region can wait a scheduler time slice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kFwdTile = 128;  // output columns per forward tile (a 512 KiB float tile of W for I = 1024)
constexpr int64_t kBwdTile = 128;  // output columns per weight-gradient tile
constexpr int64_t kAhead = 6;      // prefetch distance, in non-zeros

// y[n, o0:o0+w] = bias + sum over the non-zeros j of row n of val_j * W[o0:o0+w, col_j].
template <typename T, bool Weighted>
inline __attribute__((always_inline)) void fwd_tile(const int64_t* idx, const int64_t* off, const T* val,
                                                      const T* wgt, const T* bias, T* y, int64_t N, int64_t I,
                                                      int64_t O, int64_t o0, T* pack) {
  const int64_t w = std::min(kFwdTile, O - o0);
  for (int64_t k = 0; k < w; ++k)  // pack[i, k] = W[o0 + k, i]
    for (int64_t i = 0; i < I; ++i) pack[i * kFwdTile + k] = wgt[(o0 + k) * I + i];
  T acc[kFwdTile];
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < kFwdTile; ++k) acc[k] = (bias && k < w) ? bias[o0 + k] : T(0);
    const int64_t base = n * I;
    const int64_t jend = off[n + 1];
    for (int64_t j = off[n]; j < jend; ++j) {
      if (j + kAhead < jend) {  // the rows a few non-zeros ahead: their addresses are known, fetch them now
        const char* next = reinterpret_cast<const char*>(pack + (idx[j + kAhead] - base) * kFwdTile);
        for (int64_t b = 0; b < int64_t(kFwdTile * sizeof(T)); b += 64) __builtin_prefetch(next + b);
      }
      const T* row = pack + (idx[j] - base) * kFwdTile;
      if (Weighted) {
        const T s = val[j];
        for (int64_t k = 0; k < kFwdTile; ++k) acc[k] += s * row[k];
      } else {
        for (int64_t k = 0; k < kFwdTile; ++k) acc[k] += row[k];
      }
    }
    T* out = y + n * O + o0;
    for (int64_t k = 0; k < w; ++k) out[k] = acc[k];
  }
}

// gw[o0:o0+w, i] = sum over the non-zeros (n, i) of val * g[n, o0:o0+w], accumulated per input in pack[i, :].
template <typename T, bool Weighted>
inline __attribute__((always_inline)) void wgrad_tile(const int64_t* idx, const int64_t* off, const T* val,
                                                        const T* g, T* gw, int64_t N, int64_t I, int64_t O,
                                                        int64_t o0, T* pack) {
  const int64_t w = std::min(kBwdTile, O - o0);
  std::fill(pack, pack + I * kBwdTile, T(0));
  T row[kBwdTile];
  for (int64_t n = 0; n < N; ++n) {
    if (off[n] == off[n + 1]) continue;
    for (int64_t k = 0; k < kBwdTile; ++k) row[k] = k < w ? g[n * O + o0 + k] : T(0);
    const int64_t base = n * I;
    const int64_t jend = off[n + 1];
    for (int64_t j = off[n]; j < jend; ++j) {
      if (j + kAhead < jend) {
        const char* next = reinterpret_cast<const char*>(pack + (idx[j + kAhead] - base) * kBwdTile);
        for (int64_t b = 0; b < int64_t(kBwdTile * sizeof(T)); b += 64) __builtin_prefetch(next + b, 1);
      }
      T* acc = pack + (idx[j] - base) * kBwdTile;
      if (Weighted) {
        const T s = val[j];
        for (int64_t k = 0; k < kBwdTile; ++k) acc[k] += s * row[k];
      } else {
        for (int64_t k = 0; k < kBwdTile; ++k) acc[k] += row[k];
      }
    }
  }
  for (int64_t k = 0; k < w; ++k)
    for (int64_t i = 0; i < I; ++i) gw[(o0 + k) * I + i] = pack[i * kBwdTile + k];
}

// One clone per instruction set; the dynamic loader picks the best one the CPU supports.
#define SF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define SF_ENTRY(NAME, BODY, T)                                                                                  \
  SF_CLONES void NAME(const int64_t* idx, const int64_t* off, const T* val, const T* a, const T* b, T* out,      \
                      int64_t N, int64_t I, int64_t O, int64_t o0, T* pack, bool weighted) {                    \
    if (weighted) BODY<T, true>(idx, off, val, a, b, out, N, I, O, o0, pack);                                   \
    else BODY<T, false>(idx, off, val, a, b, out, N, I, O, o0, pack);                                           \
  }
template <typename T, bool W>
inline __attribute__((always_inline)) void wgrad_body(const int64_t* idx, const int64_t* off, const T* val,
                                                        const T* g, const T*, T* gw, int64_t N, int64_t I,
                                                        int64_t O, int64_t o0, T* pack) {
  wgrad_tile<T, W>(idx, off, val, g, gw, N, I, O, o0, pack);
}
SF_ENTRY(fwd_f32, fwd_tile, float)
SF_ENTRY(fwd_f64, fwd_tile, double)
SF_ENTRY(wgrad_f32, wgrad_body, float)
SF_ENTRY(wgrad_f64, wgrad_body, double)

template <typename T> struct Entry;
template <> struct Entry<float> { static constexpr auto fwd = fwd_f32; static constexpr auto wgrad = wgrad_f32; };
template <> struct Entry<double> { static constexpr auto fwd = fwd_f64; static constexpr auto wgrad = wgrad_f64; };

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "spikeforge_sparse: ", name,
              " must be a contiguous CPU tensor");
}

std::vector<int64_t> row_offsets(const at::Tensor& idx, int64_t N, int64_t I) {
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t nnz = idx.numel();
  std::vector<int64_t> off(N + 1);
  at::parallel_for(0, N + 1, 4096, [&](int64_t a, int64_t b) {  // row starts: binary search in the sorted idx
    for (int64_t n = a; n < b; ++n) off[n] = std::lower_bound(ip, ip + nnz, n * I) - ip;
  });
  return off;
}

template <typename F>
void over_tiles(int64_t O, int64_t tile, int64_t pack_size, F f) {
  const int64_t tiles = (O + tile - 1) / tile;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    std::vector<char> buf(pack_size);
    for (int64_t t = t0; t < t1; ++t) f(t * tile, buf.data());
  });
}

// y [N, O] = x W^T + bias with W [O, I].
at::Tensor sparse_fwd(at::Tensor idx, at::Tensor val, at::Tensor weight, at::Tensor bias, int64_t N) {
  check(idx, "idx"); check(val, "val"); check(weight, "weight"); check(bias, "bias");
  const int64_t O = weight.size(0), I = weight.size(1);
  const bool weighted = val.numel() > 0;
  auto y = at::empty({N, O}, weight.options());
  const auto off = row_offsets(idx, N, I);
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "spikeforge_sparse_fwd", [&] {
    const scalar_t* vp = weighted ? val.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = bias.numel() > 0 ? bias.data_ptr<scalar_t>() : nullptr;
    over_tiles(O, kFwdTile, I * kFwdTile * sizeof(scalar_t), [&](int64_t o0, char* buf) {
      Entry<scalar_t>::fwd(idx.data_ptr<int64_t>(), off.data(), vp, weight.data_ptr<scalar_t>(), bp,
                           y.data_ptr<scalar_t>(), N, I, O, o0, reinterpret_cast<scalar_t*>(buf), weighted);
    });
  });
  return y;
}

// gw [O, I] = g^T x with g [N, O].
at::Tensor sparse_wgrad(at::Tensor idx, at::Tensor val, at::Tensor g, int64_t I) {
  check(idx, "idx"); check(val, "val"); check(g, "g");
  const int64_t N = g.size(0), O = g.size(1);
  const bool weighted = val.numel() > 0;
  auto gw = at::empty({O, I}, g.options());
  const auto off = row_offsets(idx, N, I);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "spikeforge_sparse_wgrad", [&] {
    const scalar_t* vp = weighted ? val.data_ptr<scalar_t>() : nullptr;
    over_tiles(O, kBwdTile, I * kBwdTile * sizeof(scalar_t), [&](int64_t o0, char* buf) {
      Entry<scalar_t>::wgrad(idx.data_ptr<int64_t>(), off.data(), vp, g.data_ptr<scalar_t>(), nullptr,
                             gw.data_ptr<scalar_t>(), N, I, O, o0, reinterpret_cast<scalar_t*>(buf), weighted);
    });
  });
  return gw;
}

// Input gradient from a sparse output gradient: gx[n, :] = sum over o with g[n, o] != 0 of g[n, o] * W[o, :].
// g [N, O] (mostly zeros, e.g. after sparse backward), weight [O, I] -> gx [N, I]. Rows in parallel; each row
// adds whole rows of W (contiguous, vectorised), in increasing o, so the sum is that of the dense product up to
// the skipped zero terms' rounding (none: x + 0*w = x).
template <typename T>
SF_CLONES void igrad_rows(const T* g, const T* w, T* gx, int64_t n0, int64_t n1, int64_t O, int64_t I) {
  for (int64_t n = n0; n < n1; ++n) {
    T* out = gx + n * I;
    std::fill(out, out + I, T(0));
    const T* gr = g + n * O;
    for (int64_t o = 0; o < O; ++o) {
      const T s = gr[o];
      if (s == T(0)) continue;
      const T* row = w + o * I;
      for (int64_t i = 0; i < I; ++i) out[i] += s * row[i];
    }
  }
}

at::Tensor sparse_igrad(at::Tensor g, at::Tensor weight) {
  check(g, "g"); check(weight, "weight");
  const int64_t N = g.size(0), O = g.size(1), I = weight.size(1);
  TORCH_CHECK(weight.size(0) == O, "spikeforge_sparse: g [N, O] and weight [O, I] disagree on O");
  auto gx = at::empty({N, I}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "spikeforge_sparse_igrad", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* xp = gx.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) { igrad_rows<scalar_t>(gp, wp, xp, n0, n1, O, I); });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY(spikeforge_sparse, m) {
  m.def("sparse_fwd(Tensor idx, Tensor val, Tensor weight, Tensor bias, int N) -> Tensor");
  m.def("sparse_wgrad(Tensor idx, Tensor val, Tensor g, int I) -> Tensor");
  m.def("sparse_igrad(Tensor g, Tensor weight) -> Tensor");
}

TORCH_LIBRARY_IMPL(spikeforge_sparse, CPU, m) {
  m.impl("sparse_fwd", &sparse_fwd);
  m.impl("sparse_wgrad", &sparse_wgrad);
  m.impl("sparse_igrad", &sparse_igrad);
}
