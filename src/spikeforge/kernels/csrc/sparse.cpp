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
#include <cstring>
#include <tuple>
#include <vector>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>  // AVX-512 paths, chosen at run time
#endif

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

// ---- Sparse output gradient (sparse backward): the non-zeros of g [N, O] by rows (CSR) --------------------------
// Under sparse backward the gradient w.r.t. a Linear layer's output is exactly zero outside the next neuron layer's
// band. grad_csr finds its non-zeros once (two vectorised passes over g, rows in parallel); the three gradients of
// the layer are then formed from them: the input gradient csr_igrad (rows of W), the weight gradient csr_wgrad (an
// outer product of the non-zeros of g and of the binary input, or the row method of sparse_wgrad when that is
// cheaper) and the bias gradient csr_colsum. Every sum runs in increasing sample order, as in the dense kernels.

template <typename T>
SF_CLONES void count_rows(const T* g, int64_t* cnt, int64_t n0, int64_t n1, int64_t O) {
  for (int64_t n = n0; n < n1; ++n) {
    const T* r = g + n * O;
    int64_t c = 0;
    for (int64_t o = 0; o < O; ++o) c += r[o] != T(0);
    cnt[n + 1] = c;
  }
}

// The non-zeros of one row r [O]: their positions to cols and values to vals (both with 16 entries of slack);
// returns how many. AVX-512 where the CPU has it (compare, compress in registers, store whole vectors: a compress
// straight to memory is microcoded and slow on some CPUs), else a scalar loop.
template <typename T>
int64_t compress_row_scalar(const T* r, int64_t O, int32_t* cols, T* vals) {
  int64_t k = 0;
  for (int64_t o = 0; o < O; ++o) {
    const T v = r[o];
    if (v != T(0)) {
      cols[k] = int32_t(o);
      vals[k] = v;
      ++k;
    }
  }
  return k;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) int64_t compress_row_avx512(const float* r, int64_t O, int32_t* cols,
                                                                float* vals) {
  int64_t k = 0, o = 0;
  __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  const __m512 zero = _mm512_setzero_ps();
  for (; o + 16 <= O; o += 16) {
    const __m512 v = _mm512_loadu_ps(r + o);
    const __mmask16 m = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);  // NaN counts as non-zero, as v != 0 does
    if (m) {
      _mm512_storeu_ps(vals + k, _mm512_maskz_compress_ps(m, v));
      _mm512_storeu_si512(cols + k, _mm512_maskz_compress_epi32(m, iota));
      k += __builtin_popcount(m);
    }
    iota = _mm512_add_epi32(iota, step);
  }
  for (; o < O; ++o)
    if (r[o] != 0.0f) {
      cols[k] = int32_t(o);
      vals[k] = r[o];
      ++k;
    }
  return k;
}
__attribute__((target("avx512f"))) int64_t compress_row_avx512(const double* r, int64_t O, int32_t* cols,
                                                                double* vals) {
  int64_t k = 0, o = 0;
  __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i step = _mm512_setr_epi32(8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512d zero = _mm512_setzero_pd();
  for (; o + 8 <= O; o += 8) {
    const __m512d v = _mm512_loadu_pd(r + o);
    const __mmask8 m = _mm512_cmp_pd_mask(v, zero, _CMP_NEQ_UQ);
    if (m) {
      _mm512_storeu_pd(vals + k, _mm512_maskz_compress_pd(m, v));
      _mm512_storeu_si512(cols + k, _mm512_maskz_compress_epi32(__mmask16(m), iota));
      k += __builtin_popcount(m);
    }
    iota = _mm512_add_epi32(iota, step);
  }
  for (; o < O; ++o)
    if (r[o] != 0.0) {
      cols[k] = int32_t(o);
      vals[k] = r[o];
      ++k;
    }
  return k;
}
template <typename T>
int64_t compress_row(const T* r, int64_t O, int32_t* cols, T* vals) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 ? compress_row_avx512(r, O, cols, vals) : compress_row_scalar<T>(r, O, cols, vals);
}
#else
template <typename T>
int64_t compress_row(const T* r, int64_t O, int32_t* cols, T* vals) {
  return compress_row_scalar<T>(r, O, cols, vals);
}
#endif

