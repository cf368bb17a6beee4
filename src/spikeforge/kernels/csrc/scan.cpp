// Fused CPU time-loop scans for spikeforge (forward and BPTT backward), compiled on first use.
//
// The equations restate src/spikeforge/dynamics/{if_neuron,lif,cuba_lif,adaptive_lif,common}.py
// operation by operation (same order, no fused multiply-add) so that spikes equal the reference scan bit for bit;
// tests/test_kernels_cpu.py pins every model, reset mode, refractoriness and surrogate to it.
//
// Layout: every tensor is flattened to [T, N] (N = batch x neurons). Parameters arrive as one [6, N] tensor,
// rows: alpha, beta (cuba_lif) or rho (adaptive_lif), b, v_th, v_leak, v_reset. "aux" is the second state
// variable (synaptic current i or AHP current a); unused for if/lif.
// The forward saves for backward only the membrane after integration and refractory hold (vh, one value per
// step and neuron); spikes are the forward's own output; the refractory mask is recomputed from the spikes.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <tuple>
#include <vector>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>  // AVX-512 paths, chosen at run time
#endif

namespace {

enum Model : int64_t { IF = 0, LIF = 1, CUBA = 2, ADAPTIVE = 3 };
enum Reset : int64_t { SUBTRACT = 0, VALUE = 1, NONE = 2 };
enum Surr : int64_t { FAST_SIGMOID = 0, ARCTAN = 1, SIGMOID = 2, TRIANGLE = 3, BOXCAR = 4, STRAIGHT = 5 };

constexpr int64_t kGrain = 256;
constexpr int64_t kBlock = 512;

template <typename S>
inline S surrogate_d(int64_t kind, S x, S s) {
  const S one = 1, half = S(0.5);
  switch (kind) {
    case FAST_SIGMOID: {
      S q = one + std::abs(s * x);
      return half * s / (q * q);
    }
    case ARCTAN: {
      S u = S(0.5 * M_PI) * s * x;
      return half * s / (one + u * u);
    }
    case SIGMOID: {
      S sig = one / (one + std::exp(-(s * x)));
      return s * sig * (one - sig);
    }
    case TRIANGLE: {
      S u = one - std::abs(s * x);
      return s * (u > 0 ? u : S(0));
    }
    case BOXCAR:
      return std::abs(s * x) < half ? s : S(0);
    default:
      return one;
  }
}

// Calls f(integral_constant<model>, integral_constant<reset>, bool_constant<has_ref>) so that loops are compiled
// once per combination, without branches on the settings inside them.
template <typename F>
inline void with_cfg(int64_t model, int64_t reset, bool has_ref, F&& f) {
  auto by_ref = [&](auto m, auto r) {
    if (has_ref)
      f(m, r, std::true_type{});
    else
      f(m, r, std::false_type{});
  };
  auto by_reset = [&](auto m) {
    switch (reset) {
      case SUBTRACT: by_ref(m, std::integral_constant<int64_t, SUBTRACT>{}); break;
      case VALUE: by_ref(m, std::integral_constant<int64_t, VALUE>{}); break;
      default: by_ref(m, std::integral_constant<int64_t, NONE>{}); break;
    }
  };
  switch (model) {
    case IF: by_reset(std::integral_constant<int64_t, IF>{}); break;
    case LIF: by_reset(std::integral_constant<int64_t, LIF>{}); break;
    case CUBA: by_reset(std::integral_constant<int64_t, CUBA>{}); break;
    default: by_reset(std::integral_constant<int64_t, ADAPTIVE>{}); break;
  }
}

// One forward step for neuron j. v, aux, ref are that neuron's state (updated in place).
// Returns the spike; vh_out receives the membrane after integration and refractory hold.
template <typename S, int64_t M, int64_t R, bool REF>
inline S step_fwd(int64_t refr, const S* p, int64_t n, int64_t j, S x, S& v, S& aux, int32_t* ref, S& vh_out) {
  const S one = 1;
  const S al = p[j], be = p[n + j], th = p[3 * n + j], vl = p[4 * n + j];
  S u, am = 0;
  if constexpr (M == IF) {
    u = v + x;
  } else if constexpr (M == LIF) {
    u = vl + al * (v - vl) + (one - al) * x;
  } else if constexpr (M == CUBA) {
    aux = be * aux + (one - be) * x;
    u = vl + al * (v - vl) + (one - al) * aux;
  } else {
    am = be * aux;
    u = vl + al * (v - vl) + (one - al) * (x - am);
  }
  S z;
  if constexpr (REF) {
    const int32_t r = ref[j];
    const bool active = r <= 0;
    u = active ? u : v;
    z = (active && (u - th) > 0) ? one : S(0);
    ref[j] = z > 0 ? int32_t(refr) : (r - 1 > 0 ? r - 1 : 0);
  } else {
    z = (u - th) > 0 ? one : S(0);
  }
  vh_out = u;
  if constexpr (R == SUBTRACT) {
    v = u - z * th;
  } else if constexpr (R == VALUE) {
    v = u - z * (u - p[5 * n + j]);
  } else {
    v = u;
  }
  if constexpr (M == ADAPTIVE) aux = am + p[2 * n + j] * z;
  return z;
}

// One time step of the forward for neurons [j0, j1); restrict-qualified so that the loop vectorises.
template <typename S, int64_t M, int64_t R, bool REF>
void fwd_row(int64_t refr, const S* __restrict__ p, int64_t n, int64_t j0, int64_t j1, const S* __restrict__ x,
             S* __restrict__ v, S* __restrict__ aux, int32_t* __restrict__ ref, S* __restrict__ z,
             S* __restrict__ vh) {
  for (int64_t j = j0; j < j1; ++j) z[j] = step_fwd<S, M, R, REF>(refr, p, n, j, x[j], v[j], aux[j], ref, vh[j]);
}

// The same step where the saved membrane overwrites the input: each x[j] is read (by value) before vh[j] is
// written, and the one pointer carries no restrict qualifier, so the aliasing is well defined.
template <typename S, int64_t M, int64_t R, bool REF>
void fwd_row_into(int64_t refr, const S* __restrict__ p, int64_t n, int64_t j0, int64_t j1, S* xv,
                  S* __restrict__ v, S* __restrict__ aux, int32_t* __restrict__ ref, S* __restrict__ z) {
  for (int64_t j = j0; j < j1; ++j) {
    const S xj = xv[j];
    z[j] = step_fwd<S, M, R, REF>(refr, p, n, j, xj, v[j], aux[j], ref, xv[j]);
  }
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "spikeforge scan: ", name, " must be a contiguous CPU tensor");
}

