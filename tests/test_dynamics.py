"""Golden trajectories of every neuron model, checked against the equations in the module docstrings.

The expected numbers are computed here in plain Python floats (``math.exp`` for the decays) by loops
that restate the documented equations, plus spike patterns and a few trajectories written out by hand.
Nothing here calls a model's ``step`` to produce the expected values.

Time constants are powers of two (seconds) so that they are exact in float32 too: ``dt = 2**-10``,
``tau_mem = 2**-9`` gives ``alpha = exp(-1/2)``, ``tau_syn = 2**-10`` gives ``beta = exp(-1)``,
``tau_ahp = 2**-7`` gives ``rho = exp(-1/8)``. Inputs are float64, so every state variable must match
to ~1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.dynamics.common import decay, refractory_steps
from spikeforge.nn import IF, LI, LIF, AdaptiveLIF, CubaLIF

DT = 2.0**-10
TAU_MEM = 2.0**-9
TAU_SYN = 2.0**-10
TAU_AHP = 2.0**-7
ALPHA = math.exp(-DT / TAU_MEM)  # exp(-1/2)
BETA = math.exp(-DT / TAU_SYN)  # exp(-1)
RHO = math.exp(-DT / TAU_AHP)  # exp(-1/8)
V_TH = 1.0
V_RESET = -0.5  # used by reset="value" (nonzero on purpose)
TOL = {"rtol": 1e-12, "atol": 1e-12}
MARGIN = 1e-3  # every membrane must stay this far from threshold, so no spike is a rounding accident


def seq(xs: list[float]) -> torch.Tensor:
    """One neuron, one sample: ``[T, 1, 1]`` float64."""
    return torch.tensor(xs, dtype=torch.float64).reshape(-1, 1, 1)


def flat(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.reshape(-1)]


# ---------------------------------------------------------------------------------------------------
# Plain-Python restatement of dynamics/common.py: fire, reset, refractoriness.
# ---------------------------------------------------------------------------------------------------


def py_fire(v: float, v_before: float, ref: int, *, v_th: float, v_reset: float, reset: str,
            n_ref: int) -> tuple[float, float, int]:
    """Return (z, v after reset, next refractory count) for membrane ``v`` after integration."""
    if ref > 0:  # refractory: membrane held at its start-of-step value, no spike
        return 0.0, v_before, ref - 1
    assert abs(v - v_th) > MARGIN, f"test input too close to threshold: v={v}"
    z = 1.0 if v > v_th else 0.0
    if z:
        if reset == "subtract":
            v = v - v_th
        elif reset == "value":
            v = v_reset
    return z, v, (n_ref if z else 0)


def ref_if(xs, *, reset, n_ref=0, v_reset=V_RESET):
    v, r, rows = 0.0, 0, {"z": [], "v": [], "ref": []}
    for x in xs:
        z, v, r = py_fire(v + x, v, r, v_th=V_TH, v_reset=v_reset, reset=reset, n_ref=n_ref)
        rows["z"].append(z), rows["v"].append(v), rows["ref"].append(r)
    return rows


def ref_lif(xs, *, reset, v_leak=0.0, n_ref=0, v_reset=V_RESET):
    v, r, rows = v_leak, 0, {"z": [], "v": [], "ref": []}
    for x in xs:
        new = v_leak + ALPHA * (v - v_leak) + (1.0 - ALPHA) * x
        z, v, r = py_fire(new, v, r, v_th=V_TH, v_reset=v_reset, reset=reset, n_ref=n_ref)
        rows["z"].append(z), rows["v"].append(v), rows["ref"].append(r)
    return rows


def ref_cuba(xs, *, reset, v_leak=0.25, n_ref=0, v_reset=V_RESET):
    i, v, r, rows = 0.0, v_leak, 0, {"z": [], "i": [], "v": [], "ref": []}
    for x in xs:
        i = BETA * i + (1.0 - BETA) * x
        new = v_leak + ALPHA * (v - v_leak) + (1.0 - ALPHA) * i
        z, v, r = py_fire(new, v, r, v_th=V_TH, v_reset=v_reset, reset=reset, n_ref=n_ref)
        rows["z"].append(z), rows["i"].append(i), rows["v"].append(v), rows["ref"].append(r)
    return rows


def ref_alif(xs, *, reset, b=0.5, v_leak=0.0, n_ref=0, v_reset=V_RESET):
    a, v, r, rows = 0.0, v_leak, 0, {"z": [], "a": [], "v": [], "ref": []}
    for x in xs:
        a_minus = RHO * a
        new = v_leak + ALPHA * (v - v_leak) + (1.0 - ALPHA) * (x - a_minus)
        z, v, r = py_fire(new, v, r, v_th=V_TH, v_reset=v_reset, reset=reset, n_ref=n_ref)
        a = a_minus + b * z
        rows["z"].append(z), rows["a"].append(a), rows["v"].append(v), rows["ref"].append(r)
    return rows


def check_trace(neuron, xs, expected: dict, state_fields: tuple[str, ...], *, refractory: bool):
    out, final, rec = neuron.trace(seq(xs))
    assert out.dtype == torch.float64 and out.shape == (len(xs), 1, 1)
    assert flat(out) == expected["z"]
    for name in state_fields:
        got = getattr(rec, name)
        assert got.shape == (len(xs), 1, 1), name
        torch.testing.assert_close(got.reshape(-1), torch.tensor(expected[name], dtype=torch.float64),
                                   **TOL, msg=f"state variable {name}")
        # the final state is the last recorded one
        assert torch.equal(getattr(final, name), got[-1]), name
    if refractory:
        assert flat(rec.ref) == expected["ref"]
        assert rec.ref.dtype == torch.int32
    else:
        assert rec.ref is None and final.ref is None


RESETS = ("subtract", "value", "none")


# ---------------------------------------------------------------------------------------------------
# IF: exact binary fractions, so the whole trajectory is written out by hand.
# ---------------------------------------------------------------------------------------------------

IF_X = [0.75, 0.5, 0.25, 1.5, -0.25, 0.625]
IF_GOLDEN = {
    # v: 0.75 | 1.25 fires -> 0.25 | 0.5 | 2.0 fires -> 1.0 | 0.75 | 1.375 fires -> 0.375
    "subtract": {"z": [0, 1, 0, 1, 0, 1], "v": [0.75, 0.25, 0.5, 1.0, 0.75, 0.375]},
    # v: 0.75 | 1.25 fires -> -0.5 | -0.25 | 1.25 fires -> -0.5 | -0.75 | -0.125
    "value": {"z": [0, 1, 0, 1, 0, 0], "v": [0.75, -0.5, -0.25, -0.5, -0.75, -0.125]},
    # v keeps integrating: 0.75 1.25 1.5 3.0 2.75 3.375
    "none": {"z": [0, 1, 1, 1, 1, 1], "v": [0.75, 1.25, 1.5, 3.0, 2.75, 3.375]},
}


@pytest.mark.parametrize("reset", RESETS)
def test_if_golden_by_hand(reset):
    want = {k: [float(x) for x in v] for k, v in IF_GOLDEN[reset].items()}
    assert ref_if(IF_X, reset=reset)["v"] == want["v"]  # the Python restatement agrees with the hand
    n = IF(dt=DT, v_th=V_TH, v_reset=V_RESET, reset=reset)
    out, final, rec = n.trace(seq(IF_X))
    assert flat(out) == want["z"]
    assert flat(rec.v) == want["v"]  # exact: every value is a binary fraction
    assert float(final.v) == want["v"][-1]


def test_if_fires_strictly_above_threshold():
    n = IF(dt=DT, v_th=1.0)
    out, _, rec = n.trace(seq([0.5, 0.5, 0.25]))  # v = 0.5, 1.0 (== threshold: no spike), 1.25
    assert flat(out) == [0.0, 0.0, 1.0]
    assert flat(rec.v) == [0.5, 1.0, 0.25]


def test_if_refractory_by_hand():
    # refractory = 2 dt: after a spike the membrane is held for two steps and cannot fire.
    n = IF(dt=DT, v_th=1.0, refractory=2 * DT)
    out, final, rec = n.trace(seq([1.5] * 7))
    assert flat(out) == [1, 0, 0, 1, 0, 0, 1]
    assert flat(rec.v) == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.5]
    assert flat(rec.ref) == [2, 1, 0, 2, 1, 0, 2]
    assert int(final.ref) == 2


# ---------------------------------------------------------------------------------------------------
# LIF
# ---------------------------------------------------------------------------------------------------

LIF_X = [3.0, 3.0, 0.0, 4.0, -1.0, 5.0]
# Worked by hand with alpha = 0.6065, 1 - alpha = 0.3935:
#   subtract: v = 1.180 F, 1.290 F, 0.176, 1.681 F, 0.019, 1.979 F
#   value   : v = 1.180 F, 0.877, 0.532, 1.897 F, -0.697, 1.545 F
#   none    : v = 1.180 F, 1.896 F, 1.150 F, 2.272 F, 0.984, 2.564 F
LIF_SPIKES = {
    "subtract": [1, 1, 0, 1, 0, 1],
    "value": [1, 0, 0, 1, 0, 1],
    "none": [1, 1, 1, 1, 0, 1],
}


@pytest.mark.parametrize("reset", RESETS)
def test_lif_golden(reset):
    want = ref_lif(LIF_X, reset=reset)
    assert want["z"] == [float(z) for z in LIF_SPIKES[reset]]
    n = LIF(TAU_MEM, dt=DT, v_th=V_TH, v_reset=V_RESET, reset=reset)
    check_trace(n, LIF_X, want, ("v",), refractory=False)


def test_lif_first_steps_by_hand():
    n = LIF(TAU_MEM, dt=DT, v_th=V_TH, reset="subtract")
    _, _, rec = n.trace(seq([3.0, 3.0]))
    v0 = (1 - math.exp(-0.5)) * 3.0 - 1.0  # 1.1804 fires, minus threshold
    v1 = math.exp(-0.5) * v0 + (1 - math.exp(-0.5)) * 3.0 - 1.0
    torch.testing.assert_close(rec.v.reshape(-1), torch.tensor([v0, v1], dtype=torch.float64), **TOL)


def test_lif_leak_potential():
    # with v_leak the rest state is v_leak and the DC gain is 1 around it
    n = LIF(TAU_MEM, dt=DT, v_th=5.0, v_leak=0.25, reset="subtract")
    xs = [0.0, 2.0, 2.0, -1.0, 0.0]
    want = [0.25]
    for x in xs:
        want.append(0.25 + ALPHA * (want[-1] - 0.25) + (1 - ALPHA) * x)
    out, _, rec = n.trace(seq(xs))
    assert flat(out) == [0.0] * 5
    torch.testing.assert_close(rec.v.reshape(-1), torch.tensor(want[1:], dtype=torch.float64), **TOL)
    assert abs(want[1] - 0.25) < 1e-15  # zero input keeps the resting potential


def test_lif_refractory():
    n = LIF(TAU_MEM, dt=DT, v_th=V_TH, reset="subtract", refractory=2 * DT)
    xs = [3.0] * 7
    want = ref_lif(xs, reset="subtract", n_ref=2)
    assert want["z"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    check_trace(n, xs, want, ("v",), refractory=True)
    _, _, rec = n.trace(seq(xs))
    v = flat(rec.v)
    assert v[1] == v[0] and v[2] == v[0] and v[4] == v[3] and v[5] == v[3]  # held while refractory


# ---------------------------------------------------------------------------------------------------
# CubaLIF
# ---------------------------------------------------------------------------------------------------

CUBA_X = [4.0, 4.0, -3.0, 6.0, -6.0, 6.0]
CUBA_SPIKES = {
    "subtract": [1, 1, 0, 1, 0, 0],
    "value": [1, 1, 0, 1, 0, 0],
    "none": [1, 1, 1, 1, 0, 1],
}


@pytest.mark.parametrize("reset", RESETS)
def test_cuba_lif_golden(reset):
    want = ref_cuba(CUBA_X, reset=reset)
    assert want["z"] == [float(z) for z in CUBA_SPIKES[reset]]
    n = CubaLIF(TAU_MEM, TAU_SYN, dt=DT, v_th=V_TH, v_leak=0.25, v_reset=V_RESET, reset=reset)
    check_trace(n, CUBA_X, want, ("i", "v"), refractory=False)


def test_cuba_lif_first_step_by_hand():
    n = CubaLIF(TAU_MEM, TAU_SYN, dt=DT, v_th=V_TH, v_leak=0.25)
    _, _, rec = n.trace(seq([4.0]))
    i0 = (1 - math.exp(-1.0)) * 4.0  # 2.5285
    v0 = 0.25 + (1 - math.exp(-0.5)) * i0 - 1.0  # 1.2449 fires
    assert abs(float(rec.i) - i0) < 1e-12 and abs(float(rec.v) - v0) < 1e-12


def test_cuba_lif_refractory():
    n = CubaLIF(TAU_MEM, TAU_SYN, dt=DT, v_th=V_TH, v_leak=0.25, reset="subtract",
                refractory=2 * DT)
    xs = [4.0] * 7
    want = ref_cuba(xs, reset="subtract", n_ref=2)
    assert want["z"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    check_trace(n, xs, want, ("i", "v"), refractory=True)


# ---------------------------------------------------------------------------------------------------
# AdaptiveLIF
# ---------------------------------------------------------------------------------------------------

ALIF_X = [3.0, 3.0, 3.0, 0.0, 3.0, 3.0]
ALIF_SPIKES = {
    "subtract": [1, 1, 0, 0, 1, 0],
    "value": [1, 0, 1, 0, 0, 1],
    "none": [1, 1, 1, 0, 1, 1],
}


@pytest.mark.parametrize("reset", RESETS)
def test_adaptive_lif_golden(reset):
    want = ref_alif(ALIF_X, reset=reset)
    assert want["z"] == [float(z) for z in ALIF_SPIKES[reset]]
    n = AdaptiveLIF(TAU_MEM, TAU_AHP, 0.5, dt=DT, v_th=V_TH, v_reset=V_RESET, reset=reset)
    check_trace(n, ALIF_X, want, ("a", "v"), refractory=False)


def test_adaptive_lif_two_steps_by_hand():
    n = AdaptiveLIF(TAU_MEM, TAU_AHP, 0.5, dt=DT, v_th=V_TH)
    _, _, rec = n.trace(seq([3.0, 3.0]))
    g = 1 - math.exp(-0.5)
    v0 = g * 3.0 - 1.0  # fires; a jumps to b = 0.5
    a1_minus = math.exp(-0.125) * 0.5
    v1 = math.exp(-0.5) * v0 + g * (3.0 - a1_minus) - 1.0  # 1.1162 fires again
    want_a = [0.5, a1_minus + 0.5]
    torch.testing.assert_close(rec.v.reshape(-1), torch.tensor([v0, v1], dtype=torch.float64), **TOL)
    torch.testing.assert_close(rec.a.reshape(-1), torch.tensor(want_a, dtype=torch.float64), **TOL)


def test_adaptive_lif_refractory():
    n = AdaptiveLIF(TAU_MEM, TAU_AHP, 0.5, dt=DT, v_th=V_TH, reset="subtract", refractory=2 * DT)
    xs = [4.0] * 7
    want = ref_alif(xs, reset="subtract", n_ref=2)
    assert want["z"][:4] == [1.0, 0.0, 0.0, 1.0]
    check_trace(n, xs, want, ("a", "v"), refractory=True)


# ---------------------------------------------------------------------------------------------------
# LI read-out
# ---------------------------------------------------------------------------------------------------


def test_li_golden():
    xs = [1.0, 2.0, 0.0, -1.0, 3.0]
    v, want = 0.25, []
    for x in xs:
        v = 0.25 + ALPHA * (v - 0.25) + (1.0 - ALPHA) * x
        want.append(v)
    n = LI(TAU_MEM, dt=DT, v_leak=0.25)
    out, final, rec = n.trace(seq(xs))
    expected = torch.tensor(want, dtype=torch.float64)
    torch.testing.assert_close(out.reshape(-1), expected, **TOL)  # output is the membrane
    torch.testing.assert_close(rec.v.reshape(-1), expected, **TOL)
    assert torch.equal(final.v, rec.v[-1])
    # first step by hand: from rest, 0.25 + (1 - alpha) * 1.0 = 0.6435
    assert abs(want[0] - (0.25 + (1 - math.exp(-0.5)) * 1.0)) < 1e-15
    assert want[0] > 0.5  # no reset: LI never fires


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------


def test_decay_and_refractory_steps():
    assert abs(float(decay(torch.tensor(2e-3, dtype=torch.float64), 1e-3)) - math.exp(-0.5)) < 1e-15
    per_neuron = decay(torch.tensor([1e-3, 4e-3], dtype=torch.float64), 1e-3)
    torch.testing.assert_close(per_neuron, torch.tensor([math.exp(-1), math.exp(-0.25)],
                                                        dtype=torch.float64), **TOL)
    assert refractory_steps(2e-3, 1e-3) == 2
    assert refractory_steps(0.0, 1e-3) == 0
    assert refractory_steps(2.6e-3, 1e-3) == 3  # rounded to whole steps


def test_float64_decay_is_not_float32_accurate_only():
    # float64 inputs must get exp(-dt/tau) in float64, even though parameters are stored in float32
    n = LIF(TAU_MEM, dt=DT)
    alpha = n.params(torch.zeros(1, dtype=torch.float64)).alpha
    assert alpha.dtype == torch.float64
    assert abs(float(alpha) - math.exp(-0.5)) < 1e-15