// Returns (rowptr [N+1] int64, cols [nnz] int32, vals [nnz]); rowptr is empty when g has more than max_nnz non-zeros
// (the caller then takes the dense path; only the counting pass was spent).
std::tuple<at::Tensor, at::Tensor, at::Tensor> grad_csr(at::Tensor g, int64_t max_nnz) {
  check(g, "g");
  TORCH_CHECK(g.dim() == 2, "spikeforge_sparse: g must be [N, O]");
  const int64_t N = g.size(0), O = g.size(1);
  auto rowptr = at::empty({N + 1}, g.options().dtype(at::kLong));
  int64_t* rp = rowptr.data_ptr<int64_t>();
  rp[0] = 0;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "spikeforge_grad_csr_count", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) { count_rows<scalar_t>(gp, rp, n0, n1, O); });
  });
  for (int64_t n = 0; n < N; ++n) rp[n + 1] += rp[n];
  const int64_t nnz = rp[N];
  if (nnz > max_nnz)
    return {at::empty({0}, rowptr.options()), at::empty({0}, g.options().dtype(at::kInt)), at::empty({0}, g.options())};
  auto cols = at::empty({nnz}, g.options().dtype(at::kInt));
  auto vals = at::empty({nnz}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "spikeforge_grad_csr_fill", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    int32_t* cp = cols.data_ptr<int32_t>();
    scalar_t* vp = vals.data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
      std::vector<int32_t> bc(O + 16);  // row buffers with slack: the AVX-512 path stores whole vectors
      std::vector<scalar_t> bv(O + 16);
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t k = compress_row(gp + n * O, O, bc.data(), bv.data());
        std::copy(bc.data(), bc.data() + k, cp + rp[n]);
        std::copy(bv.data(), bv.data() + k, vp + rp[n]);
      }
    });
  });
  return {rowptr, cols, vals};
}

// gx[n, :] = sum over the non-zeros (o, s) of row n of g of s * W[o, :], in increasing o (the rounding of
// sparse_igrad: each product rounded, then added). With AVX-512 the row is register-blocked: 8 vectors of outputs
// stay in registers while every non-zero of the row adds its segment of W, so gx is written once instead of loaded and
// stored once per non-zero.
template <typename T>
void csr_igrad_rows_plain(const int64_t* rp, const int32_t* cols, const T* vals, const T* w, T* gx, int64_t n0,
                          int64_t n1, int64_t I) {
  for (int64_t n = n0; n < n1; ++n) {
    T* out = gx + n * I;
    std::fill(out, out + I, T(0));
    for (int64_t k = rp[n]; k < rp[n + 1]; ++k) {
      const T s = vals[k];
      const T* row = w + int64_t(cols[k]) * I;
      for (int64_t i = 0; i < I; ++i) out[i] += s * row[i];
    }
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define SF_IGRAD_AVX512(T, V, L, SET1, LOAD, MLOAD, MUL, ADD, STORE, MSTORE, ZERO, MASK)                       \
  __attribute__((target("avx512f"))) void csr_igrad_rows_avx512(const int64_t* rp, const int32_t* cols,        \
                                                                const T* vals, const T* w, T* gx, int64_t n0,  \
                                                                int64_t n1, int64_t I, int64_t tile) {         \
    for (int64_t t0 = 0; t0 < I; t0 += tile)  /* column tiles: W[:, tile] stays in L2 over the rows */       \
    for (int64_t n = n0; n < n1; ++n) {                                                                         \
      T* out = gx + n * I;                                                                                      \
      const int64_t k0 = rp[n], k1 = rp[n + 1], t1 = std::min(I, t0 + tile);                                    \
      int64_t i0 = t0;                                                                                          \
      for (; i0 + 8 * L <= t1; i0 += 8 * L) {  /* 8 accumulators: 8 independent add chains */                \
        V a0 = ZERO(), a1 = ZERO(), a2 = ZERO(), a3 = ZERO(), a4 = ZERO(), a5 = ZERO(), a6 = ZERO(), a7 = ZERO(); \
        for (int64_t k = k0; k < k1; ++k) {                                                                     \
          const V sv = SET1(vals[k]);                                                                           \
          const T* row = w + int64_t(cols[k]) * I + i0;                                                         \
          a0 = ADD(a0, MUL(sv, LOAD(row)));                                                                     \
          a1 = ADD(a1, MUL(sv, LOAD(row + L)));                                                                 \
          a2 = ADD(a2, MUL(sv, LOAD(row + 2 * L)));                                                             \
          a3 = ADD(a3, MUL(sv, LOAD(row + 3 * L)));                                                             \
          a4 = ADD(a4, MUL(sv, LOAD(row + 4 * L)));                                                             \
          a5 = ADD(a5, MUL(sv, LOAD(row + 5 * L)));                                                             \
          a6 = ADD(a6, MUL(sv, LOAD(row + 6 * L)));                                                             \
          a7 = ADD(a7, MUL(sv, LOAD(row + 7 * L)));                                                             \
        }                                                                                                       \
        STORE(out + i0, a0); STORE(out + i0 + L, a1); STORE(out + i0 + 2 * L, a2); STORE(out + i0 + 3 * L, a3); \
        STORE(out + i0 + 4 * L, a4); STORE(out + i0 + 5 * L, a5); STORE(out + i0 + 6 * L, a6);                 \
        STORE(out + i0 + 7 * L, a7);                                                                            \
      }                                                                                                         \
      for (; i0 < t1; i0 += L) {                                                                                \
        const MASK m = MASK(t1 - i0 >= L ? ~0u : ((1u << (t1 - i0)) - 1u));                                     \
        V a = ZERO();                                                                                           \
        for (int64_t k = k0; k < k1; ++k)                                                                       \
          a = ADD(a, MUL(SET1(vals[k]), MLOAD(m, w + int64_t(cols[k]) * I + i0)));                              \
        MSTORE(out + i0, m, a);                                                                                 \
      }                                                                                                         \
    }                                                                                                           \
  }
SF_IGRAD_AVX512(float, __m512, 16, _mm512_set1_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps,
                _mm512_add_ps, _mm512_storeu_ps, _mm512_mask_storeu_ps, _mm512_setzero_ps, __mmask16)
SF_IGRAD_AVX512(double, __m512d, 8, _mm512_set1_pd, _mm512_loadu_pd, _mm512_maskz_loadu_pd, _mm512_mul_pd,
                _mm512_add_pd, _mm512_storeu_pd, _mm512_mask_storeu_pd, _mm512_setzero_pd, __mmask8)
#undef SF_IGRAD_AVX512
template <typename T>
void csr_igrad_rows(const int64_t* rp, const int32_t* cols, const T* vals, const T* w, T* gx, int64_t n0, int64_t n1,
                    int64_t I, int64_t O) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  // columns per tile: a [O, tile] slice of W of about 512 KiB (half of a typical L2), a multiple of 128, 128..256
  const int64_t tile = std::max<int64_t>(128, std::min<int64_t>(256, ((1 << 19) / (O * int64_t(sizeof(T)))) / 128 * 128));
  if (avx512)
    csr_igrad_rows_avx512(rp, cols, vals, w, gx, n0, n1, I, tile);
  else
    csr_igrad_rows_plain<T>(rp, cols, vals, w, gx, n0, n1, I);
}
#else
template <typename T>
void csr_igrad_rows(const int64_t* rp, const int32_t* cols, const T* vals, const T* w, T* gx, int64_t n0, int64_t n1,
                    int64_t I, int64_t) {
  csr_igrad_rows_plain<T>(rp, cols, vals, w, gx, n0, n1, I);
}
#endif

at::Tensor csr_igrad(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, at::Tensor weight) {
  check(rowptr, "rowptr"); check(cols, "cols"); check(vals, "vals"); check(weight, "weight");
  const int64_t N = rowptr.numel() - 1, I = weight.size(1);
  auto gx = at::empty({N, I}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "spikeforge_csr_igrad", [&] {
    const int64_t* rp = rowptr.data_ptr<int64_t>();
    const int32_t* cp = cols.data_ptr<int32_t>();
    const scalar_t* vp = vals.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* xp = gx.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) { csr_igrad_rows<scalar_t>(rp, cp, vp, wp, xp, n0, n1, I, weight.size(0));
    });
  });
  return gx;
}