// The forward over all steps: x [T, N]; p [6, N]; v, aux [N] updated in place; ref [N] int32 (numel 0: no
// refractoriness); z [T, N] written. The membrane saved for backward goes to vh [T, N] (when defined), over x
// itself (into: the caller owns x and no longer needs it), or nowhere.
void run_fwd(const at::Tensor& x, const at::Tensor& p, at::Tensor& v, at::Tensor& aux, at::Tensor& ref,
             int64_t model, int64_t reset, int64_t refr, at::Tensor& z, const at::Tensor& vh, bool into) {
  check_cpu(x, "x");
  check_cpu(p, "p");
  check_cpu(v, "v");
  check_cpu(aux, "aux");
  const int64_t T = x.size(0), N = x.size(1);
  const bool has_ref = ref.numel() > 0, save = vh.defined();
  if (has_ref) check_cpu(ref, "ref");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spikeforge_scan_fwd", [&] {
    scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* pp = p.data_ptr<scalar_t>();
    scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* ap = aux.data_ptr<scalar_t>();
    int32_t* rp = has_ref ? ref.data_ptr<int32_t>() : nullptr;
    scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* hp = save ? vh.data_ptr<scalar_t>() : nullptr;
    with_cfg(model, reset, has_ref, [&](auto m, auto r, auto ref_c) {
      at::parallel_for(0, N, kGrain, [&](int64_t j0, int64_t j1) {
        std::vector<scalar_t> scratch(save || into ? 0 : kBlock);
        for (int64_t jb = j0; jb < j1; jb += kBlock) {  // blocks of neurons whose state stays in cache
          const int64_t je = std::min(j1, jb + kBlock);
          for (int64_t t = 0; t < T; ++t) {
            const int64_t o = t * N;
            if (into)
              fwd_row_into<scalar_t, m(), r(), ref_c()>(refr, pp, N, jb, je, xp + o, vp, ap, rp, zp + o);
            else
              fwd_row<scalar_t, m(), r(), ref_c()>(refr, pp, N, jb, je, xp + o, vp, ap, rp, zp + o,
                                                   save ? hp + o : scratch.data() - jb);
          }
        }
      });
    });
  });
}

// Returns (z [T, N], vh [T, N] or empty when save is false); see run_fwd.
std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& x, const at::Tensor& p, at::Tensor v, at::Tensor aux,
                                            at::Tensor ref, int64_t model, int64_t reset, int64_t refr, bool save) {
  auto z = at::empty_like(x);
  auto vh = save ? at::empty_like(x) : at::Tensor();
  run_fwd(x, p, v, aux, ref, model, reset, refr, z, vh, false);
  return {z, save ? vh : at::empty({0}, x.options())};
}

// Like scan_fwd with save=true, but the saved membrane is written over x (which the caller owns and no longer
// needs): x [T, N] becomes vh. Returns z [T, N].
at::Tensor scan_fwd_into(at::Tensor x, const at::Tensor& p, at::Tensor v, at::Tensor aux, at::Tensor ref,
                         int64_t model, int64_t reset, int64_t refr) {
  auto z = at::empty_like(x);
  run_fwd(x, p, v, aux, ref, model, reset, refr, z, at::Tensor(), true);
  return z;
}

struct BCfg {
  int64_t model, reset, refr, surr;
  bool detach;
  double scale, band;
};

// Is neuron j active (not refractory) at step t? Recomputed from the spikes and the initial counter.
template <typename S>
inline bool active_at(const S* z, const int32_t* ref0, int64_t n, int64_t j, int64_t t, int64_t refr) {
  if (ref0[j] > t) return false;
  const int64_t lo = t - refr > 0 ? t - refr : 0;
  for (int64_t s = lo; s < t; ++s)
    if (z[s * n + j] > 0) return false;
  return true;
}

// Surrogate derivative of d = vh - v_th for neurons [j0, j1) of one step, zero outside the sparse-backward band
// when BAND. The switch on the surrogate sits outside the loops so that each loop is simple.
template <typename S, bool BAND>
void fill_surrogate_impl(const BCfg& c, const S* __restrict__ vh, const S* __restrict__ th, int64_t j0, int64_t j1,
                         S* __restrict__ out) {
  const S s = S(c.scale), one = 1, half = S(0.5), k = S(0.5 * M_PI) * S(c.scale), band = S(c.band);
  auto put = [&](int64_t j, S d, S val) {  // branch-free mask (a branch here mispredicts): times 0 or 1
    if constexpr (BAND)
      out[j - j0] = val * (half - half * std::copysign(one, std::abs(d) - band));  // 1 iff |d| < band
    else
      out[j - j0] = val;
  };
  switch (c.surr) {
    case FAST_SIGMOID:
      for (int64_t j = j0; j < j1; ++j) {
        const S d = vh[j] - th[j], q = one + std::abs(s * d);
        put(j, d, half * s / (q * q));
      }
      break;
    case ARCTAN:
      for (int64_t j = j0; j < j1; ++j) {
        const S d = vh[j] - th[j], u = k * d;
        put(j, d, half * s / (one + u * u));
      }
      break;
    case TRIANGLE:
      for (int64_t j = j0; j < j1; ++j) {
        const S d = vh[j] - th[j], u = one - std::abs(s * d);
        put(j, d, s * (u > 0 ? u : S(0)));
      }
      break;
    case BOXCAR:
      for (int64_t j = j0; j < j1; ++j) {
        const S d = vh[j] - th[j];
        put(j, d, std::abs(s * d) < half ? s : S(0));
      }
      break;
    case STRAIGHT:
      for (int64_t j = j0; j < j1; ++j) put(j, vh[j] - th[j], one);
      break;
    default:
      for (int64_t j = j0; j < j1; ++j) {
        const S d = vh[j] - th[j];
        put(j, d, surrogate_d<S>(c.surr, d, s));
      }
      break;
  }
}

template <typename S>
void fill_surrogate(const BCfg& c, const S* vh, const S* th, int64_t j0, int64_t j1, S* out) {
  if (c.band > 0)
    fill_surrogate_impl<S, true>(c, vh, th, j0, j1, out);
  else
    fill_surrogate_impl<S, false>(c, vh, th, j0, j1, out);
}

