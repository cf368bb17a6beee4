"""The vendor simulator side of the agreement checks: a :class:`XyloConfig` as a ``xylosim.v2.XyloLayer``,
and random legal configurations and inputs. ``xylosim`` is optional (``pip install xylosim``) and imported
only by :func:`xylosim_layer` / :func:`run_xylosim`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .quantise import XyloConfig
from .spec import XYLO_AUDIO2, XYLO_TARGETS, XyloSpec

__all__ = ["random_config", "random_input", "run_xylosim", "xylosim_layer"]


def _synapses(xs, w: np.ndarray) -> list[list]:
    """``w [pre, post, syn]`` -> per presynaptic neuron, its list of ``XyloSynapse(post, syn, weight)``."""
    out = []
    for pre in range(w.shape[0]):
        post, syn = np.nonzero(w[pre])
        out.append([xs.XyloSynapse(int(j), int(s), int(w[pre, j, s])) for j, s in zip(post, syn, strict=True)])
    return out


def xylosim_layer(config: XyloConfig):
    """A ``xylosim.v2.XyloLayer`` configured with exactly the integers of ``config`` (no aliases)."""
    import xylosim.v2 as xs

    n = config.n_hidden
    # XyloLayer keeps raw pointers to the XyloSynapse objects: they must outlive it, so the layer is
    # wrapped together with them (a dropped synapse list is a use-after-free in the C++ code).
    syn = (_synapses(xs, config.w_in), _synapses(xs, config.w_rec), _synapses(xs, config.w_out))
    layer = xs.XyloLayer(
        *syn, [[] for _ in range(n)],
        [int(v) for v in config.threshold], [int(v) for v in config.threshold_out], bool(config.has_bias),
        [int(v) for v in config.bias], [int(v) for v in config.bias_out],
        int(config.weight_shift_in), int(config.weight_shift_rec), int(config.weight_shift_out),
        [int(v) for v in config.dash_mem], [int(v) for v in config.dash_mem_out],
        [[int(v) for v in row] for row in config.dash_syn], [[int(v) for v in row] for row in config.dash_syn_out],
        "spikeforge")
    return _Held(layer, syn)


class _Held:
    """A ``XyloLayer`` together with the synapse objects it points to."""

    def __init__(self, layer, keep):
        self.layer, self._keep = layer, keep

    def __getattr__(self, name):
        return getattr(self.layer, name)


def run_xylosim(config: XyloConfig, inputs: np.ndarray, layer=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run xylosim on ``inputs [T, n_in]`` (one sample, from reset); the same record keys as the emulator."""
    layer = layer if layer is not None else xylosim_layer(config)
    layer.reset_all()
    inp = np.minimum(np.asarray(inputs, dtype=np.int64), 255).astype(np.uint8)
    out = np.asarray(layer.evolve(inp.tolist()), dtype=np.int64).reshape(inp.shape[0], config.n_out)

    def tn(rec) -> np.ndarray:
        return np.asarray([list(r) for r in rec], dtype=np.int64).reshape(len(rec), -1).T

    rec = {"vmem": tn(layer.rec_v_mem), "isyn": tn(layer.rec_i_syn),
           "spikes": np.asarray(layer.rec_recurrent_spikes, dtype=np.int64).reshape(inp.shape[0], config.n_hidden),
           "vmem_out": tn(layer.rec_v_mem_out), "isyn_out": tn(layer.rec_i_syn_out)}
    if config.n_syn > 1:
        rec["isyn2"] = tn(layer.rec_i_syn2)
    if config.n_syn_out > 1:
        rec["isyn2_out"] = tn(layer.rec_i_syn2_out)
    return out, rec


def random_config(rng: np.random.Generator, spec: XyloSpec | str = XYLO_AUDIO2, max_hidden: int = 64,
                  max_weight_shift: int | None = None) -> XyloConfig:
    """A random legal configuration: sizes, sparse int8 weights (fan-in <= the spec's), shifts, dashes,
    thresholds (mostly positive; some configurations have zero or negative ones), biases."""
    spec = XYLO_TARGETS[spec] if isinstance(spec, str) else spec
    if max_weight_shift is not None:
        spec = replace(spec, max_weight_shift=max_weight_shift)
    n_in = int(rng.integers(1, spec.max_inputs + 1))
    n = int(rng.integers(1, min(max_hidden, spec.max_hidden) + 1))
    k = int(rng.integers(1, spec.max_outputs + 1))
    s, so = spec.synapses_per_neuron, spec.output_synapses
    lo, hi = spec.weight_range

    amp = int(2 ** rng.integers(1, 8))  # weight magnitude regime: from tiny to the full int8 range

    def weights(shape, density):
        w = rng.integers(max(lo, -amp), min(hi, amp) + 1, size=shape)
        return np.where(rng.random(shape) < density, w, 0)

    w_in = weights((n_in, n, s), rng.uniform(0.1, 1.0))
    w_rec = weights((n, n, s), rng.uniform(0.0, 0.5))
    # enforce the fan-in limit per (post, synapse): keep the first max_fan_in non-zero sources
    both = np.concatenate([w_in, w_rec], 0)
    nz = np.cumsum(both != 0, axis=0)
    both = np.where(nz <= spec.max_fan_in, both, 0)
    w_in, w_rec = both[:n_in], both[n_in:]
    w_out = weights((n, k, so), rng.uniform(0.1, 1.0))
    shifts = rng.integers(0, spec.max_weight_shift + 1, size=3)
    t_lo, t_hi = spec.threshold_range
    kind = rng.random()
    if kind < 0.1:  # exercise zero / negative thresholds (legal int16 values)
        th, th_out = rng.integers(t_lo, t_hi + 1, size=n), rng.integers(t_lo, t_hi + 1, size=k)
    else:
        scale = 2 ** rng.integers(4, 16)
        th = rng.integers(1, scale + 1, size=n)
        th_out = rng.integers(1, scale + 1, size=k)
    has_bias = bool(rng.random() < 0.5)
    b_lo, b_hi = spec.bias_range
    bias_scale = int(2 ** rng.integers(0, 16))
    bias = rng.integers(max(b_lo, -bias_scale), min(b_hi, bias_scale) + 1, size=n)
    bias_out = rng.integers(max(b_lo, -bias_scale), min(b_hi, bias_scale) + 1, size=k)
    md = spec.max_dash + 1
    return XyloConfig(spec=spec, w_in=w_in, w_rec=w_rec, w_out=w_out, weight_shift_in=int(shifts[0]),
                      weight_shift_rec=int(shifts[1]), weight_shift_out=int(shifts[2]),
                      dash_mem=rng.integers(0, md, size=n), dash_syn=rng.integers(0, md, size=(n, s)),
                      threshold=th, bias=bias, dash_mem_out=rng.integers(0, md, size=k),
                      dash_syn_out=rng.integers(0, md, size=(k, so)), threshold_out=th_out, bias_out=bias_out,
                      has_bias=has_bias, info={"random": True})


def random_input(rng: np.random.Generator, steps: int, batch: int, n_in: int) -> np.ndarray:
    """Event counts ``[T, B, n_in]``: mostly 0/1, some bursts, a few above the 15-event cap."""
    rate = rng.uniform(0.02, 0.5)
    x = (rng.random((steps, batch, n_in)) < rate).astype(np.int64)
    burst = rng.random((steps, batch, n_in)) < rate * 0.2
    x = np.where(burst, rng.integers(0, 21, size=x.shape), x)
    return x