// Sampled input gradient (for a layer below whose backward reads only some positions, e.g. the in-band steps of a
// sparse-backward scan): out[m] = (sum over the non-zeros (o, s) of row n of g, in increasing o, of s * W[o, j])
// times scale[n % B, j] (scale: empty for none; a dropout's kept-and-rescaled mask, shared by all steps) for each
// wanted entry m = (n, j) of (brow, bcols), a CSR without values over the [N, I] input. Each product is rounded, then
// added, in csr_igrad's order, and the scale applied last as a separate product: the values equal csr_igrad's at the
// same positions times the mask, bit for bit. The rows o of W are walked in strips of about 768 KiB (they stay in L2
// while every row n adds its non-zeros of the strip; the columns of a row are sorted, so a cursor per row finds them),
// and each sum is carried in out from strip to strip: the order of its additions is unchanged. Within a strip the
// wanted entries of a row run 8 at a time (8 independent add chains, the columns in registers); scalar loads beat
// AVX-512 gathers here (a 16-lane gather costs about as much as 25 scalar loads on Zen 4).
template <typename T>
SF_CLONES void sddmm_rows(const int64_t* rp, const int32_t* cols, const T* vals, const T* w, int64_t O, int64_t I,
                          const int64_t* brp, const int32_t* bcols, const T* scale, int64_t B, T* out, int64_t n0,
                          int64_t n1) {
  // rows per strip: about 768 KiB of W (at least 16 rows)
  const int64_t tile = std::max<int64_t>(16, (int64_t(768) << 10) / (std::max<int64_t>(I, 1) * int64_t(sizeof(T))));
  std::vector<int64_t> kp(rp + n0, rp + n1);  // per row: its first non-zero not yet added
  for (int64_t o0 = 0; o0 < O; o0 += tile) {
    const int64_t o1 = std::min(O, o0 + tile);
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t k0 = kp[n - n0], ke = rp[n + 1];
      int64_t k1 = o1 == O ? ke : k0;
      while (k1 < ke && cols[k1] < o1) ++k1;
      kp[n - n0] = k1;
      int64_t m = brp[n];
      const int64_t m1 = brp[n + 1];
      if (k0 == k1 || m == m1) continue;
      const bool first = k0 == rp[n], last = k1 == ke;  // sums start at 0 / are complete after this strip
      const T* sr = scale && last ? scale + (n % B) * I : nullptr;
      for (; m + 8 <= m1; m += 8) {
        const int32_t* c = bcols + m;
        T* o = out + m;
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        if (!first) { a0 = o[0]; a1 = o[1]; a2 = o[2]; a3 = o[3]; a4 = o[4]; a5 = o[5]; a6 = o[6]; a7 = o[7]; }
        for (int64_t k = k0; k < k1; ++k) {
          const T s = vals[k];
          const T* row = w + int64_t(cols[k]) * I;
          a0 += s * row[c[0]]; a1 += s * row[c[1]]; a2 += s * row[c[2]]; a3 += s * row[c[3]];
          a4 += s * row[c[4]]; a5 += s * row[c[5]]; a6 += s * row[c[6]]; a7 += s * row[c[7]];
        }
        if (sr) {
          a0 = a0 * sr[c[0]]; a1 = a1 * sr[c[1]]; a2 = a2 * sr[c[2]]; a3 = a3 * sr[c[3]];
          a4 = a4 * sr[c[4]]; a5 = a5 * sr[c[5]]; a6 = a6 * sr[c[6]]; a7 = a7 * sr[c[7]];
        }
        o[0] = a0; o[1] = a1; o[2] = a2; o[3] = a3; o[4] = a4; o[5] = a5; o[6] = a6; o[7] = a7;
      }
      for (; m < m1; ++m) {
        const int64_t j = bcols[m];
        T a = first ? T(0) : out[m];
        for (int64_t k = k0; k < k1; ++k) a += vals[k] * w[int64_t(cols[k]) * I + j];
        out[m] = sr ? a * sr[j] : a;
      }
    }
  }
  for (int64_t n = n0; n < n1; ++n)  // rows of g without non-zeros: their sums are 0
    if (rp[n] == rp[n + 1]) {
      const T* sr = scale ? scale + (n % B) * I : nullptr;
      for (int64_t m = brp[n]; m < brp[n + 1]; ++m) out[m] = sr ? T(0) * sr[bcols[m]] : T(0);
    }
}