// Surrogate derivative for one neuron (zero outside the band), for the loops that go neuron by neuron.
template <typename S>
inline S surrogate_one(const BCfg& c, S d) {
  const S sg = surrogate_d<S>(c.surr, d, S(c.scale));
  if (c.band <= 0) return sg;
  return sg * (S(0.5) - S(0.5) * std::copysign(S(1), std::abs(d) - S(c.band)));  // branch-free |d| < band
}

// One backward step for neuron j. sg: surrogate derivative at this step (zero outside the band); active: not
// refractory; keep: 0 under sparse backward where the membrane is outside the band, so no gradient passes through
// it (to the input, the previous membrane or the spike; a synaptic or adaptation current keeps its own chain),
// else 1 (a multiplication, not a branch: the in-band pattern is random and would mispredict). gv, gaux: gradients w.r.t. the state after the step (in), before it (out). gz: gradient w.r.t. the
// spike. Returns the gradient w.r.t. the input x_t. Mirrors autograd of dynamics/*.py step by step.
template <typename S, int64_t M, int64_t R, bool REF>
inline S step_bwd(bool detach, const S* p, int64_t n, int64_t j, S vh, S z, bool active, S sg, S gz, S& gv,
                  S& gaux, S keep = S(1)) {
  const S one = 1;
  const S al = p[j], be = p[n + j];
  const S gan = gaux;
  if constexpr (M == ADAPTIVE) gz = gz + p[2 * n + j] * gan;
  S gvh = gv;
  if constexpr (R == SUBTRACT) {
    if (!detach) gz = gz - p[3 * n + j] * gv;
  } else if constexpr (R == VALUE) {
    gvh = gv * (one - z);
    if (!detach) gz = gz - (vh - p[5 * n + j]) * gv;
  }
  S gu, gprev = 0;
  if constexpr (REF) {
    if (active) {
      gu = gvh + gz * sg;
    } else {
      gu = 0;
      gprev = gvh;
    }
  } else {
    gu = gvh + gz * sg;
  }
  // sparse backward, membrane outside the band (keep = 0): a constant, no gradient passes through it
  gu = gu * keep;
  gprev = gprev * keep;
  S gx;
  if constexpr (M == IF) {
    gv = gprev + gu;
    gx = gu;
  } else if constexpr (M == LIF) {
    gv = gprev + al * gu;
    gx = (one - al) * gu;
  } else if constexpr (M == CUBA) {
    gv = gprev + al * gu;
    const S gi = gaux + (one - al) * gu;
    gx = (one - be) * gi;
    gaux = be * gi;
  } else {
    gv = gprev + al * gu;
    gx = (one - al) * gu;
    gaux = be * (gan - gx);
  }
  return gx;
}

// The backward of one step for neurons [j0, j1) (at most kBlock): h, g, gx point at step t's row; z at the whole
// [T, N] spikes. SPARSE: keep = |v - v_th| < band, branch-free (the in-band pattern is random); else keep is the
// constant 1 and the multiplications fold away. The results go to a local buffer first and are copied to gx after
// the loop: gx may be h itself (in-place backward), and with every pointer of the loop restrict-qualified the
// compiler vectorises it (it would not with a possible alias). A contiguous gz (stride 1) gets its own loop.
template <typename S, int64_t M, int64_t R, bool REF, bool SPARSE, bool CONTIG>
inline void bwd_rows_impl(bool detach, const S* __restrict__ p, const S* __restrict__ th, int64_t n, int64_t j0,
                          int64_t j1, int64_t t, int64_t refr, S band, const S* __restrict__ h,
                          const S* __restrict__ z, const int32_t* __restrict__ r0, const S* __restrict__ sg,
                          const S* __restrict__ g, int64_t gsn, S* __restrict__ gv, S* __restrict__ ga,
                          S* __restrict__ out) {
  for (int64_t j = j0; j < j1; ++j) {
    const bool active = !REF || active_at<S>(z, r0, n, j, t, refr);
    const S keep = SPARSE ? S(std::abs(h[j] - th[j]) < band) : S(1);
    out[j - j0] = step_bwd<S, M, R, REF>(detach, p, n, j, h[j], z[t * n + j], active, sg[j - j0],
                                         g[CONTIG ? j : j * gsn], gv[j], ga[j], keep);
  }
}

template <typename S, int64_t M, int64_t R, bool REF, bool SPARSE>
void bwd_rows(bool detach, const S* p, const S* th, int64_t n, int64_t j0, int64_t j1, int64_t t, int64_t refr,
              S band, const S* h, const S* z, const int32_t* r0, const S* sg, const S* g, int64_t gsn, S* gv, S* ga,
              S* gx) {
  S out[kBlock];
  if (gsn == 1)
    bwd_rows_impl<S, M, R, REF, SPARSE, true>(detach, p, th, n, j0, j1, t, refr, band, h, z, r0, sg, g, gsn, gv, ga,
                                              out);
  else
    bwd_rows_impl<S, M, R, REF, SPARSE, false>(detach, p, th, n, j0, j1, t, refr, band, h, z, r0, sg, g, gsn, gv, ga,
                                               out);
  std::copy(out, out + (j1 - j0), gx + j0);
}

