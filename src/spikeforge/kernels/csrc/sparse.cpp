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
// cache), every sample n with g[n, o] != 0 adds g[n, o] (times x's value) at the inputs active in sample n. The
// non-zeros of g are regrouped by output first (CSC, a counting sort that keeps sample order).
template <typename T, bool Weighted>
void outer_rows(const int64_t* cp, const int64_t* cn, const T* cv, const int64_t* idx, const int64_t* xoff,
                const T* xv, T* gw, int64_t I, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    T* out = gw + o * I;
    std::fill(out, out + I, T(0));
    for (int64_t k = cp[o]; k < cp[o + 1]; ++k) {
      const int64_t n = cn[k];
      const T s = cv[k];
      const int64_t base = n * I, je = xoff[n + 1];
      for (int64_t j = xoff[n]; j < je; ++j) {
        if (Weighted)
          out[idx[j] - base] += s * xv[j];
        else
          out[idx[j] - base] += s;
      }
    }
  }
}

// idx/val: the input's non-zeros as for sparse_wgrad; g [N, O] the dense output gradient and (rowptr, cols, vals)
// its non-zeros (grad_csr). ratio: the outer product runs when its scalar additions times ratio are fewer than the
// row method's (nnz(x) * O), else sparse_wgrad's row method runs on g.
at::Tensor csr_wgrad(at::Tensor rowptr, at::Tensor cols, at::Tensor vals, at::Tensor g, at::Tensor idx,
                     at::Tensor val, int64_t I, double ratio) {
  check(rowptr, "rowptr"); check(cols, "cols"); check(vals, "vals"); check(g, "g"); check(idx, "idx");
  check(val, "val");
  const int64_t N = g.size(0), O = g.size(1);
  const bool weighted = val.numel() > 0;
  const auto xoff = row_offsets(idx, N, I);
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int32_t* cl = cols.data_ptr<int32_t>();
  double outer = 0;
  for (int64_t n = 0; n < N; ++n) outer += double(rp[n + 1] - rp[n]) * double(xoff[n + 1] - xoff[n]);
  if (outer * ratio >= double(idx.numel()) * double(O)) return sparse_wgrad(idx, val, g, I);
  const int64_t nnz = rp[N];
  std::vector<int64_t> cp(O + 1, 0), cn(nnz);
  for (int64_t k = 0; k < nnz; ++k) ++cp[cl[k] + 1];
  for (int64_t o = 0; o < O; ++o) cp[o + 1] += cp[o];
  auto gw = at::empty({O, I}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "spikeforge_csr_wgrad", [&] {
    const scalar_t* vp = vals.data_ptr<scalar_t>();
    std::vector<scalar_t> cv(nnz);
    {
      std::vector<int64_t> fill(cp.begin(), cp.end() - 1);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = rp[n]; k < rp[n + 1]; ++k) {
          const int64_t q = fill[cl[k]]++;
          cn[q] = n;
          cv[q] = vp[k];
        }
    }
    const scalar_t* xv = weighted ? val.data_ptr<scalar_t>() : nullptr;
    const int64_t* ip = idx.data_ptr<int64_t>();
    scalar_t* gp = gw.data_ptr<scalar_t>();
    at::parallel_for(0, O, 8, [&](int64_t o0, int64_t o1) {
      if (weighted)
        outer_rows<scalar_t, true>(cp.data(), cn.data(), cv.data(), ip, xoff.data(), xv, gp, I, o0, o1);
      else
        outer_rows<scalar_t, false>(cp.data(), cn.data(), cv.data(), ip, xoff.data(), xv, gp, I, o0, o1);
    });
  });
  return gw;
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
  m.def("csr_colsum(Tensor rowptr, Tensor cols, Tensor vals, int O) -> Tensor");
}

TORCH_LIBRARY_IMPL(spikeforge_sparse, CPU, m) {
  m.impl("sparse_fwd", &sparse_fwd);
  m.impl("sparse_wgrad", &sparse_wgrad);
  m.impl("sparse_igrad", &sparse_igrad);
  m.impl("grad_csr", &grad_csr);
  m.impl("csr_igrad", &csr_igrad);
  m.impl("csr_wgrad", &csr_wgrad);
  m.impl("csr_colsum", &csr_colsum);
}