at::Tensor csr_sddmm(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, at::Tensor weight, at::Tensor brow,
                     at::Tensor bcols, at::Tensor scale, int64_t B) {
  check(rowptr, "rowptr"); check(cols, "cols"); check(vals, "vals"); check(weight, "weight");
  check(brow, "brow"); check(bcols, "bcols"); check(scale, "scale");
  const int64_t N = rowptr.numel() - 1, I = weight.size(1);
  TORCH_CHECK(brow.numel() == N + 1, "csr_sddmm: brow must have one entry per row of g and one more");
  TORCH_CHECK(scale.numel() == 0 || (B > 0 && scale.numel() == B * I && N % B == 0),
              "csr_sddmm: scale must be empty or [B, in] with B dividing the rows");
  auto out = at::empty({bcols.numel()}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "spikeforge_csr_sddmm", [&] {
    const int64_t* rp = rowptr.data_ptr<int64_t>();
    const int32_t* cp = cols.data_ptr<int32_t>();
    const scalar_t* vp = vals.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const int64_t* bp = brow.data_ptr<int64_t>();
    const int32_t* bc = bcols.data_ptr<int32_t>();
    const scalar_t* sp = scale.numel() ? scale.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
      sddmm_rows<scalar_t>(rp, cp, vp, wp, weight.size(0), I, bp, bc, sp, B, op, n0, n1);
    });
  });
  return out;
}

// gb[o] = sum over samples of g[n, o], from the non-zeros (one pass in sample order).
at::Tensor csr_colsum(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, int64_t O) {
  check(rowptr, "rowptr"); check(cols, "cols"); check(vals, "vals");
  auto gb = at::zeros({O}, vals.options());
  AT_DISPATCH_FLOATING_TYPES(vals.scalar_type(), "spikeforge_csr_colsum", [&] {
    const int32_t* cp = cols.data_ptr<int32_t>();
    const scalar_t* vp = vals.data_ptr<scalar_t>();
    scalar_t* bp = gb.data_ptr<scalar_t>();
    const int64_t nnz = vals.numel();
    for (int64_t k = 0; k < nnz; ++k) bp[cp[k]] += vp[k];
  });
  return gb;
}