// gz [T, N] (gradient w.r.t. spikes; any strides, e.g. the stride-0 expansion that `out.sum()` sends back); vh, z
// [T, N] from the forward; gv, gaux [N]: gradients w.r.t. the final state (updated in place to those w.r.t. the
// initial state). ref0 [N] int32 initial counter (numel 0: none). inplace: write the gradient w.r.t. x over vh
// (each vh[t, j] is read before gx[t, j] is written; vh is dead afterwards) instead of a new tensor.
at::Tensor scan_bwd(const at::Tensor& gz, at::Tensor vh, const at::Tensor& z, const at::Tensor& p,
                    const at::Tensor& ref0, at::Tensor gv, at::Tensor gaux, int64_t model, int64_t reset, int64_t refr,
                    bool detach, int64_t surr, double scale, double band, bool inplace) {
  TORCH_CHECK(gz.device().is_cpu(), "spikeforge scan: gz must be a CPU tensor");
  check_cpu(vh, "vh");
  check_cpu(z, "z");
  check_cpu(gv, "gv");
  check_cpu(gaux, "gaux");
  const int64_t T = vh.size(0), N = vh.size(1);
  TORCH_CHECK(gz.dim() == 2 && gz.size(0) == T && gz.size(1) == N, "gz must be [T, N]");
  TORCH_CHECK(vh.is_contiguous(), "vh must be contiguous");
  auto gx = inplace ? vh : at::empty({T, N}, vh.options());
  const int64_t gst = gz.stride(0), gsn = gz.stride(1);
  const bool has_ref = ref0.numel() > 0;
  BCfg c{model, reset, refr, surr, detach, scale, band};
  AT_DISPATCH_FLOATING_TYPES(vh.scalar_type(), "spikeforge_scan_bwd", [&] {
    const scalar_t* gzp = gz.data_ptr<scalar_t>();
    const scalar_t* hp = vh.data_ptr<scalar_t>();
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* pp = p.data_ptr<scalar_t>();
    const int32_t* r0 = has_ref ? ref0.data_ptr<int32_t>() : nullptr;
    scalar_t* gvp = gv.data_ptr<scalar_t>();
    scalar_t* gap = gaux.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    const scalar_t* thp = pp + 3 * N;
    with_cfg(model, reset, has_ref, [&](auto m, auto r, auto ref_c) {
      at::parallel_for(0, N, kGrain, [&](int64_t j0, int64_t j1) {
        std::vector<scalar_t> sg(kBlock);
        for (int64_t jb = j0; jb < j1; jb += kBlock) {
          const int64_t je = std::min(j1, jb + kBlock);
          for (int64_t t = T - 1; t >= 0; --t) {
            const int64_t o = t * N;
            // unmasked: under sparse backward bwd_rows multiplies the whole step's gradient by the band mask
            fill_surrogate_impl<scalar_t, false>(c, hp + o, thp, jb, je, sg.data());
            if (band > 0)
              bwd_rows<scalar_t, m(), r(), ref_c(), true>(detach, pp, thp, N, jb, je, t, refr, scalar_t(band), hp + o,
                                                          zp, r0, sg.data(), gzp + t * gst, gsn, gvp, gap, gxp + o);
            else
              bwd_rows<scalar_t, m(), r(), ref_c(), false>(detach, pp, thp, N, jb, je, t, refr, scalar_t(band), hp + o,
                                                           zp, r0, sg.data(), gzp + t * gst, gsn, gvp, gap, gxp + o);
          }
        }
      });
    });
  });
  return gx;
}

// ---- Sparse backward kept compact (IF and LIF without refractoriness) -------------------------------------------
// Under sparse backward an IF or LIF neuron-step outside the band passes no gradient at all: its input gradient is
// zero and the gradient w.r.t. the membrane before it is zero (the chain back in time restarts at the next in-band
// step). So the backward needs only the in-band steps, and the forward keeps just those: their flat positions
// t * N + j and their membranes vh, grouped by (step, block of kBlock neurons) in step-major order (so positions are
// sorted) with offsets [T * nb + 1]. The backward zero-fills gx and visits only these entries, block by block in
// reverse time; a neuron's gradient w.r.t. its membrane carries over only between consecutive in-band steps.

// The entries of h [n] with |h - th| < band: local indices to idx and values to val (both with 16 entries of
// slack); returns how many. AVX-512 where the CPU has it (compare, compress in registers, store whole vectors), else
// chunks of 16 with one vectorised test each (most chunks are empty at the densities where this pays).
template <typename S>
int64_t band_select_plain(const S* h, const S* th, int64_t n, S band, int32_t* idx, S* val) {
  int64_t k = 0;
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t j1 = std::min(n, j0 + 16);
    int any = 0;
    for (int64_t j = j0; j < j1; ++j) any |= int(std::abs(h[j] - th[j]) < band);
    if (!any) continue;
    for (int64_t j = j0; j < j1; ++j)
      if (std::abs(h[j] - th[j]) < band) {
        idx[k] = int32_t(j);
        val[k] = h[j];
        ++k;
      }
  }
  return k;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) int64_t band_select_avx512(const float* h, const float* th, int64_t n,
                                                               float band, int32_t* idx, float* val) {
  int64_t k = 0, j = 0;
  __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  const __m512 bv = _mm512_set1_ps(band);
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_loadu_ps(h + j);
    const __m512 d = _mm512_abs_ps(_mm512_sub_ps(v, _mm512_loadu_ps(th + j)));
    const __mmask16 m = _mm512_cmp_ps_mask(d, bv, _CMP_LT_OQ);  // as std::abs(h - th) < band (NaN: false)
    if (m) {
      _mm512_storeu_ps(val + k, _mm512_maskz_compress_ps(m, v));
      _mm512_storeu_si512(idx + k, _mm512_maskz_compress_epi32(m, iota));
      k += __builtin_popcount(m);
    }
    iota = _mm512_add_epi32(iota, step);
  }
  for (; j < n; ++j)
    if (std::abs(h[j] - th[j]) < band) {
      idx[k] = int32_t(j);
      val[k] = h[j];
      ++k;
    }
  return k;
}
__attribute__((target("avx512f"))) int64_t band_select_avx512(const double* h, const double* th, int64_t n,
                                                               double band, int32_t* idx, double* val) {
  int64_t k = 0, j = 0;
  __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i step = _mm512_setr_epi32(8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512d bv = _mm512_set1_pd(band);
  for (; j + 8 <= n; j += 8) {
    const __m512d v = _mm512_loadu_pd(h + j);
    const __m512d d = _mm512_abs_pd(_mm512_sub_pd(v, _mm512_loadu_pd(th + j)));
    const __mmask8 m = _mm512_cmp_pd_mask(d, bv, _CMP_LT_OQ);
    if (m) {
      _mm512_storeu_pd(val + k, _mm512_maskz_compress_pd(m, v));
      _mm512_storeu_si512(idx + k, _mm512_maskz_compress_epi32(__mmask16(m), iota));
      k += __builtin_popcount(m);
    }
    iota = _mm512_add_epi32(iota, step);
  }
  for (; j < n; ++j)
    if (std::abs(h[j] - th[j]) < band) {
      idx[k] = int32_t(j);
      val[k] = h[j];
      ++k;
    }
  return k;
}
template <typename S>
int64_t band_select(const S* h, const S* th, int64_t n, S band, int32_t* idx, S* val) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 ? band_select_avx512(h, th, n, band, idx, val) : band_select_plain<S>(h, th, n, band, idx, val);
}
#else
template <typename S>
int64_t band_select(const S* h, const S* th, int64_t n, S band, int32_t* idx, S* val) {
  return band_select_plain<S>(h, th, n, band, idx, val);
}
#endif

