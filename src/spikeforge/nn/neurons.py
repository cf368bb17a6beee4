"""Neuron layers: thin ``torch.nn.Module`` shells over the models in :mod:`spikeforge.dynamics`.

Physical parameters (time constants in seconds, thresholds, potentials) are scalars or per-neuron
tensors; any of them can be learned per neuron with ``learn=("tau_mem", "v_th", ...)`` (then ``size``
is required). Time constants are checked to be positive; ``dt`` larger than a time constant warns.

Engines (``engine=``): ``"auto"`` (default) runs the fused kernel of :mod:`spikeforge.kernels` whenever it
covers the call (spiking models, no learned neuron parameters, ``forward`` rather than ``trace``) and the
reference scan otherwise; ``"fused"`` requires the fused kernel; ``"reference"`` always steps in Python.
Both give identical spikes and equal gradients. ``sparse_backward=b`` propagates surrogate gradients only
through neurons with ``|v - v_th| < b`` (fused engine only; see ``docs/kernels.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..analog import neuron as analog_curves
from ..core.checks import SpikeforgeError, check_dt, check_rank, check_shape_tail, describe
from ..core.surrogate import Surrogate, surrogate
from ..dynamics import adaptive_lif, analog_lif, cuba_lif, if_neuron, li, lif
from ..dynamics.common import FireSpec, refractory_steps
from ..kernels import check_band, fused_scan
from ..sim import scan
from .base import SNNModule, check_sequence

__all__ = ["IF", "LI", "LIF", "AdaptiveLIF", "AnalogLIF", "CubaLIF", "Neuron"]

_TAU_MIN = 1e-6  # learned time constants are clamped to stay positive (seconds)
ENGINES = ("auto", "fused", "reference")


def _as_size(size: int | Sequence[int] | None) -> tuple[int, ...] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size,)
    size = tuple(int(s) for s in size)
    if not size or any(s < 1 for s in size):
        raise SpikeforgeError(f"size must be a positive int or tuple of them, got {size!r}.")
    return size


class Neuron(SNNModule):
    """Base of the neuron layers: holds physical parameters, builds the model's per-step ones.

    Subclasses set ``model`` (a module of :mod:`spikeforge.dynamics`) and call :meth:`_setup`.
    """

    stateful = True
    model: ModuleType
    spiking: bool = True
    kernel: str | None = None  # model name for spikeforge.kernels (None: no fused kernel)
    engine: str = "auto"
    sparse_backward: float | None = None
    #: None, or ``hook(step) -> step``: given the model's ``step``, the step function the reference scan runs for
    #: one call (then always the reference scan). Hardware-in-the-loop training (:mod:`spikeforge.train.hil`)
    #: injects a chip's spikes and membranes per step through it.
    step_hook: Callable[[Callable], Callable] | None = None

    def set_engine(self, engine: str = "auto", *, sparse_backward: float | None = None) -> None:
        """Choose how the time loop runs: ``"auto"``, ``"fused"`` or ``"reference"`` (see the module doc).

        Args:
            engine: the engine.
            sparse_backward: None (exact gradients) or a band ``b`` > 0 around the threshold outside which
                the surrogate derivative is taken as zero (needs the fused engine).
        """
        if engine not in ENGINES:
            raise SpikeforgeError(f"engine must be one of {ENGINES}, got {engine!r}.")
        band = check_band(sparse_backward)
        # a layer without a fused kernel may still pick "reference" over its closed form (model.run), if any
        has_closed = getattr(self.model, "run", None) is not None
        if (engine != "auto" and not (has_closed and engine == "reference")) or band is not None:
            if self.kernel is None:
                allowed = "'auto' or 'reference'" if has_closed else "'auto'"
                raise SpikeforgeError(
                    f"{type(self).__name__} has no fused kernel: use engine={allowed} and sparse_backward=None."
                )
        if engine == "reference" and band is not None:
            raise SpikeforgeError("sparse_backward needs the fused engine; use engine='auto' or 'fused'.")
        self.engine = engine
        self.sparse_backward = band

    def _setup(
        self,
        physical: dict[str, Any],
        *,
        size: int | Sequence[int] | None,
        dt: float,
        learn: Sequence[str],
        fire: FireSpec | None,
    ) -> None:
        self.size = _as_size(size)
        self.dt = float(dt)
        self.fire_spec = fire
        taus = {k: v for k, v in physical.items() if k.startswith("tau")}
        check_dt(self.dt, **{k: torch.as_tensor(v, dtype=torch.float64) for k, v in taus.items()})
        learn = tuple(learn)
        unknown = set(learn) - set(physical)
        if unknown:
            raise SpikeforgeError(
                f"learn names unknown parameter(s) {sorted(unknown)}; "
                f"{type(self).__name__} has {sorted(physical)}."
            )
        if learn and self.size is None:
            raise SpikeforgeError(
                f"learning {list(learn)} per neuron needs the layer size: pass size=N to "
                f"{type(self).__name__}."
            )
        self._names = tuple(physical)
        self._learn = learn
        for name, value in physical.items():
            t = torch.as_tensor(value, dtype=torch.float32).clone()
            if self.size is not None and t.dim() > 0:
                check_shape_tail(name, t, self.size[-t.dim():], layout="per-neuron values")
            if name in learn:
                t = nn.Parameter(t.expand(self.size).clone())
                self.register_parameter(name, t)
            else:
                self.register_buffer(name, t)

    def physical(self) -> dict[str, Tensor]:
        """Current physical parameters (learned time constants clamped to stay positive)."""
        out = {}
        for name in self._names:
            t = getattr(self, name)
            if name.startswith("tau") and name in self._learn:
                t = t.clamp(min=_TAU_MIN)
            out[name] = t
        return out

    def params(self, like: Tensor) -> NamedTuple:
        """Per-step parameters in the dtype and device of ``like``."""
        # Cast before computing the decays so float64 inputs get float64-accurate exp(-dt/tau).
        phys = {k: v.to(dtype=like.dtype, device=like.device) for k, v in self.physical().items()}
        p = self.model.make_params(**phys, dt=self.dt)
        return type(p)(*[f.to(dtype=like.dtype, device=like.device) for f in p])

    def init_state(self, like: Tensor) -> NamedTuple:
        """Resting state for one time step of input shaped like ``like`` ([B, *features])."""
        refractory = self.fire_spec is not None and self.fire_spec.refractory > 0
        return self.model.init_state(self.params(like), like, refractory=refractory)

    def _check(self, x: Tensor) -> None:
        check_sequence("x", x)
        if self.size is not None:
            layout = f"[T, B, {', '.join(map(str, self.size))}]"
            check_rank("x", x, 2 + len(self.size), layout=f"{layout} (time-major)")
            check_shape_tail("x", x, self.size, layout=layout)

    #: :class:`~spikeforge.nn.Sequential` may hand this layer its input to overwrite (``donate=True``).
    accepts_donation = True

    def forward(self, x: Tensor, state: NamedTuple | None = None, *,
                donate: bool = False) -> tuple[Tensor, NamedTuple]:
        """Run the neuron over a sequence.

        Args:
            x: input currents. state: the state to start from (None: rest).
            donate: the caller owns ``x`` and never reads it again (``Sequential`` passes it for the fresh
                output of a ``Linear``/``Conv`` layer): the fused kernel then keeps its saved membrane in
                ``x``'s memory instead of a new buffer. ``x``'s autograd version is bumped.

        Shape:
            x ``[T, B, *size]`` -> output ``[T, B, *size]`` (spikes, or membrane for LI).
        """
        out, state, _ = self.trace_run(x, state, record=False, donate=donate)
        return out, state

    def trace(self, x: Tensor, state: NamedTuple | None = None):
        """Like ``forward`` plus every state variable at every step (a state of ``[T, ...]``)."""
        return self.trace_run(x, state, record=True)

    def trace_run(self, x: Tensor, state: NamedTuple | None, *, record: bool, donate: bool = False):
        """Run the layer over ``x``; with ``record`` also return every state variable at every step.

        Without ``record`` the fused kernel runs where it covers the call (see :meth:`set_engine`).
        """
        self._check(x)
        p = self.params(x)
        if state is None:
            state = self.model.init_state(
                p, x[0], refractory=self.fire_spec is not None and self.fire_spec.refractory > 0
            )
        if self.step_hook is not None:
            return scan.run(self.step_hook(self.model.step), self.fire_spec, p, state, x, record=record)
        if not record and self.kernel is not None and self.engine != "reference":
            fused = fused_scan(self.kernel, self.fire_spec, p, state, x, sparse_backward=self.sparse_backward,
                               inplace=donate)
            if fused is not None:
                return fused[0], fused[1], None
            self._no_fused_path(x)
        elif not record and self.engine != "reference" and self.closed_form(p, x):
            out, state = self.model.run(p, state, x)
            return out, state, None
        elif record and self.engine == "fused":
            raise SpikeforgeError("trace() records every state and runs the reference scan; "
                                  "use engine='auto' to trace a layer built with engine='fused'.")
        return scan.run(self.model.step, self.fire_spec, p, state, x, record=record)

    def closed_form(self, p: NamedTuple, x: Tensor) -> bool:
        """Whether the model's whole-sequence closed form (``model.run``, e.g. the linear LI read-out) covers this
        call: the model has one and its parameters do not vary over the batch."""
        run = getattr(self.model, "run", None)
        return run is not None and all(not isinstance(v, Tensor) or v.dim() < x.dim() - 1 for v in p)

    def _no_fused_path(self, x: Tensor) -> None:
        """React to a call the fused kernel does not cover: error for ``engine="fused"``, else carry on.

        With ``sparse_backward`` set under ``engine="auto"`` the reference scan runs with exact gradients and a
        one-line warning says so (once per layer).
        """
        if self.engine != "fused" and self.sparse_backward is None:
            return
        if self.fire_spec is not None and self.fire_spec.max_spikes != 1:
            why = f"several spikes per step (max_spikes={self.fire_spec.max_spikes}) run on the reference scan"
        elif self._learn:
            why = f"learned parameters {list(self._learn)} are differentiated by the reference scan"
        else:
            why = f"no fused kernel for {x.device.type} tensors of dtype {x.dtype} (or it could not be built)"
        if self.engine == "fused":
            raise SpikeforgeError(
                f"{type(self).__name__}(engine='fused') cannot run fused here: {why}; use engine='auto'."
            )
        if not getattr(self, "_warned_dense", False):
            self._warned_dense = True
            warnings.warn(f"{type(self).__name__}: sparse_backward ignored ({why}); exact gradients instead.",
                          RuntimeWarning, stacklevel=4)

    def extra_repr(self) -> str:
        parts = [f"size={self.size}"] if self.size else []
        for name in self._names:
            t = getattr(self, name)
            val = f"{t.item():g}" if t.numel() == 1 else f"<{tuple(t.shape)}>"
            parts.append(f"{name}={val}")
        parts.append(f"dt={self.dt:g}")
        if self.fire_spec is not None:
            f = self.fire_spec
            parts.append(f"reset={f.reset!r}, surrogate={f.surrogate.name}({f.surrogate.scale:g})")
            if f.refractory:
                parts.append(f"refractory={f.refractory} steps")
            if f.max_spikes != 1:
                parts.append(f"max_spikes={f.max_spikes}")
        if self._learn:
            parts.append(f"learn={list(self._learn)}")
        return ", ".join(parts)


def _fire_spec(
    surrogate_spec: str | dict | Surrogate | None, scale: float | None, reset: str,
    refractory: float, dt: float, detach_reset: bool, max_spikes: int = 1,
) -> FireSpec:
    return FireSpec(surrogate(surrogate_spec, scale), reset, refractory_steps(refractory, dt),
                    detach_reset, max_spikes)


class LIF(Neuron):
    """Leaky integrate-and-fire neurons (:mod:`spikeforge.dynamics.lif`).

    Args:
        tau_mem: membrane time constant in seconds (scalar or per neuron).
        dt: time step in seconds.
        v_th: threshold. v_leak: resting potential. v_reset: reset value (``reset="value"``).
        reset: ``"subtract"``, ``"value"`` or ``"none"``.
        refractory: refractory period in seconds (rounded to whole steps).
        surrogate: surrogate name/dict/:class:`~spikeforge.core.surrogate.Surrogate`;
            ``surrogate_scale`` overrides its steepness.
        size: neuron shape (needed for per-neuron learning).
        learn: names of parameters to learn per neuron, e.g. ``("tau_mem", "v_th")``.
        detach_reset: stop gradients through the reset.
        engine: ``"auto"``, ``"fused"`` or ``"reference"`` (module doc).
        sparse_backward: None or a band ``b`` > 0: surrogate gradients only where ``|v - v_th| < b``.
        max_spikes: spikes a neuron may emit in one step (1: binary; e.g. 31 as on Xylo; see
            :mod:`spikeforge.dynamics.common`). Above 1 the reference engine runs.
    """

    model = lif
    kernel = "lif"

    def __init__(
        self, tau_mem: float | Tensor = 10e-3, *, dt: float = 1e-3, v_th: float | Tensor = 1.0,
        v_leak: float | Tensor = 0.0, v_reset: float | Tensor = 0.0, reset: str = "subtract",
        refractory: float = 0.0, surrogate: str | dict | Surrogate | None = None,
        surrogate_scale: float | None = None, size: int | Sequence[int] | None = None,
        learn: Sequence[str] = (), detach_reset: bool = True, engine: str = "auto",
        sparse_backward: float | None = None, max_spikes: int = 1,
    ) -> None:
        super().__init__()
        self._setup(
            {"tau_mem": tau_mem, "v_th": v_th, "v_leak": v_leak, "v_reset": v_reset},
            size=size, dt=dt, learn=learn,
            fire=_fire_spec(surrogate, surrogate_scale, reset, refractory, dt, detach_reset, max_spikes),
        )
        self.set_engine(engine, sparse_backward=sparse_backward)


class IF(Neuron):
    """Integrate-and-fire neurons without leak (:mod:`spikeforge.dynamics.if_neuron`).

    Args as :class:`LIF`, without time constants.
    """

    model = if_neuron
    kernel = "if"

    def __init__(
        self, *, dt: float = 1e-3, v_th: float | Tensor = 1.0, v_reset: float | Tensor = 0.0,
        reset: str = "subtract", refractory: float = 0.0,
        surrogate: str | dict | Surrogate | None = None, surrogate_scale: float | None = None,
        size: int | Sequence[int] | None = None, learn: Sequence[str] = (),
        detach_reset: bool = True, engine: str = "auto", sparse_backward: float | None = None,
        max_spikes: int = 1,
    ) -> None:
        super().__init__()
        self._setup(
            {"v_th": v_th, "v_reset": v_reset}, size=size, dt=dt, learn=learn,
            fire=_fire_spec(surrogate, surrogate_scale, reset, refractory, dt, detach_reset, max_spikes),
        )
        self.set_engine(engine, sparse_backward=sparse_backward)


class CubaLIF(Neuron):
    """Current-based LIF neurons (:mod:`spikeforge.dynamics.cuba_lif`).

    Args as :class:`LIF`, plus ``tau_syn``: synaptic time constant in seconds.
    """

    model = cuba_lif
    kernel = "cuba_lif"

    def __init__(
        self, tau_mem: float | Tensor = 10e-3, tau_syn: float | Tensor = 5e-3, *, dt: float = 1e-3,
        v_th: float | Tensor = 1.0, v_leak: float | Tensor = 0.0, v_reset: float | Tensor = 0.0,
        reset: str = "subtract", refractory: float = 0.0,
        surrogate: str | dict | Surrogate | None = None, surrogate_scale: float | None = None,
        size: int | Sequence[int] | None = None, learn: Sequence[str] = (),
        detach_reset: bool = True, engine: str = "auto", sparse_backward: float | None = None,
        max_spikes: int = 1,
    ) -> None:
        super().__init__()
        self._setup(
            {"tau_mem": tau_mem, "tau_syn": tau_syn, "v_th": v_th, "v_leak": v_leak,
             "v_reset": v_reset},
            size=size, dt=dt, learn=learn,
            fire=_fire_spec(surrogate, surrogate_scale, reset, refractory, dt, detach_reset, max_spikes),
        )
        self.set_engine(engine, sparse_backward=sparse_backward)


class AdaptiveLIF(Neuron):
    """Adaptive LIF neurons with an after-hyperpolarising current
    (:mod:`spikeforge.dynamics.adaptive_lif`).

    Args as :class:`LIF`, plus ``tau_ahp`` (seconds) and ``b`` (AHP jump per spike).
    """

    model = adaptive_lif
    kernel = "adaptive_lif"

    def __init__(
        self, tau_mem: float | Tensor = 10e-3, tau_ahp: float | Tensor = 200e-3,
        b: float | Tensor = 0.5, *, dt: float = 1e-3, v_th: float | Tensor = 1.0,
        v_leak: float | Tensor = 0.0, v_reset: float | Tensor = 0.0, reset: str = "subtract",
        refractory: float = 0.0, surrogate: str | dict | Surrogate | None = None,
        surrogate_scale: float | None = None, size: int | Sequence[int] | None = None,
        learn: Sequence[str] = (), detach_reset: bool = True, engine: str = "auto",
        sparse_backward: float | None = None, max_spikes: int = 1,
    ) -> None:
        super().__init__()
        self._setup(
            {"tau_mem": tau_mem, "tau_ahp": tau_ahp, "b": b, "v_th": v_th, "v_leak": v_leak,
             "v_reset": v_reset},
            size=size, dt=dt, learn=learn,
            fire=_fire_spec(surrogate, surrogate_scale, reset, refractory, dt, detach_reset, max_spikes),
        )
        self.set_engine(engine, sparse_backward=sparse_backward)


class LI(Neuron):
    """Leaky-integrator read-out (:mod:`spikeforge.dynamics.li`); outputs the membrane trace.

    Args:
        tau_mem: membrane time constant in seconds. dt: time step. v_leak: resting potential.
        size: neuron shape. learn: parameters learned per neuron, e.g. ``("tau_mem",)``.
    """

    model = li
    spiking = False

    def __init__(
        self, tau_mem: float | Tensor = 10e-3, *, dt: float = 1e-3, v_leak: float | Tensor = 0.0,
        size: int | Sequence[int] | None = None, learn: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self._setup({"tau_mem": tau_mem, "v_leak": v_leak}, size=size, dt=dt, learn=learn,
                    fire=None)


class AnalogLIF(Neuron):
    """LIF neurons with analog (voltage-domain) integration and per-neuron gain mismatch
    (:mod:`spikeforge.dynamics.analog_lif`; curves in :mod:`spikeforge.analog.neuron`).

    Args as :class:`LIF` (without ``engine``/``sparse_backward``: there is no fused kernel, the reference
    scan runs), plus:

    Args:
        curve: transfer curve ``curve(v, dv) -> realised dv``: :class:`~spikeforge.analog.neuron.Linear`
            (default, equals :class:`LIF` exactly), :class:`~spikeforge.analog.neuron.Rails`,
            :class:`~spikeforge.analog.neuron.Measured` or any such callable.
        mismatch_sigma: relative standard deviation of the per-neuron integration gain (0: none; then
            ``size`` is not needed). The pattern is fixed when the layer is built (buffer ``gain``).
        seed: seed of the ``torch.Generator`` that draws the mismatch pattern.
    """

    model = analog_lif
    kernel = None

    def __init__(
        self, tau_mem: float | Tensor = 10e-3, *, dt: float = 1e-3, v_th: float | Tensor = 1.0,
        v_leak: float | Tensor = 0.0, v_reset: float | Tensor = 0.0, reset: str = "subtract",
        refractory: float = 0.0, surrogate: str | dict | Surrogate | None = None,
        surrogate_scale: float | None = None, size: int | Sequence[int] | None = None,
        learn: Sequence[str] = (), detach_reset: bool = True, max_spikes: int = 1,
        curve: Callable[[Tensor, Tensor], Tensor] | None = None, mismatch_sigma: float = 0.0, seed: int = 0,
    ) -> None:
        super().__init__()
        curve = analog_curves.Linear() if curve is None else curve
        if not callable(curve):
            raise SpikeforgeError(
                f"curve must be a transfer curve callable as curve(v, dv) (Linear, Rails, Measured), "
                f"got {describe(curve)}."
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SpikeforgeError(f"seed must be an integer, got {describe(seed)}.")
        self._setup(
            {"tau_mem": tau_mem, "v_th": v_th, "v_leak": v_leak, "v_reset": v_reset},
            size=size, dt=dt, learn=learn,
            fire=_fire_spec(surrogate, surrogate_scale, reset, refractory, dt, detach_reset, max_spikes),
        )
        if isinstance(mismatch_sigma, bool) or not isinstance(mismatch_sigma, (int, float)) \
                or not 0 <= mismatch_sigma < 1:
            raise SpikeforgeError(
                f"mismatch_sigma must be a number in [0, 1) (relative gain std), got {describe(mismatch_sigma)}."
            )
        self.curve = curve
        self.mismatch_sigma = float(mismatch_sigma)
        gain = None
        if mismatch_sigma > 0:
            if self.size is None:
                raise SpikeforgeError(
                    f"mismatch_sigma={mismatch_sigma!r} draws one gain per neuron and needs the layer size: "
                    f"pass size=N to AnalogLIF."
                )
            gain = analog_curves.mismatch(self.size, mismatch_sigma, torch.Generator().manual_seed(seed))
        self.seed = seed
        self.register_buffer("gain", gain)

    def params(self, like: Tensor) -> NamedTuple:
        """Per-step parameters in the dtype and device of ``like`` (the curve is passed through as is)."""
        phys = {k: v.to(dtype=like.dtype, device=like.device) for k, v in self.physical().items()}
        gain = None if self.gain is None else self.gain.to(dtype=like.dtype, device=like.device)
        p = analog_lif.make_params(**phys, dt=self.dt, gain=gain, curve=self.curve)
        cast = [f.to(dtype=like.dtype, device=like.device) for f in p[:4]]
        return p._replace(alpha=cast[0], v_th=cast[1], v_leak=cast[2], v_reset=cast[3])

    def extra_repr(self) -> str:
        parts = [super().extra_repr(), f"curve={self.curve!r}"]
        if self.gain is not None:
            parts.append(f"mismatch_sigma={self.mismatch_sigma:g}, seed={self.seed}")
        return ", ".join(parts)