// Weight gradient gw [O, I] = g^T x from the non-zeros of both: for every output o (a row of gw, which stays in
// cache), every sample n with g[n, o] != 0 adds g[n, o] (times x's value) at the inputs active in sample n, in
// increasing n. The non-zeros of g are regrouped by output first (CSC, a counting sort that keeps sample order;
// samples without active inputs are left out, they add nothing). Two kernels, chosen per call by the density of x:
//  * scalar (portable): x's rows as local columns padded to a multiple of 8 with distinct dummy columns I..I+7
//    (their sums land past the end of the row and are dropped). For each output the rows of its samples are first
//    copied, a fixed block at a time, into one stream of groups of 8 distinct columns with one addend per group, which
//    a single loop then adds. A loop per (o, n) pair mispredicts its exit and then waits on the next row's loads, which
//    cost more than the adds themselves at these row lengths; and as a group's columns are distinct, its 8 loads go
//    before its 8 stores, which the CPU overlaps better than one load-add-store at a time.
//  * AVX-512 (x binary, or all its values equal): x's rows as bit masks, one 16-bit word per vector of lanes; a row
//    of gw is summed in registers, a tile of kMaskTile vectors at a time, each sample adding g[n, o] to the lanes of
//    its mask. It costs per vector of lanes, not per non-zero, so it wins on dense rows (about one per vector).
// Either way every gw[o, i] gets the additions of the plain loop, in the same order: the results are identical.
constexpr int64_t kStreamCopy = 32;   // columns copied per pair whatever its length (up to 32: no branch on it)
constexpr int64_t kStreamCap = 4096;  // stream entries added at a time
constexpr int64_t kMaskTile = 24;     // vectors of a row of gw held in registers

template <typename T, bool Weighted, typename C>
inline __attribute__((always_inline)) void stream_add(const C* sc, const T* sv, int64_t q, T* acc) {
  for (int64_t j = 0; j < q; j += 8) {
    const C* c = sc + j;
    T v0 = acc[c[0]], v1 = acc[c[1]], v2 = acc[c[2]], v3 = acc[c[3]];
    T v4 = acc[c[4]], v5 = acc[c[5]], v6 = acc[c[6]], v7 = acc[c[7]];
    if (Weighted) {
      const T* v = sv + j;
      v0 += v[0]; v1 += v[1]; v2 += v[2]; v3 += v[3]; v4 += v[4]; v5 += v[5]; v6 += v[6]; v7 += v[7];
    } else {
      const T s = sv[j / 8];
      v0 += s; v1 += s; v2 += s; v3 += s; v4 += s; v5 += s; v6 += s; v7 += s;
    }
    acc[c[0]] = v0; acc[c[1]] = v1; acc[c[2]] = v2; acc[c[3]] = v3;
    acc[c[4]] = v4; acc[c[5]] = v5; acc[c[6]] = v6; acc[c[7]] = v7;
  }
}

