// Event-driven feed-forward current-based LIF layer (spikeforge.sim.event / spikeforge.sim.eventprop) on the CPU:
// exact spike times (forward) and EventProp gradients (backward), one sequential walk over a sample's merged, sorted
// input events per (sample, output neuron). The equations restate spikeforge.dynamics.cuba_lif_exact (evolve,
// psp_gain, peak_time, crossing_time with its Lambert / quadratic / Halley solvers, plus Newton on a polynomial in
// u = exp(-s/tau_mem) when tau_mem is exactly 3..8 times tau_syn) and the jump rules of spikeforge.sim.eventprop;
// all arithmetic runs in double whatever the tensor dtype.
//
// Forward: between two events the state (I, V) evolves freely; V has at most one extremum per interval, so a crossing
// exists iff V at the interval end or at the peak inside it reaches the threshold. With time constants shared by all
// neurons, the per-interval decay factors are computed once per sample and the common case (no crossing possible,
// membrane not held) costs a few multiply-adds; crossings, releases and the last interval take the exact path.
// Backward: the adjoint (lambda_V, lambda_I) just before every output spike by the jump rule, then a backward walk
// over the events before the last spike with the transposed propagator. Work is split over output neurons, so each
// thread owns rows of dL/dW; dL/dt of each event is summed over neurons in a per-thread buffer, reduced at the end.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps = std::numeric_limits<double>::epsilon();

struct Neuron {
  double tm, ts, th;
  double inv_tm, inv_ts;
  double cap;    // 800 max(tau): every exponential is exactly 0 beyond
  double delta;  // 1/tau_syn - 1/tau_mem
  double coef;   // tau_syn / (tau_mem - tau_syn) (direct form of g; unused when tau_mem == tau_syn)
  double a;      // (tau_mem - tau_syn) / tau_syn (peak time)
  double psi_a;  // log(1 + a) / a
  int m;         // tau_mem / tau_syn when that is exactly an integer in [3, 8] (polynomial crossing), else 0
};

inline double psi(double x) { return x == 0.0 ? 1.0 : std::log1p(x) / x; }

Neuron make_neuron(double tm, double ts, double th) {
  Neuron n{tm, ts, th, 1.0 / tm, 1.0 / ts, 800.0 * std::max(tm, ts), 1.0 / ts - 1.0 / tm, 0.0, (tm - ts) / ts, 0.0,
           0};
  n.coef = tm != ts ? ts / (tm - ts) : 0.0;
  n.psi_a = psi(n.a);
  for (int m = 3; m <= 8; ++m)
    if (tm == m * ts) n.m = m;
  return n;
}

// Free propagation over d seconds: I -> es I, V -> em V + g I, with g(d) the PSP gain (cancellation-free form
// (d/tm) e^{-d/tm} (1 - e^{-x})/x when |x| = |d (1/ts - 1/tm)| < 1, where e^{-d/ts} = e^{-d/tm} e^{-x}).
struct Gap {
  double es, em, g;
};

inline Gap prop(double dt, const Neuron& n) {
  const double d = std::min(dt, n.cap);
  const double dm = d * n.inv_tm;
  const double em = std::exp(-dm);
  const double x = d * n.delta;
  if (std::abs(x) < 1.0) {
    const double q = std::expm1(-x);
    const double phi = (x == 0.0) ? 1.0 : -q / x;
    return {em * (1.0 + q), em, dm * em * phi};
  }
  const double es = std::exp(-d * n.inv_ts);
  return {es, em, n.coef * (em - es)};
}

// Free evolution of (I, V) over dt >= 0 seconds.
inline void evolve(double& i, double& v, double dt, const Neuron& n) {
  const Gap p = prop(dt, n);
  v = v * p.em + p.g * i;
  i = i * p.es;
}

inline double v_at(double i, double v, double dt, const Neuron& n) {
  evolve(i, v, dt, n);
  return v;
}

// Time (>= 0) of the largest free membrane: 0 when it falls from the start, inf when it rises for ever.
inline double peak_time(double i, double v, const Neuron& n) {
  if (!(i > v && i > 0.0)) return 0.0;
  const double ratio = v / i;
  const double b = ratio * n.a;
  if (!(b > -1.0)) return kInf;
  return std::max(n.tm * (n.psi_a - ratio * psi(b)), 0.0);
}