// Returns (z [T, N], pos [nnz] int64, vhb [nnz], offsets [T * nb + 1] int64). The forward arithmetic is run_fwd's.
// max_fraction: when a block of neurons has more than this fraction of its steps in the band, the scan stops and
// returns empty offsets (v, aux are then partly advanced: the caller starts over with scan_fwd on fresh state).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scan_fwd_band(const at::Tensor& x, const at::Tensor& p,
                                                                         at::Tensor v, at::Tensor aux, int64_t model,
                                                                         int64_t reset, double band,
                                                                         double max_fraction) {
  check_cpu(x, "x");
  check_cpu(p, "p");
  check_cpu(v, "v");
  check_cpu(aux, "aux");
  TORCH_CHECK(model == IF || model == LIF, "scan_fwd_band: IF or LIF only");
  const int64_t T = x.size(0), N = x.size(1), nb = (N + kBlock - 1) / kBlock;
  auto z = at::empty_like(x);
  std::vector<int64_t> cnt(T * nb + 1, 0);  // entries of (t, block) at [t * nb + b + 1], then prefix sums
  std::vector<std::vector<int64_t>> bpos(nb);
  std::atomic<bool> abort{false};
  at::Tensor pos, vhb;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spikeforge_scan_fwd_band", [&] {
    using S = scalar_t;
    const S* xp = x.data_ptr<S>();
    const S* pp = p.data_ptr<S>();
    const S* th = pp + 3 * N;
    S* vp = v.data_ptr<S>();
    S* ap = aux.data_ptr<S>();
    S* zp = z.data_ptr<S>();
    const S bnd = S(band);
    std::vector<std::vector<S>> bvh(nb);
    with_cfg(model, reset, false, [&](auto m, auto r, auto ref_c) {
      at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
        S h[kBlock];
        int32_t lj[kBlock + 16];  // in-band neurons of one row of the block (local index) and their membranes
        S lh[kBlock + 16];
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t jb = b * kBlock, je = std::min(N, jb + kBlock);
          auto& ps = bpos[b];
          auto& hs = bvh[b];
          for (int64_t t = 0; t < T; ++t) {
            const int64_t o = t * N;
            fwd_row<S, m(), r(), false>(0, pp, N, jb, je, xp + o, vp, ap, nullptr, zp + o, h - jb);
            const int64_t c0 = int64_t(ps.size());
            const int64_t k = band_select(h, th + jb, je - jb, bnd, lj, lh);
            for (int64_t q = 0; q < k; ++q) {
              ps.push_back(o + jb + lj[q]);
              hs.push_back(lh[q]);
            }
            cnt[t * nb + b + 1] = int64_t(ps.size()) - c0;
            if (abort.load(std::memory_order_relaxed)) return;
          }
          if (double(ps.size()) > max_fraction * double(T * (je - jb))) {
            abort.store(true);
            return;
          }
        }
      });
    });
    if (abort.load()) return;
    for (int64_t k = 0; k < T * nb; ++k) cnt[k + 1] += cnt[k];
    pos = at::empty({cnt[T * nb]}, x.options().dtype(at::kLong));
    vhb = at::empty({cnt[T * nb]}, x.options());
    int64_t* po = pos.data_ptr<int64_t>();
    S* ho = vhb.data_ptr<S>();
    at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        int64_t q = 0;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t k0 = cnt[t * nb + b], k1 = cnt[t * nb + b + 1];
          std::copy(bpos[b].begin() + q, bpos[b].begin() + q + (k1 - k0), po + k0);
          std::copy(bvh[b].begin() + q, bvh[b].begin() + q + (k1 - k0), ho + k0);
          q += k1 - k0;
        }
      }
    });
  });
  if (abort.load()) {
    auto none = at::empty({0}, x.options().dtype(at::kLong));
    return {z, none, at::empty({0}, x.options()), none};
  }
  auto offsets = at::empty({T * nb + 1}, x.options().dtype(at::kLong));
  std::copy(cnt.begin(), cnt.end(), offsets.data_ptr<int64_t>());
  return {z, pos, vhb, offsets};
}