// pc/pv: x's padded rows (poff: row starts, maxlen: the longest; kStreamCopy entries readable past the last row).
// Unweighted, the stream holds one addend per group, else one product per column.
template <typename T, bool Weighted, typename C>
SF_CLONES void outer_rows(const int64_t* cp, const int64_t* cn, const T* cv, const C* pc, const T* pv,
                          const int64_t* poff, int64_t maxlen, T* gw, int64_t I, int64_t o0, int64_t o1) {
  std::vector<T> acc(I + 8);
  const int64_t cap = kStreamCap + std::max(maxlen, kStreamCopy);
  std::vector<C> sc(cap);
  std::vector<T> sv(Weighted ? cap : cap / 8);
  for (int64_t o = o0; o < o1; ++o) {
    // Sums go straight into gw's row when the dummy columns I..I+7 fall in the next row of this thread's block,
    // which is cleared before its own sums (no copy); the block's last row goes through acc.
    const bool direct = o + 1 < o1 && I >= 8;
    T* out = direct ? gw + o * I : acc.data();
    std::fill(out, out + (direct ? I : I + 8), T(0));
    int64_t q = 0;
    for (int64_t k = cp[o]; k < cp[o + 1]; ++k) {
      if (q >= kStreamCap) {
        stream_add<T, Weighted, C>(sc.data(), sv.data(), q, out);
        q = 0;
      }
      const int64_t n = cn[k], j0 = poff[n], len = poff[n + 1] - j0;
      const T s = cv[k];
      const bool fixed = len <= kStreamCopy;
      if (fixed)  // a constant size: a few vector moves
        std::memcpy(sc.data() + q, pc + j0, kStreamCopy * sizeof(C));
      else
        std::memcpy(sc.data() + q, pc + j0, len * sizeof(C));
      if (Weighted) {
        T* d = sv.data() + q;
        const T* v = pv + j0;
        if (fixed)
          for (int64_t t = 0; t < kStreamCopy; ++t) d[t] = s * v[t];
        else
          for (int64_t t = 0; t < len; ++t) d[t] = s * v[t];
      } else {
        T* d = sv.data() + q / 8;
        for (int64_t t = 0; t < kStreamCopy / 8; ++t) d[t] = s;
        for (int64_t t = kStreamCopy / 8; t < len / 8; ++t) d[t] = s;
      }
      q += len;
    }
    stream_add<T, Weighted, C>(sc.data(), sv.data(), q, out);
    if (!direct) std::copy(acc.data(), acc.data() + I, gw + o * I);
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// gw[o, t0 L : (t0 + R) L] -> out, L lanes per vector; mk: the masks, stride words per row of x. The mask words are
// broadcast to all lanes and tested against each lane's bit (two words at a time for float, four for double), which
// runs faster than moving every word into a mask register on its own (the rate of mask-register writes bounds this).
template <int R>
__attribute__((target("avx512f"))) void mask_tile(const int64_t* cp, const int64_t* cn, const float* cv,
                                                  const uint16_t* mk, int64_t stride, int64_t t0, int64_t o,
                                                  float* out) {
  __m512 a[R];
#pragma GCC unroll 32  // all of a[] in registers (else GCC keeps a copy on the stack)
  for (int c = 0; c < R; ++c) a[c] = _mm512_setzero_ps();
  const __m512i lo = _mm512_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
  const __m512i hi = _mm512_slli_epi32(lo, 16);
  for (int64_t k = cp[o]; k < cp[o + 1]; ++k) {
    const uint16_t* m = mk + cn[k] * stride + t0;
    const __m512 s = _mm512_set1_ps(cv[k]);
#pragma GCC unroll 32
    for (int c = 0; c < R; c += 2) {
      int32_t w;
      std::memcpy(&w, m + c, sizeof(w));
      const __m512i b = _mm512_set1_epi32(w);
      a[c] = _mm512_mask_add_ps(a[c], _mm512_test_epi32_mask(b, lo), a[c], s);
      a[c + 1] = _mm512_mask_add_ps(a[c + 1], _mm512_test_epi32_mask(b, hi), a[c + 1], s);
    }
  }
#pragma GCC unroll 32
  for (int c = 0; c < R; ++c) _mm512_storeu_ps(out + c * 16, a[c]);
}
template <int R>
__attribute__((target("avx512f"))) void mask_tile(const int64_t* cp, const int64_t* cn, const double* cv,
                                                  const uint16_t* mk, int64_t stride, int64_t t0, int64_t o,
                                                  double* out) {
  __m512d a[R];
#pragma GCC unroll 32
  for (int c = 0; c < R; ++c) a[c] = _mm512_setzero_pd();
  const __m512i b0 = _mm512_setr_epi64(1, 2, 4, 8, 16, 32, 64, 128);
  const __m512i b1 = _mm512_slli_epi64(b0, 16), b2 = _mm512_slli_epi64(b0, 32), b3 = _mm512_slli_epi64(b0, 48);
  for (int64_t k = cp[o]; k < cp[o + 1]; ++k) {
    const uint16_t* m = mk + cn[k] * stride + t0;
    const __m512d s = _mm512_set1_pd(cv[k]);
#pragma GCC unroll 32
    for (int c = 0; c < R; c += 4) {
      int64_t w;
      std::memcpy(&w, m + c, sizeof(w));
      const __m512i b = _mm512_set1_epi64(w);
      a[c] = _mm512_mask_add_pd(a[c], _mm512_test_epi64_mask(b, b0), a[c], s);
      a[c + 1] = _mm512_mask_add_pd(a[c + 1], _mm512_test_epi64_mask(b, b1), a[c + 1], s);
      a[c + 2] = _mm512_mask_add_pd(a[c + 2], _mm512_test_epi64_mask(b, b2), a[c + 2], s);
      a[c + 3] = _mm512_mask_add_pd(a[c + 3], _mm512_test_epi64_mask(b, b3), a[c + 3], s);
    }
  }
#pragma GCC unroll 32
  for (int c = 0; c < R; ++c) _mm512_storeu_pd(out + c * 8, a[c]);
}
template <typename T>
void mask_rows(const int64_t* cp, const int64_t* cn, const T* cv, const uint16_t* mk, int64_t stride, T* gw,
               int64_t I, int64_t o0, int64_t o1) {
  constexpr int64_t L = 64 / sizeof(T), M = 32 / L;  // M: mask words per load
  T last[kMaskTile * L];  // a tile that runs past the end of the row
  for (int64_t o = o0; o < o1; ++o)
    for (int64_t t0 = 0; t0 < stride;) {
      const int64_t left = stride - t0;  // the last tiles: as many vectors as the row needs
      const int64_t w = left >= kMaskTile ? kMaskTile : left >= 8 ? 8 : left >= 4 ? 4 : M;
      T* out = gw + o * I + t0 * L;
      T* to = (t0 + w) * L <= I ? out : last;
      if (w == kMaskTile) mask_tile<kMaskTile>(cp, cn, cv, mk, stride, t0, o, to);
      else if (w == 8) mask_tile<8>(cp, cn, cv, mk, stride, t0, o, to);
      else if (w == 4) mask_tile<4>(cp, cn, cv, mk, stride, t0, o, to);
      else mask_tile<M>(cp, cn, cv, mk, stride, t0, o, to);
      if (to == last) std::copy(last, last + (I - t0 * L), out);
      t0 += w;
    }
}

// mk[n, w] bit b: input w L + b active in sample n (mk zeroed, stride words per row).
SF_CLONES void build_masks(const int64_t* ip, const int64_t* xoff, int64_t N, int64_t I, int64_t L, int64_t stride,
                           uint16_t* mk) {
  const int shift = L == 16 ? 4 : 3;
  for (int64_t n = 0; n < N; ++n) {
    uint16_t* row = mk + n * stride;
    const int64_t base = n * I;
    for (int64_t j = xoff[n]; j < xoff[n + 1]; ++j) {  // sets bits in memory: cheaper than carrying the word along
      const uint64_t c = uint64_t(ip[j] - base);
      row[c >> shift] |= uint16_t(1u << (c & uint64_t(L - 1)));
    }
  }
}
#endif

template <typename T, typename C>
void outer_scalar(const int64_t* cp, const int64_t* cn, const T* cv, const int64_t* ip, const int64_t* xoff,
                  const T* xv, bool weighted, T* gw, int64_t N, int64_t I, int64_t O) {
  // x's rows padded to multiples of 8 (columns, and values when weighted), kStreamCopy readable entries past the end
  std::vector<int64_t> poff(N + 1, 0);
  int64_t maxlen = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t len = (xoff[n + 1] - xoff[n] + 7) / 8 * 8;
    poff[n + 1] = poff[n] + len;
    maxlen = std::max(maxlen, len);
  }
  std::vector<C> pc(poff[N] + kStreamCopy, C(I));
  std::vector<T> pv(weighted ? poff[N] + kStreamCopy : 0, T(0));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t j0 = xoff[n], len = xoff[n + 1] - j0, base = n * I;
    C* c = pc.data() + poff[n];
    for (int64_t t = 0; t < len; ++t) c[t] = C(ip[j0 + t] - base);
    for (int64_t t = len; t < poff[n + 1] - poff[n]; ++t) c[t] = C(I + t % 8);
    if (weighted) std::copy(xv + j0, xv + j0 + len, pv.data() + poff[n]);
  }
  at::parallel_for(0, O, 8, [&](int64_t o0, int64_t o1) {
    if (weighted)
      outer_rows<T, true, C>(cp, cn, cv, pc.data(), pv.data(), poff.data(), maxlen, gw, I, o0, o1);
    else
      outer_rows<T, false, C>(cp, cn, cv, pc.data(), pv.data(), poff.data(), maxlen, gw, I, o0, o1);
  });
}