// Principal branch W0(z) for z in [-1/e, 0]: branch-point series start, then Halley iterations.
inline double lambert_w0(double z) {
  z = std::min(std::max(z, -1.0 / M_E), 0.0);
  const double p = std::sqrt(std::max(2.0 * (M_E * z + 1.0), 0.0));
  const double series =
      -1.0 + p * (1.0 + p * (-1.0 / 3 + p * (11.0 / 72 + p * (-43.0 / 540 + p * 769.0 / 17280))));
  double w = (z > -0.25) ? z * (1.0 - z) : series;
  for (int it = 0; it < 8; ++it) {
    const double ew = std::exp(w);
    const double f = w * ew - z;
    double wp1 = w + 1.0;
    if (std::abs(wp1) < 1e-300) wp1 = 1e-300;
    double denom = ew * wp1 - (w + 2.0) * f / (2.0 * wp1);
    if (denom == 0.0) denom = 1.0;
    w = w - (f == 0.0 ? 0.0 : f / denom);
    w = std::min(std::max(w, -1.0), 0.0);
  }
  static const double kSeriesBelow = std::pow(kEps, 0.2);
  return (p < kSeriesBelow) ? series : w;
}

// tau_mem == tau_syn == tau: s / tau = -W0(z) - V0/I0, z = -(th/I0) exp(-V0/I0).
inline double crossing_lambert(double i, double v, double th, double tau) {
  const double si = i > 0.0 ? i : 1.0;
  const double a = v / si;
  const double z = -std::exp(std::log(th / si) - a);
  return std::max(tau * (-lambert_w0(z) - a), 0.0);
}

// tau_mem == 2 tau_syn: V = (V0 + I0) u - I0 u^2 with u = exp(-s/tau_mem); the larger root u < 1.
inline double crossing_quadratic(double i, double v, double th, double tm) {
  const double si = i > 0.0 ? i : 1.0;
  const double p = v + si;
  const double disc = std::max(p * p - 4.0 * si * th, 0.0);
  double u = (p + std::sqrt(disc)) / (2.0 * si);
  u = std::min(std::max(u, std::numeric_limits<double>::min()), 1.0);
  return -tm * std::log(u);
}

// Halley steps in the bracket [0, hi] (bisection whenever a step leaves it), to float resolution.
inline double crossing_newton(double i, double v, const Neuron& n, double hi) {
  double lo = 0.0;
  if (!std::isfinite(hi)) hi = 0.0;
  double x = 0.0;
  const double f_tol = 4 * kEps * (std::abs(n.th) + std::abs(v) + std::abs(i));
  for (int it = 0; it < 100; ++it) {
    double ii = i, vv = v;
    if (x != 0.0) evolve(ii, vv, x, n);  // (the first step starts at the state itself)
    const double f = vv - n.th;
    const double fp = (ii - vv) * n.inv_tm;
    const double fpp = -(ii * n.inv_ts + fp) * n.inv_tm;
    if (f < 0) {
      lo = x;
    } else {
      hi = x;
    }
    const double denom = 2.0 * fp * fp - f * fpp;
    const bool ok = fp > 0 && denom > 0;
    double xn = ok ? x - 2.0 * f * fp / denom : 0.0;
    if (!ok || !(xn >= lo) || !(xn <= hi) || !std::isfinite(xn)) xn = 0.5 * (lo + hi);
    if (f == 0.0) xn = x;
    const double step = std::abs(xn - x);
    x = xn;
    const bool done = step <= 4 * kEps * (std::abs(x) + n.tm) || std::abs(f) <= f_tol;
    if (it % 2 == 1 && done) break;
  }
  return x;
}