// Backward of scan_fwd_band: gz [T, N] (any strides); gv [N] gradient w.r.t. the final membrane, updated in place to
// the one w.r.t. the initial membrane. Returns gx [T, N], zero outside the band.
// out: a [T, N] buffer the caller owns and no longer needs (e.g. the donated input of the forward) to receive gx, or
// an empty tensor (a new one is allocated: at first touch its pages cost the kernel's zeroing besides ours).
// vals: true: return the gradient of the in-band entries only, [nnz] in the order of pos (no [T, N] tensor at all:
// for a caller that forms the Linear layer's gradients from them, kernels/fused_linear.py), and out is unused.
at::Tensor bwd_band_impl(const at::Tensor& gz, const at::Tensor& pos, const at::Tensor& vhb, const at::Tensor& offsets,
                         const at::Tensor& z, const at::Tensor& p, at::Tensor gv, at::Tensor out, int64_t model,
                         int64_t reset, bool detach, int64_t surr, double scale, bool vals) {
  // gz [nnz] (1-D, contiguous): the output gradient at the in-band entries only, in the order of pos (a caller that
  // formed just those, e.g. kernels/fused_linear.py's chain of layers); else [T, N]
  const bool gz_compact = gz.dim() == 1;
  TORCH_CHECK(gz.device().is_cpu() &&
                  (gz.dim() == 2 || (gz_compact && gz.numel() == pos.numel() && gz.is_contiguous())),
              "spikeforge scan: gz must be a [T, N] CPU tensor or the [nnz] values at pos");
  check_cpu(pos, "pos");
  check_cpu(vhb, "vhb");
  check_cpu(offsets, "offsets");
  check_cpu(z, "z");
  check_cpu(gv, "gv");
  TORCH_CHECK(model == IF || model == LIF, "scan_bwd_band: IF or LIF only");
  const int64_t T = z.size(0), N = z.size(1), nb = (N + kBlock - 1) / kBlock;
  TORCH_CHECK(offsets.numel() == T * nb + 1 && (gz_compact || (gz.size(0) == T && gz.size(1) == N)),
              "scan_bwd_band: shapes");
  if (!vals && out.numel() > 0) {
    check_cpu(out, "out");
    TORCH_CHECK(out.sizes() == z.sizes() && out.scalar_type() == z.scalar_type(), "scan_bwd_band: out must be like z");
  }
  auto gx = vals ? at::empty({pos.numel()}, z.options()) : out.numel() > 0 ? out : at::empty({T, N}, z.options());
  const int64_t gst = gz_compact ? 0 : gz.stride(0), gsn = gz_compact ? 0 : gz.stride(1);
  BCfg c{model, reset, 0, surr, detach, scale, 0.0};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "spikeforge_scan_bwd_band", [&] {
    using S = scalar_t;
    const S* gzp = gz.data_ptr<S>();
    const int64_t* po = pos.data_ptr<int64_t>();
    const S* hp = vhb.data_ptr<S>();
    const int64_t* off = offsets.data_ptr<int64_t>();
    const S* pp = p.data_ptr<S>();
    S* gvp = gv.data_ptr<S>();
    S* gxp = gx.data_ptr<S>();
    with_cfg(model, reset, false, [&](auto m, auto r, auto ref_c) {
      at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
        std::vector<int64_t> last(kBlock);  // step of the neuron's latest (in reverse time) in-band entry
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t jb = b * kBlock, je = std::min(N, jb + kBlock);
          std::fill(last.begin(), last.end(), T);  // T: the final state, whose gradient gv holds
          for (int64_t t = T - 1; t >= 0; --t) {
            if (!vals) std::fill(gxp + t * N + jb, gxp + t * N + je, S(0));  // zeroed while the block is in cache
            for (int64_t k = off[t * nb + b]; k < off[t * nb + b + 1]; ++k) {
              const int64_t q = po[k], j = q - t * N;
              S g = last[j - jb] == t + 1 ? gvp[j] : S(0);
              S ga = 0;
              const S h = hp[k], d = h - pp[3 * N + j];
              const S sg = surrogate_d<S>(c.surr, d, S(c.scale));
              // the spike is the forward's own test on the kept membrane (no refractoriness here): no read of z,
              // whose entries at these scattered positions are mostly out of cache by now
              const S zq = d > S(0) ? S(1) : S(0);
              gxp[vals ? k : q] = step_bwd<S, m(), r(), false>(detach, pp, N, j, h, zq, true, sg,
                                                               gzp[gz_compact ? k : t * gst + j * gsn], g, ga);
              gvp[j] = g;
              last[j - jb] = t;
            }
          }
          for (int64_t j = jb; j < je; ++j)
            if (last[j - jb] != 0) gvp[j] = S(0);  // step 0 out of the band: no gradient reaches the initial state
        }
      });
    });
  });
  return gx;
}

at::Tensor scan_bwd_band(const at::Tensor& gz, const at::Tensor& pos, const at::Tensor& vhb,
                         const at::Tensor& offsets, const at::Tensor& z, const at::Tensor& p, at::Tensor gv,
                         at::Tensor out, int64_t model, int64_t reset, bool detach, int64_t surr, double scale) {
  return bwd_band_impl(gz, pos, vhb, offsets, z, p, gv, out, model, reset, detach, surr, scale, false);
}

at::Tensor scan_bwd_band_vals(const at::Tensor& gz, const at::Tensor& pos, const at::Tensor& vhb,
                              const at::Tensor& offsets, const at::Tensor& z, const at::Tensor& p, at::Tensor gv,
                              int64_t model, int64_t reset, bool detach, int64_t surr, double scale) {
  return bwd_band_impl(gz, pos, vhb, offsets, z, p, gv, at::Tensor(), model, reset, detach, surr, scale, true);
}

// The rows of in-band entries laid over a [R, width] matrix (CSR without values): rowptr [R + 1] int64 and cols int32,
// from their sorted flat positions pos (t * N + j = row * width + col when N is a multiple of width). One pass over
// pos, rows advanced by comparison (no division per entry). The Linear layer before the neuron layer forms its
// gradients from these and the in-band values.
std::tuple<at::Tensor, at::Tensor> band_rows(const at::Tensor& pos, int64_t width, int64_t R) {
  check_cpu(pos, "pos");
  TORCH_CHECK(width > 0 && R >= 0, "band_rows: width must be > 0 and rows >= 0");
  const int64_t nnz = pos.numel();
  auto rowptr = at::empty({R + 1}, pos.options());
  auto cols = at::empty({nnz}, pos.options().dtype(at::kInt));
  const int64_t* po = pos.data_ptr<int64_t>();
  int64_t* rp = rowptr.data_ptr<int64_t>();
  int32_t* cp = cols.data_ptr<int32_t>();
  int64_t r = 0, start = 0;
  rp[0] = 0;
  for (int64_t k = 0; k < nnz; ++k) {
    const int64_t q = po[k];
    TORCH_CHECK(q >= start && q < R * width, "band_rows: positions must be sorted and inside the matrix");
    while (q >= start + width) {
      rp[++r] = k;
      start += width;
    }
    cp[k] = int32_t(q - start);
  }
  while (r < R) rp[++r] = nnz;
  return {rowptr, cols};
}