// idx/val: the input's non-zeros as for sparse_wgrad; g [N, O] the dense output gradient and (rowptr, cols, vals)
// its non-zeros (grad_csr). ratio: the outer product runs when its scalar additions times ratio are fewer than the
// row method's (nnz(x) * O), else sparse_wgrad's row method runs on g.
// g: undefined when the caller holds no dense gradient (csr_wgrad_outer; N and O given): the outer product always.
at::Tensor csr_wgrad_impl(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, at::Tensor g, int64_t N, int64_t O,
                          at::Tensor idx, at::Tensor val, int64_t I, double ratio) {
  check(rowptr, "rowptr"); check(cols, "cols"); check(vals, "vals"); check(idx, "idx");
  check(val, "val");
  TORCH_CHECK(rowptr.numel() == N + 1, "spikeforge_sparse: rowptr must have one entry per row and one more");
  bool weighted = val.numel() > 0;
  const auto xoff = row_offsets(idx, N, I);
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int32_t* cl = cols.data_ptr<int32_t>();
  // the same pass also sizes the two kernels: pairs (o, n), padded stream entries
  double outer = 0, pairs = 0, stream = 0;
  for (int64_t n = 0; n < N; ++n) {
    const double gn = double(rp[n + 1] - rp[n]), xn = double(xoff[n + 1] - xoff[n]);
    outer += gn * xn;
    if (xn > 0) {
      pairs += gn;
      stream += gn * double((xoff[n + 1] - xoff[n] + 7) / 8 * 8);
    }
  }
  if (g.defined() && outer * ratio >= double(idx.numel()) * double(O)) return sparse_wgrad(idx, val, g, I);
  std::vector<int64_t> cp(O + 1, 0);
  for (int64_t n = 0; n < N; ++n)
    if (xoff[n + 1] > xoff[n])
      for (int64_t k = rp[n]; k < rp[n + 1]; ++k) ++cp[cl[k] + 1];
  for (int64_t o = 0; o < O; ++o) cp[o + 1] += cp[o];
  const int64_t nnz = cp[O];
  std::vector<int64_t> cn(nnz);
  auto gw = at::empty({O, I}, vals.options());
  AT_DISPATCH_FLOATING_TYPES(vals.scalar_type(), "spikeforge_csr_wgrad", [&] {
    using T = scalar_t;
    const T* vp = vals.data_ptr<scalar_t>();
    const T* xv = weighted ? val.data_ptr<scalar_t>() : nullptr;
    // All of x's values equal (spikes scaled after dropout): g[n, o] * v is the same product for every input of the
    // sample, formed once here with the same rounding, and the kernels for binary x apply.
    bool uniform = weighted;
    for (int64_t j = 1; uniform && j < idx.numel(); ++j) uniform = std::memcmp(xv + j, xv, sizeof(T)) == 0;
    if (uniform) weighted = false;
    std::vector<T> cv(nnz);
    {
      std::vector<int64_t> fill(cp.begin(), cp.end() - 1);
      for (int64_t n = 0; n < N; ++n) {
        if (xoff[n + 1] == xoff[n]) continue;
        for (int64_t k = rp[n]; k < rp[n + 1]; ++k) {
          const int64_t q = fill[cl[k]]++;
          cn[q] = n;
          cv[q] = uniform ? vp[k] * xv[0] : vp[k];
        }
      }
    }
    const int64_t* ip = idx.data_ptr<int64_t>();
    T* gp = gw.data_ptr<scalar_t>();
#if defined(__GNUC__) && defined(__x86_64__)
    static const bool avx512 = __builtin_cpu_supports("avx512f");
    constexpr int64_t L = 64 / sizeof(T);
    const int64_t stride = ((I + L - 1) / L + 32 / L - 1) / (32 / L) * (32 / L);  // mask words per row: whole loads
    // measured: a mask vector costs about 3/4 of a stream entry, and a pair about 17 entries of the stream
    if (avx512 && !weighted && 3 * double(stride) * pairs < 4 * (stream + 17 * pairs)) {
      std::vector<uint16_t> mk(N * stride, 0);
      build_masks(ip, xoff.data(), N, I, L, stride, mk.data());
      at::parallel_for(0, O, 8, [&](int64_t o0, int64_t o1) {
        mask_rows<T>(cp.data(), cn.data(), cv.data(), mk.data(), stride, gp, I, o0, o1);
      });
      return;
    }
#endif
    if (I + 8 <= 65536)  // 16-bit columns: half the bytes to copy and load
      outer_scalar<T, uint16_t>(cp.data(), cn.data(), cv.data(), ip, xoff.data(), xv, weighted, gp, N, I, O);
    else
      outer_scalar<T, int32_t>(cp.data(), cn.data(), cv.data(), ip, xoff.data(), xv, weighted, gp, N, I, O);
  });
  return gw;
}