// tau_mem == m tau_syn (integer m): V = V0 u + c I0 (u - u^m) with u = exp(-s/tau_mem) and c = 1/(m - 1), a
// polynomial: Newton steps in u (no exponentials; concave in u, so they approach the root monotonically from u = 1
// where V < th), bisection whenever a step leaves the bracket [exp(-hi/tau_mem), 1], to float resolution.
inline double crossing_poly(double i, double v, const Neuron& n, double hi) {
  const double ci = n.coef * i;
  double u_lo = std::exp(-std::min(hi, n.cap) / n.tm), u_hi = 1.0;  // V(u_lo) >= th > V(u_hi)
  double u = 1.0;
  const double f_tol = 4 * kEps * (std::abs(n.th) + std::abs(v) + std::abs(i));
  for (int it = 0; it < 100; ++it) {
    double um1 = u;
    for (int q = 2; q < n.m; ++q) um1 *= u;  // u^(m-1)
    const double f = v * u + ci * (u - um1 * u) - n.th;
    if (f == 0.0) break;
    if (f < 0) {
      u_hi = u;
    } else {
      u_lo = u;
    }
    const double fp = v + ci * (1.0 - n.m * um1);
    double un = fp < 0 ? u - f / fp : u;
    if (!(fp < 0) || !(un >= u_lo) || !(un <= u_hi) || !std::isfinite(un)) un = 0.5 * (u_lo + u_hi);
    const double step = std::abs(un - u);
    u = un;
    if (step <= 2 * kEps * u || std::abs(f) <= f_tol) break;
  }
  return -n.tm * std::log(u);
}

// Seconds from (I, V) to the first upward crossing of th in [0, hi], given that V(hi) >= th, with hi the end of
// the window or the peak inside it (crossing_time of cuba_lif_exact once its bracket is known).
inline double crossing_in(double i, double v, const Neuron& n, double hi) {
  if (v >= n.th) return 0.0;
  double s;
  if (n.tm == n.ts) {
    s = crossing_lambert(i, v, n.th, n.tm);
  } else if (n.tm == 2.0 * n.ts) {
    s = crossing_quadratic(i, v, n.th, n.tm);
  } else if (n.m > 0) {
    s = crossing_poly(i, v, n, hi);
  } else {
    s = crossing_newton(i, v, n, hi);
  }
  return std::min(s, hi);
}

// Factors of every gap t[e+1] - t[e] of every sample (shared time constants), [B, E] (the last entry unused).
std::vector<Gap> sample_gaps(const double* t, int64_t B, int64_t E, const Neuron& n) {
  std::vector<Gap> gaps(static_cast<size_t>(B * E), Gap{0.0, 0.0, 0.0});
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const double* tb = t + b * E;
      for (int64_t e = 0; e + 1 < E && std::isfinite(tb[e + 1]); ++e) gaps[b * E + e] = prop(tb[e + 1] - tb[e], n);
    }
  });
  return gaps;
}

template <typename T>
std::vector<double> to_double(const at::Tensor& x) {
  const T* p = x.data_ptr<T>();
  return std::vector<double>(p, p + x.numel());
}

void check_inputs(const at::Tensor& t, const at::Tensor& src, const at::Tensor& weight, const at::Tensor& tau_mem,
                  const at::Tensor& tau_syn, const at::Tensor& v_th) {
  TORCH_CHECK(t.dim() == 2 && src.sizes() == t.sizes(), "event kernels: t and src must be [B, E], got ", t.sizes(),
              " and ", src.sizes());
  TORCH_CHECK(src.scalar_type() == at::kLong, "event kernels: src must be int64");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == t.scalar_type(),
              "event kernels: weight must be [n_out, n_in] of the dtype of t");
  const int64_t n_out = weight.size(0);
  for (const auto* p : {&tau_mem, &tau_syn, &v_th})
    TORCH_CHECK(p->dim() == 1 && p->size(0) == n_out && p->scalar_type() == at::kDouble,
                "event kernels: tau_mem, tau_syn, v_th must be float64 [n_out] = [", n_out, "]");
}