// Recurrent layer: x_t = x_ff[t] + z_{t-1} @ w^T. x_ff [T, B, H]; wt = w^T contiguous [H, H]; z0 [B, H];
// p [6, B*H]; v, aux [B*H] and ref [B*H] updated in place. The recurrent product adds only the rows of wt whose
// presynaptic neuron spiked (a gather-add over active columns); dense steps use a matrix product.
std::tuple<at::Tensor, at::Tensor> rec_fwd(const at::Tensor& x_ff, const at::Tensor& wt, const at::Tensor& z0,
                                           const at::Tensor& p, at::Tensor v, at::Tensor aux, at::Tensor ref,
                                           int64_t model, int64_t reset, int64_t refr, bool save) {
  check_cpu(x_ff, "x_ff");
  check_cpu(wt, "w_rec");
  check_cpu(z0, "z0");
  const int64_t T = x_ff.size(0), B = x_ff.size(1), H = x_ff.size(2);
  auto z = at::empty({T, B, H}, x_ff.options());
  auto vh = save ? at::empty({T, B, H}, x_ff.options()) : at::empty({0}, x_ff.options());
  const bool has_ref = ref.numel() > 0;
  AT_DISPATCH_FLOATING_TYPES(x_ff.scalar_type(), "spikeforge_rec_fwd", [&] {
    const scalar_t* xp = x_ff.data_ptr<scalar_t>();
    const scalar_t* wp = wt.data_ptr<scalar_t>();
    const scalar_t* pp = p.data_ptr<scalar_t>();
    scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* ap = aux.data_ptr<scalar_t>();
    int32_t* rp = has_ref ? ref.data_ptr<int32_t>() : nullptr;
    scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* hp = save ? vh.data_ptr<scalar_t>() : nullptr;
    const scalar_t* z0p = z0.data_ptr<scalar_t>();
    const int64_t N = B * H;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> acc(H);
      std::vector<int64_t> idx(H);
      scalar_t dummy;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* zprev = t == 0 ? z0p + b * H : zp + ((t - 1) * B + b) * H;
          int64_t nnz = 0;
          for (int64_t k = 0; k < H; ++k)
            if (zprev[k] != 0) idx[nnz++] = k;
          std::fill(acc.begin(), acc.end(), scalar_t(0));
          for (int64_t q = 0; q < nnz; ++q) {
            const int64_t k = idx[q];
            const scalar_t zk = zprev[k];
            const scalar_t* row = wp + k * H;
            if (zk == scalar_t(1)) {
              for (int64_t h = 0; h < H; ++h) acc[h] += row[h];
            } else {
              for (int64_t h = 0; h < H; ++h) acc[h] += zk * row[h];
            }
          }
          const int64_t o = (t * B + b) * H;
          with_cfg(model, reset, has_ref, [&](auto m, auto r, auto ref_c) {
            for (int64_t h = 0; h < H; ++h) {
              const int64_t j = b * H + h;
              zp[o + h] = step_fwd<scalar_t, m(), r(), ref_c()>(refr, pp, N, j, xp[o + h] + acc[h], vp[j], ap[j],
                                                                  rp, hp ? hp[o + h] : dummy);
            }
          });
        }
      }
    });
  });
  return {z, vh};
}

// Dot product with 32 partial sums, so that it vectorises without reassociation flags; compiled for AVX2 too
// (picked at run time where the CPU has it).
template <typename S>
inline S dot_impl(const S* __restrict__ a, const S* __restrict__ b, int64_t n) {
  constexpr int K = 32;
  S acc[K] = {};
  int64_t i = 0;
  for (; i + K <= n; i += K)
    for (int q = 0; q < K; ++q) acc[q] += a[i + q] * b[i + q];
  for (int w = K / 2; w > 0; w /= 2)
    for (int q = 0; q < w; ++q) acc[q] += acc[q + w];
  S out = acc[0];
  for (; i < n; ++i) out += a[i] * b[i];
  return out;
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SPIKEFORGE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SPIKEFORGE_CLONES
#endif

SPIKEFORGE_CLONES float dot_f(const float* a, const float* b, int64_t n) { return dot_impl<float>(a, b, n); }
SPIKEFORGE_CLONES double dot_d(const double* a, const double* b, int64_t n) { return dot_impl<double>(a, b, n); }
inline float dot(const float* a, const float* b, int64_t n) { return dot_f(a, b, n); }
inline double dot(const double* a, const double* b, int64_t n) { return dot_d(a, b, n); }

// Backward of rec_fwd. gz [T, B, H] gradient w.r.t. spikes (the final-state spikes' gradient already added to the
// last step); w [H, H] as used in x_t = x_ff[t] + z_{t-1} @ w^T, wt = w^T contiguous. Returns (gx [T, B, H] =
// gradient w.r.t. x_ff, gz0 [B, H]); gv, gaux are updated in place as in scan_bwd. The recurrent gradient
// gx_t @ w is formed only for the neurons with a nonzero surrogate derivative at step t-1, so a narrow
// sparse-backward band or a flat surrogate skips most of that product.
std::tuple<at::Tensor, at::Tensor> rec_bwd(const at::Tensor& gz, const at::Tensor& vh, const at::Tensor& z,
                                           const at::Tensor& wt, const at::Tensor& p, const at::Tensor& ref0,
                                           const at::Tensor& z0, at::Tensor gv, at::Tensor gaux, int64_t model,
                                           int64_t reset, int64_t refr, bool detach, int64_t surr, double scale,
                                           double band) {
  check_cpu(gz, "gz");
  check_cpu(wt, "w_rec^T");
  const int64_t T = vh.size(0), B = vh.size(1), H = vh.size(2);
  auto gx = at::empty({T, B, H}, vh.options());
  auto grec = at::zeros({B, H}, vh.options());  // gradient w.r.t. z_t through the recurrence (from step t+1)
  const bool has_ref = ref0.numel() > 0;
  BCfg c{model, reset, refr, surr, detach, scale, band};
  const int64_t N = B * H;
  const at::Tensor w = wt.t();
  AT_DISPATCH_FLOATING_TYPES(vh.scalar_type(), "spikeforge_rec_bwd", [&] {
    const scalar_t* gzp = gz.data_ptr<scalar_t>();
    const scalar_t* hp = vh.data_ptr<scalar_t>();
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* pp = p.data_ptr<scalar_t>();
    const scalar_t* wtp = wt.data_ptr<scalar_t>();
    const int32_t* r0 = has_ref ? ref0.data_ptr<int32_t>() : nullptr;
    scalar_t* gvp = gv.data_ptr<scalar_t>();
    scalar_t* gap = gaux.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* grp = grec.data_ptr<scalar_t>();
    std::vector<scalar_t> sgv(N);  // surrogate derivative of every neuron at the step being processed
    scalar_t* sgp = sgv.data();
    std::vector<int64_t> counts(B);
    // sg for step t of row b (zero while refractory or outside the band); returns how many are nonzero.
    auto fill_sg = [&](int64_t b, int64_t t) {
      int64_t cnt = 0;
      for (int64_t k = 0; k < H; ++k) {
        const int64_t j = b * H + k;
        const bool act = r0 == nullptr || active_at<scalar_t>(zp, r0, N, j, t, refr);
        const scalar_t s = surrogate_one<scalar_t>(c, hp[t * N + j] - pp[3 * N + j]) * scalar_t(act);
        sgp[j] = s;
        cnt += s != scalar_t(0);
      }
      return cnt;
    };
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) fill_sg(b, T - 1);
    });
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t o = t * N;
      // Neuron backward at step t, then the surrogate at step t-1: its nonzeros are the neurons whose spike
      // gradient step t-1 reads, so only they need the recurrent gradient gx_t @ w.
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* g = grp + b * H;
          with_cfg(model, reset, has_ref, [&](auto m, auto r, auto ref_c) {
            for (int64_t h = 0; h < H; ++h) {
              const int64_t j = b * H + h;
              const bool active = !ref_c() || active_at<scalar_t>(zp, r0, N, j, t, refr);
              const scalar_t keep = scalar_t(band <= 0 || std::abs(hp[o + j] - pp[3 * N + j]) < scalar_t(band));
              gxp[o + j] = step_bwd<scalar_t, m(), r(), ref_c()>(detach, pp, N, j, hp[o + j], zp[o + j], active,
                                                                  sgp[j], gzp[o + j] + g[h], gvp[j], gap[j], keep);
            }
          });
          counts[b] = t > 0 ? fill_sg(b, t - 1) : H;
        }
      });
      int64_t total = 0;
      for (int64_t b = 0; b < B; ++b) total += counts[b];
      if (total * 8 > N) {  // dense enough (and always for z0's gradient): one matrix product g = gx_t @ w
        at::mm_out(grec, gx.select(0, t), w);
        continue;
      }
      // Sparse: g[b, k] = sum_h gx_t[b, h] w[h, k] only where step t-1 has a nonzero surrogate.
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<int64_t> nz(H);
        for (int64_t b = b0; b < b1; ++b) {
          scalar_t* g = grp + b * H;
          const scalar_t* gxb = gxp + o + b * H;
          int64_t m = 0;
          for (int64_t h = 0; h < H; ++h)
            if (gxb[h] != scalar_t(0)) nz[m++] = h;
          for (int64_t k = 0; k < H; ++k) {
            scalar_t acc = 0;
            if (m > 0 && sgp[b * H + k] != scalar_t(0)) {
              const scalar_t* col = wtp + k * H;  // w[:, k]
              if (2 * m > H) {
                acc = dot(gxb, col, H);
              } else {
                for (int64_t q = 0; q < m; ++q) acc += gxb[nz[q]] * col[nz[q]];
              }
            }
            g[k] = acc;
          }
        }
      });
    }
  });
  return {gx, grec};
}