at::Tensor csr_wgrad(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, at::Tensor g, at::Tensor idx,
                     at::Tensor val, int64_t I, double ratio) {
  check(g, "g");
  return csr_wgrad_impl(rowptr, cols, vals, g, g.size(0), g.size(1), idx, val, I, ratio);
}

// The outer product of the two sets of non-zeros whatever its cost (no dense gradient to fall back on): O outputs.
at::Tensor csr_wgrad_outer(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, at::Tensor idx, at::Tensor val,
                           int64_t O, int64_t I) {
  return csr_wgrad_impl(rowptr, cols, vals, at::Tensor(), rowptr.numel() - 1, O, idx, val, I, 0.0);
}

}  // namespace

TORCH_LIBRARY(spikeforge_sparse, m) {
  m.def("sparse_fwd(Tensor idx, Tensor val, Tensor weight, Tensor bias, int N) -> Tensor");
  m.def("sparse_wgrad(Tensor idx, Tensor val, Tensor g, int I) -> Tensor");
  m.def("sparse_igrad(Tensor g, Tensor weight) -> Tensor");
  m.def("grad_csr(Tensor g, int max_nnz) -> (Tensor, Tensor, Tensor)");
  m.def("csr_igrad(Tensor rowptr, Tensor cols, Tensor vals, Tensor weight) -> Tensor");
  m.def("csr_wgrad(Tensor rowptr, Tensor cols, Tensor vals, Tensor g, Tensor idx, Tensor val, int I, float ratio)"
        " -> Tensor");
  m.def("csr_wgrad_outer(Tensor rowptr, Tensor cols, Tensor vals, Tensor idx, Tensor val, int O, int I) -> Tensor");
  m.def("csr_sddmm(Tensor rowptr, Tensor cols, Tensor vals, Tensor weight, Tensor brow, Tensor bcols, Tensor scale,"
        " int B) -> Tensor");
  m.def("csr_colsum(Tensor rowptr, Tensor cols, Tensor vals, int O) -> Tensor");
}

TORCH_LIBRARY_IMPL(spikeforge_sparse, CPU, m) {
  m.impl("sparse_fwd", &sparse_fwd);
  m.impl("sparse_wgrad", &sparse_wgrad);
  m.impl("sparse_igrad", &sparse_igrad);
  m.impl("grad_csr", &grad_csr);
  m.impl("csr_igrad", &csr_igrad);
  m.impl("csr_wgrad", &csr_wgrad);
  m.impl("csr_wgrad_outer", &csr_wgrad_outer);
  m.impl("csr_sddmm", &csr_sddmm);
  m.impl("csr_colsum", &csr_colsum);
}