std::vector<Neuron> neurons(const at::Tensor& tau_mem, const at::Tensor& tau_syn, const at::Tensor& v_th,
                            bool* shared) {
  const auto tm = to_double<double>(tau_mem), ts = to_double<double>(tau_syn), th = to_double<double>(v_th);
  std::vector<Neuron> out(tm.size());
  *shared = true;
  for (size_t j = 0; j < tm.size(); ++j) {
    out[j] = make_neuron(tm[j], ts[j], th[j]);
    if (tm[j] != tm[0] || ts[j] != ts[0]) *shared = false;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------------ forward

template <typename T>
struct FwdArgs {
  const double* t;      // [B, E] event times (inf padding at the end)
  const int64_t* src;   // [B, E] source input of each event
  const T* w;           // [n_out, n_in]
  const Neuron* nrn;    // [n_out]
  const Gap* gaps;      // [B, E] or nullptr (time constants differ between neurons)
  int64_t E, n_in, K;
  double t_ref, t_max;
  T *out_t, *out_is, *out_ir;  // [B, n_out, K]
};

// Walks the events of sample b for neuron j and writes its spikes (at most K).
template <typename T>
void forward_neuron(const FwdArgs<T>& A, int64_t b, int64_t j) {
  const double* t = A.t + b * A.E;
  const int64_t* src = A.src + b * A.E;
  const T* w = A.w + j * A.n_in;
  const Neuron& n = A.nrn[j];
  const double inv_ts = 1.0 / n.ts;
  const Gap* gaps = A.gaps ? A.gaps + b * A.E : nullptr;
  const int64_t base = A.K * j;  // offset of neuron j in the outputs of sample b (A points at that sample)
  T* out_t = A.out_t + base;
  T* out_is = A.out_is + base;
  T* out_ir = A.out_ir + base;
  double i = 0.0, v = 0.0, r = -kInf;  // state before the current event; release time of the last spike
  int64_t count = 0;
  for (int64_t e = 0; e < A.E; ++e) {
    const double te = t[e];
    if (!(te < A.t_max)) return;  // padding (inf) or past t_max: nothing more can fire
    i += static_cast<double>(w[src[e]]) * inv_ts;
    const double tn = (e + 1 < A.E) ? t[e + 1] : kInf;
    const double tend = std::min(tn, A.t_max);
    double s = te;
    bool sure = false;  // V at the end of the interval is known to reach the threshold
    if (r > te) {  // membrane held at 0
      if (r >= tend) {
        i *= gaps ? gaps[e].es : std::exp(-std::min(tn - te, n.cap) / n.ts);
        v = 0.0;
        continue;
      }
      i *= std::exp(-std::min(r - te, n.cap) / n.ts);  // released inside this interval
      v = 0.0;
      s = r;
    } else if (tn <= A.t_max) {
      // common case: free over the whole gap; skip the exact path when no crossing is possible (V below threshold
      // at the end, and no interior peak: a peak needs V rising at the start and not at the end, and I >= th)
      const Gap gp = gaps ? gaps[e] : prop(tn - te, n);
      const double i_n = i * gp.es, v_n = v * gp.em + gp.g * i;
      // (bitwise, not short-circuit: one well-predicted branch instead of several data-dependent ones)
      const bool maybe = (v_n >= n.th) | ((i >= n.th) & (i > v) & (i_n <= v_n));
      if (!maybe) {
        i = i_n;
        v = v_n;
        continue;
      }
      sure = v_n >= n.th;
    }
    // exact path over [s, tend) from (i, v): crossings, resets, releases inside the interval
    while (true) {
      const double span = tend - s;
      const double hi = span > 0 ? std::min(peak_time(i, v, n), span) : 0.0;
      // a crossing iff V at the peak inside the interval (or at its end) reaches the threshold; V at the end
      // does when `sure`, and V at an interior peak is larger still
      const bool hit = span > 0 && (sure || v_at(i, v, hi, n) >= n.th);
      sure = false;
      if (!hit) {
        if (s == te && gaps) {
          const double i0 = i;
          v = v * gaps[e].em + gaps[e].g * i0;
          i = i0 * gaps[e].es;
        } else {
          evolve(i, v, tn - s, n);
        }
        break;
      }
      const double tau = crossing_in(i, v, n, hi);
      const double tk = s + tau;
      if (!(std::isfinite(tk) && tk <= A.t_max)) return;
      const double ik = i * std::exp(-std::min(tau, n.cap) / n.ts);
      const double rel = tk + A.t_ref;
      // current at the release: the spike's current plus every input before the release, decayed to it
      double ir = ik, tp = tk;
      for (int64_t q = e + 1; q < A.E && t[q] < rel; ++q) {
        ir = ir * std::exp(-std::min(t[q] - tp, n.cap) / n.ts) + static_cast<double>(w[src[q]]) * inv_ts;
        tp = t[q];
      }
      if (rel > tp) ir *= std::exp(-std::min(rel - tp, n.cap) / n.ts);
      out_t[count] = static_cast<T>(tk);
      out_is[count] = static_cast<T>(ik);
      out_ir[count] = static_cast<T>(ir);
      if (++count == A.K) return;
      r = rel;
      if (rel < tend) {  // released inside the interval: look for the next crossing from (I(r), 0)
        s = rel;
        i = ir;
        v = 0.0;
        continue;
      }
      i = ik * std::exp(-std::min(tn - tk, n.cap) / n.ts);  // held past the interval
      v = 0.0;
      break;
    }
  }
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& t_in, const at::Tensor& src_in,
                                                            const at::Tensor& w_in, const std::vector<Neuron>& nrn,
                                                            bool shared, double t_ref, double t_max, int64_t K) {
  const int64_t B = t_in.size(0), E = t_in.size(1), n_out = w_in.size(0), n_in = w_in.size(1);
  const at::Tensor t = t_in.to(at::kDouble).contiguous();
  const at::Tensor src = src_in.contiguous();
  const at::Tensor w = w_in.contiguous();
  auto out_t = at::full({B, n_out, K}, kInf, w.options());
  auto out_is = at::zeros({B, n_out, K}, w.options());
  auto out_ir = at::zeros({B, n_out, K}, w.options());
  if (B == 0 || n_out == 0 || E == 0) return {out_t, out_is, out_ir};
  std::vector<Gap> gaps;
  if (shared) gaps = sample_gaps(t.data_ptr<double>(), B, E, nrn[0]);
  FwdArgs<T> A{t.data_ptr<double>(), src.data_ptr<int64_t>(), w.data_ptr<T>(), nrn.data(),
               shared ? gaps.data() : nullptr, E, n_in, K, t_ref, t_max,
               out_t.data_ptr<T>(), out_is.data_ptr<T>(), out_ir.data_ptr<T>()};
  at::parallel_for(0, B * n_out, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / n_out, j = p % n_out;
      FwdArgs<T> Ab = A;  // outputs of sample b
      Ab.out_t += b * n_out * K;
      Ab.out_is += b * n_out * K;
      Ab.out_ir += b * n_out * K;
      forward_neuron<T>(Ab, b, j);
    }
  });
  return {out_t, out_is, out_ir};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> event_fwd(const at::Tensor& t, const at::Tensor& src,
                                                         const at::Tensor& weight, const at::Tensor& tau_mem,
                                                         const at::Tensor& tau_syn, const at::Tensor& v_th,
                                                         double t_ref, double t_max, int64_t max_spikes) {
  check_inputs(t, src, weight, tau_mem, tau_syn, v_th);
  TORCH_CHECK(max_spikes >= 1, "event_fwd: max_spikes must be >= 1");
  bool shared = false;
  const auto nrn = neurons(tau_mem, tau_syn, v_th, &shared);
  for (const auto& n : nrn)
    TORCH_CHECK(n.tm > 0 && n.ts > 0 && n.th > 0, "event_fwd: needs tau_mem, tau_syn, v_th > 0 for every neuron");
  if (weight.scalar_type() == at::kFloat)
    return forward_impl<float>(t, src, weight, nrn, shared, t_ref, t_max, max_spikes);
  TORCH_CHECK(weight.scalar_type() == at::kDouble, "event_fwd: float32 or float64 tensors only");
  return forward_impl<double>(t, src, weight, nrn, shared, t_ref, t_max, max_spikes);
}

// ----------------------------------------------------------------------------------------------------- backward

// Adjoint dt seconds earlier (transpose of the forward propagator); dt < 0 or non-finite count as 0.
inline void back(double& lv, double& li, double dt, const Neuron& n) {
  double d = std::max(dt, 0.0);
  if (!std::isfinite(d)) d = 0.0;
  const Gap p = prop(d, n);
  li = p.es * li + p.g * lv;
  lv = p.em * lv;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> backward_impl(const at::Tensor& t_in, const at::Tensor& src_in,
                                                 const at::Tensor& w_in, const std::vector<Neuron>& nrn, bool shared,
                                                 double t_ref, const at::Tensor& times_in, const at::Tensor& i_spike_in,
                                                 const at::Tensor& i_release_in, const at::Tensor& grad_in) {
  const int64_t B = t_in.size(0), E = t_in.size(1), n_out = w_in.size(0), n_in = w_in.size(1);
  const int64_t K = times_in.size(2);
  const at::Tensor t = t_in.to(at::kDouble).contiguous();
  const at::Tensor src = src_in.contiguous();
  const at::Tensor w = w_in.contiguous();
  const at::Tensor times = times_in.to(at::kDouble).contiguous();
  const at::Tensor i_spike = i_spike_in.to(at::kDouble).contiguous();
  const at::Tensor i_release = i_release_in.to(at::kDouble).contiguous();
  const at::Tensor grad = grad_in.to(at::kDouble).contiguous();
  auto g_w = at::zeros({n_out, n_in}, w.options());
  auto g_ev = at::zeros({B, E}, w.options());
  if (B == 0 || n_out == 0 || E == 0) return {g_ev, g_w};
  std::vector<Gap> gaps;
  if (shared) gaps = sample_gaps(t.data_ptr<double>(), B, E, nrn[0]);
  const double* tp = t.data_ptr<double>();
  const int64_t* sp = src.data_ptr<int64_t>();
  const T* wp = w.data_ptr<T>();
  const double *tk_all = times.data_ptr<double>(), *is_all = i_spike.data_ptr<double>();
  const double *ir_all = i_release.data_ptr<double>(), *gr_all = grad.data_ptr<double>();
  T* gwp = g_w.data_ptr<T>();
  const double vdot_eps = std::sqrt(static_cast<double>(std::numeric_limits<T>::epsilon()));
  const int nthreads = std::max(1, at::get_num_threads());
  std::vector<std::vector<double>> gev_local(static_cast<size_t>(nthreads));

  at::parallel_for(0, n_out, 1, [&](int64_t j0, int64_t j1) {
    const int tid = std::min(std::max(at::get_thread_num(), 0), nthreads - 1);
    std::vector<double>& gev = gev_local[static_cast<size_t>(tid)];
    if (gev.empty()) gev.assign(static_cast<size_t>(B * E), 0.0);
    std::vector<double> gw_row(static_cast<size_t>(n_in));
    std::vector<double> lv_k(static_cast<size_t>(K)), li_k(static_cast<size_t>(K));
    for (int64_t j = j0; j < j1; ++j) {
      const Neuron& n = nrn[j];
      const double inv_ts = 1.0 / n.ts, inv_tm = 1.0 / n.tm;
      const T* wj = wp + j * n_in;
      std::fill(gw_row.begin(), gw_row.end(), 0.0);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t off = (b * n_out + j) * K;
        const double *tk = tk_all + off, *isk = is_all + off, *irk = ir_all + off, *gk = gr_all + off;
        int64_t nsp = 0;
        while (nsp < K && std::isfinite(tk[nsp])) ++nsp;
        if (nsp == 0) continue;
        // adjoint just before every spike, from the last one backwards (jump rule, floored dV/dt before the spike)
        double lvn = 0.0, lin = 0.0;
        for (int64_t k = K - 1; k >= 0; --k) {
          if (k >= nsp) {
            lv_k[k] = li_k[k] = 0.0;
            continue;
          }
          double lvr = 0.0, lir = 0.0;
          if (k + 1 < nsp) {
            lvr = lvn;
            lir = lin;
            back(lvr, lir, tk[k + 1] - (tk[k] + t_ref), n);
          }
          const double li = lir * std::exp(-t_ref * inv_ts);
          const double vdm = std::max((isk[k] - n.th) * inv_tm, vdot_eps * n.th / n.tm);
          const double lv = (lvr * irk[k] * inv_tm - gk[k]) / vdm;
          lv_k[k] = lv;
          li_k[k] = li;
          lvn = lv;
          lin = li;
        }
        // events before the last spike, backwards: the adjoint at each, then its gradient contributions
        const double* t = tp + b * E;
        const int64_t* src = sp + b * E;
        const Gap* gaps_b = shared ? gaps.data() + b * E : nullptr;
        const int64_t e_hi = std::lower_bound(t, t + E, tk[nsp - 1]) - t - 1;  // last event with t < last spike
        int64_t k = nsp, k_prev = -1;
        bool held_prev = false;
        double lv = 0.0, li = 0.0;
        double* gev_b = gev.data() + b * E;
        for (int64_t e = e_hi; e >= 0; --e) {
          const double te = t[e];
          while (k > 0 && tk[k - 1] > te) --k;  // next spike after the event: tk[k-1] <= te < tk[k]
          const double rho0 = k > 0 ? tk[k - 1] + t_ref : -kInf;
          const bool held = rho0 > te;
          if (k != k_prev || held != held_prev) {  // a spike or a release since the next event: closed form
            const double rho = std::max(te, rho0);
            double lvr = lv_k[k], lir = li_k[k];
            back(lvr, lir, tk[k] - rho, n);
            lv = held ? 0.0 : lvr;
            li = lir * std::exp(-(rho - te) * inv_ts);
          } else {  // same segment: one gap back
            const Gap gp = gaps_b ? gaps_b[e] : prop(t[e + 1] - te, n);
            li = gp.es * li + gp.g * lv;
            lv = gp.em * lv;
          }
          k_prev = k;
          held_prev = held;
          const int64_t s = src[e];
          gw_row[s] += li * inv_ts;
          gev_b[e] -= static_cast<double>(wj[s]) * inv_ts * (lv * inv_tm - li * inv_ts);
        }
      }
      T* gw_out = gwp + j * n_in;
      for (int64_t q = 0; q < n_in; ++q) gw_out[q] = static_cast<T>(gw_row[q]);
    }
  });
  T* gev_out = g_ev.data_ptr<T>();
  at::parallel_for(0, B * E, 4096, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      double acc = 0.0;
      for (const auto& buf : gev_local)
        if (!buf.empty()) acc += buf[static_cast<size_t>(p)];
      gev_out[p] = static_cast<T>(acc);
    }
  });
  return {g_ev, g_w};
}