// Weight gradient of the recurrence, sum_t gx_t^T z_{t-1}, as its transpose gwt [H, H] (row k: presynaptic
// neuron k), adding gx rows only where the presynaptic neuron spiked (z is mostly zero).
at::Tensor rec_wgrad(const at::Tensor& gx, const at::Tensor& z, const at::Tensor& z0) {
  check_cpu(gx, "gx");
  check_cpu(z, "z");
  check_cpu(z0, "z0");
  const int64_t T = gx.size(0), B = gx.size(1), H = gx.size(2);
  auto gwt = at::zeros({H, H}, gx.options());
  AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "spikeforge_rec_wgrad", [&] {
    const scalar_t* gxp = gx.data_ptr<scalar_t>();
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* z0p = z0.data_ptr<scalar_t>();
    scalar_t* gp = gwt.data_ptr<scalar_t>();
    at::parallel_for(0, H, 16, [&](int64_t k0, int64_t k1) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t* zprev = t == 0 ? z0p + b * H : zp + ((t - 1) * B + b) * H;
          const scalar_t* row = gxp + (t * B + b) * H;
          for (int64_t k = k0; k < k1; ++k) {
            const scalar_t zk = zprev[k];
            if (zk == scalar_t(0)) continue;
            scalar_t* out = gp + k * H;
            for (int64_t h = 0; h < H; ++h) out[h] += zk * row[h];
          }
        }
      }
    });
  });
  return gwt;
}

}  // namespace

TORCH_LIBRARY(spikeforge_scan, m) {
  m.def("scan_fwd(Tensor x, Tensor p, Tensor(a!) v, Tensor(b!) aux, Tensor(c!) ref, int model, int reset, int refr,"
        " bool save) -> (Tensor, Tensor)");
  m.def("scan_fwd_into(Tensor(d!) x, Tensor p, Tensor(a!) v, Tensor(b!) aux, Tensor(c!) ref, int model, int reset,"
        " int refr) -> Tensor");
  m.def("scan_bwd(Tensor gz, Tensor(c!) vh, Tensor z, Tensor p, Tensor ref0, Tensor(a!) gv, Tensor(b!) gaux, int model,"
        " int reset, int refr, bool detach, int surr, float scale, float band, bool inplace) -> Tensor");
  m.def("rec_fwd(Tensor x_ff, Tensor wt, Tensor z0, Tensor p, Tensor(a!) v, Tensor(b!) aux, Tensor(c!) ref,"
        " int model, int reset, int refr, bool save) -> (Tensor, Tensor)");
  m.def("rec_wgrad(Tensor gx, Tensor z, Tensor z0) -> Tensor");
  m.def("band_rows(Tensor pos, int width, int rows) -> (Tensor, Tensor)");
  m.def("scan_bwd_band_vals(Tensor gz, Tensor pos, Tensor vhb, Tensor offsets, Tensor z, Tensor p, Tensor(a!) gv,"
        " int model, int reset, bool detach, int surr, float scale) -> Tensor");
  m.def("scan_fwd_band(Tensor x, Tensor p, Tensor(a!) v, Tensor(b!) aux, int model, int reset, float band,"
        " float max_fraction) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("scan_bwd_band(Tensor gz, Tensor pos, Tensor vhb, Tensor offsets, Tensor z, Tensor p, Tensor(a!) gv,"
        " Tensor(b!) out, int model, int reset, bool detach, int surr, float scale) -> Tensor");
  m.def("rec_bwd(Tensor gz, Tensor vh, Tensor z, Tensor wt, Tensor p, Tensor ref0, Tensor z0, Tensor(a!) gv,"
        " Tensor(b!) gaux, int model, int reset, int refr, bool detach, int surr, float scale, float band)"
        " -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(spikeforge_scan, CPU, m) {
  m.impl("scan_fwd", &scan_fwd);
  m.impl("scan_fwd_into", &scan_fwd_into);
  m.impl("scan_bwd", &scan_bwd);
  m.impl("rec_fwd", &rec_fwd);
  m.impl("rec_bwd", &rec_bwd);
  m.impl("rec_wgrad", &rec_wgrad);
  m.impl("scan_fwd_band", &scan_fwd_band);
  m.impl("scan_bwd_band", &scan_bwd_band);
  m.impl("band_rows", &band_rows);
  m.impl("scan_bwd_band_vals", &scan_bwd_band_vals);
}