std::tuple<at::Tensor, at::Tensor> event_bwd(const at::Tensor& t, const at::Tensor& src, const at::Tensor& weight,
                                             const at::Tensor& tau_mem, const at::Tensor& tau_syn,
                                             const at::Tensor& v_th, double t_ref, const at::Tensor& times,
                                             const at::Tensor& i_spike, const at::Tensor& i_release,
                                             const at::Tensor& grad) {
  check_inputs(t, src, weight, tau_mem, tau_syn, v_th);
  const int64_t B = t.size(0), n_out = weight.size(0);
  for (const auto* p : {&times, &i_spike, &i_release, &grad})
    TORCH_CHECK(p->dim() == 3 && p->size(0) == B && p->size(1) == n_out && p->size(2) == times.size(2),
                "event_bwd: the spike record and grad must be [B, n_out, K] = [", B, ", ", n_out, ", K]");
  bool shared = false;
  const auto nrn = neurons(tau_mem, tau_syn, v_th, &shared);
  for (const auto& n : nrn)
    TORCH_CHECK(n.tm > 0 && n.ts > 0 && n.th > 0, "event_bwd: needs tau_mem, tau_syn, v_th > 0 for every neuron");
  if (weight.scalar_type() == at::kFloat)
    return backward_impl<float>(t, src, weight, nrn, shared, t_ref, times, i_spike, i_release, grad);
  TORCH_CHECK(weight.scalar_type() == at::kDouble, "event_bwd: float32 or float64 tensors only");
  return backward_impl<double>(t, src, weight, nrn, shared, t_ref, times, i_spike, i_release, grad);
}

}  // namespace

TORCH_LIBRARY(spikeforge_event, m) {
  m.def("event_fwd(Tensor t, Tensor src, Tensor weight, Tensor tau_mem, Tensor tau_syn, Tensor v_th, float t_ref, "
        "float t_max, int max_spikes) -> (Tensor, Tensor, Tensor)");
  m.def("event_bwd(Tensor t, Tensor src, Tensor weight, Tensor tau_mem, Tensor tau_syn, Tensor v_th, float t_ref, "
        "Tensor times, Tensor i_spike, Tensor i_release, Tensor grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(spikeforge_event, CPU, m) {
  m.impl("event_fwd", &event_fwd);
  m.impl("event_bwd", &event_bwd);
}
