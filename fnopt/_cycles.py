"""Cyclical schedules: SGDR warm restarts (cosine and linear), one-cycle
(LR and momentum), CyclicLR (LR and momentum) and fastai's ``combined_cos``.

Same conventions as :mod:`fnopt._decay`: closed forms of the step, every
numeric hyperparameter may be traced, concrete ones are validated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import (
    as_float,
    check_choice,
    check_flag,
    check_positive,
    check_range,
    concrete,
    is_traced,
)
from ._decay import (
    ArrayLike,
    Schedule,
    as_array,
    as_step,
    cos_anneal,
    floor_divmod,
    fractions,
    log_of,
    linear_anneal,
    phase_position,
    power,
)

_ANNEAL = {"cos": cos_anneal, "linear": linear_anneal}


# ---------------------------------------------------------------- restarts


def restart_position(step: ArrayLike, first_period: ArrayLike, period_mult: ArrayLike):
    """Where ``step`` lies in the SGDR periods ``T_0, T_0 m, T_0 m^2, ...``.

    Returns ``(remaining, progress)`` in the current period, as
    :func:`fractions`. The period index ``n`` is found by exact search: a
    logarithm gives a first guess, which is then corrected until
    ``start(n) <= step < start(n + 1)`` holds for the very expressions used to
    compute the position. (A rounded ``log`` alone puts e.g. step 121 of
    ``T_0 = 1, m = 3`` in the wrong period, as torch does.)

    Extreme settings stay finite: where ``m ** n`` overflows but the period
    start does not (``T_0 = 1e-30``), the power is split in two; a period
    longer than float32's range (``m = 3e38``) has progressed by less than
    ``2**31 / 3.4e38`` of its length, i.e. 0 to float precision.
    """
    t = as_step(step)
    t0 = as_float(first_period)
    m = as_float(period_mult)
    # m == 1: equal periods; exact (integer) division when possible.
    _, t_cur_equal = floor_divmod(step, first_period)
    # m > 1: geometric periods. ``safe_m`` keeps the unused branch finite.
    geometric = m > 1.0
    safe_m = jnp.where(geometric, m, 2.0)
    # From 2**100 on, 1 / m is below float precision (and XLA flushes the
    # reciprocal of m - 1 to zero): start(n) = t0 * m**(n - 1) for n >= 1.
    huge = safe_m >= 2.0**100

    def scaled(n):
        """``t0 * m ** n``, finite wherever the product is (t0 = 1e-30 and
        m ** n = 2 ** 130)."""
        direct = t0 * safe_m**n
        half = jnp.floor(n / 2.0)
        return jnp.where(jnp.isfinite(direct), direct, t0 * safe_m**half * safe_m ** (n - half))

    def start(n):
        direct = t0 * ((safe_m**n - 1.0) / (safe_m - 1.0))
        direct = jnp.where(jnp.isfinite(direct), direct, (scaled(n) - t0) / (safe_m - 1.0))
        return jnp.where(huge, jnp.where(n >= 1.0, scaled(n - 1.0), 0.0), direct)

    # log1p(t / t0 * (m - 1)), without overflow when t0 is tiny.
    x = t / t0 * (safe_m - 1.0)
    log_x = jnp.where(jnp.isfinite(x), jnp.log1p(x), jnp.log(t) - log_of(first_period) + jnp.log(safe_m - 1.0))
    n = jnp.floor(log_x / jnp.log(safe_m))
    for _ in range(2):
        n = jnp.where(start(n) > t, n - 1.0, n)
        n = jnp.where(start(n + 1.0) <= t, n + 1.0, n)
    n = jnp.maximum(n, 0.0)
    period = scaled(n)
    t_cur = jnp.clip(t - start(n), 0.0, period)
    beyond = jnp.isinf(period)  # longer than float32's range: progress < 2**31 / 3.4e38
    remaining, progress = fractions(period - t_cur, t_cur, jnp.where(beyond, 1.0, period))
    remaining, progress = jnp.where(beyond, 1.0, remaining), jnp.where(beyond, 0.0, progress)
    equal = fractions(t0 - t_cur_equal, t_cur_equal, t0)
    return (
        jnp.where(geometric, remaining, equal[0]),
        jnp.where(geometric, progress, equal[1]),
    )


def _restarts(call: str, anneal, init_value, first_period, period_mult, min_value) -> Schedule:
    concrete(call, "init_value", init_value)
    check_positive(call, "first_period", first_period)
    check_range(call, "period_mult", period_mult, 1.0)
    concrete(call, "min_value", min_value)

    def schedule(step):
        return anneal(as_float(init_value), as_float(min_value), *restart_position(step, first_period, period_mult))

    return schedule


def cosine_warm_restarts(
    init_value: ArrayLike,
    first_period: ArrayLike,
    period_mult: ArrayLike = 1,
    min_value: ArrayLike = 0.0,
) -> Schedule:
    """SGDR: cosine annealing from ``init_value`` to ``min_value``, restarted.

    The i-th period lasts ``first_period * period_mult ** i`` steps; inside it
    the value is ``min + (init - min) * (1 + cos(pi * t_cur / T_i)) / 2``.
    Equals torch ``CosineAnnealingWarmRestarts(T_0=first_period,
    T_mult=period_mult, eta_min=min_value)`` at every integer and fractional
    step, except where torch's rounded logarithm picks the wrong period (fnopt
    finds the period by exact search). Unlike torch, ``first_period`` may be
    fractional and ``period_mult`` any real >= 1.

    Args:
        init_value: value right after each restart.
        first_period: length of the first period, > 0.
        period_mult: growth factor of each period, >= 1.
        min_value: value approached at the end of each period.

    References:
        Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm
        Restarts, 2017, https://arxiv.org/abs/1608.03983

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.cosine_warm_restarts(1.0, first_period=10, period_mult=2)
        >>> [round(float(s(t)), 3) for t in (0, 5, 10, 20, 30)]
        [1.0, 0.5, 1.0, 0.5, 1.0]
    """
    return _restarts("cosine_warm_restarts", cos_anneal, init_value, first_period, period_mult, min_value)


def linear_warm_restarts(
    init_value: ArrayLike,
    first_period: ArrayLike,
    period_mult: ArrayLike = 1,
    min_value: ArrayLike = 0.0,
) -> Schedule:
    """Sawtooth warm restarts: linear decay from ``init_value`` towards
    ``min_value`` inside each period, with the periods of
    :func:`cosine_warm_restarts`: ``min + (init - min) * (1 - t_cur / T_i)``.

    Args:
        init_value: value right after each restart.
        first_period: length of the first period, > 0.
        period_mult: growth factor of each period, >= 1.
        min_value: value approached at the end of each period.
    """
    return _restarts("linear_warm_restarts", linear_anneal, init_value, first_period, period_mult, min_value)


# ---------------------------------------------------------------- one-cycle


def _one_cycle_phases(
    step: ArrayLike, total_steps, pct_start, values, three_phase: bool
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The phase of ``step`` in torch ``OneCycleLR``: returns (start value, end
    value, remaining, progress).

    torch's phases end at steps ``pct*T - 1``, (``2*pct*T - 2``), ``T - 1``;
    the value moves from the phase's start value to its end value. Steps past
    ``T - 1`` hold the value at ``T - 1`` (with ``three_phase`` and
    ``pct_start > 0.5`` that is still in the second phase). A phase of zero
    length (torch divides by zero there) is treated as already finished.
    """
    total = as_float(total_steps)
    pct = as_float(pct_start)
    last = total - 1.0
    t = jnp.minimum(as_step(step), last)
    ends = [pct * total - 1.0]
    if three_phase:
        ends.append(2.0 * pct * total - 2.0)
    ends.append(last)
    starts = [jnp.zeros_like(total)] + ends[:-1]
    start_v, end_v, remaining, progress = values[0][0], values[0][1], None, None
    # Walk the phases from the last to the first so the earliest match wins.
    for i in reversed(range(len(ends))):
        lo, hi = starts[i], ends[i]
        rem, prog = phase_position(t, lo, hi)
        if i == len(ends) - 1:
            start_v, end_v, remaining, progress = values[i][0], values[i][1], rem, prog
        else:
            here = t <= hi
            start_v = jnp.where(here, values[i][0], start_v)
            end_v = jnp.where(here, values[i][1], end_v)
            remaining = jnp.where(here, rem, remaining)
            progress = jnp.where(here, prog, progress)
    return start_v, end_v, remaining, progress


def _check_one_cycle(call, total_steps, pct_start, anneal, three_phase):
    check_positive(call, "total_steps", total_steps)
    check_range(call, "pct_start", pct_start, 0.0, 1.0, low_open=True, high_open=True)
    check_choice(call, "anneal", anneal, tuple(_ANNEAL))
    check_flag(call, "three_phase", three_phase)


def one_cycle(
    max_value: ArrayLike,
    total_steps: ArrayLike,
    pct_start: ArrayLike = 0.3,
    anneal: str = "cos",
    div_factor: ArrayLike = 25.0,
    final_div_factor: ArrayLike = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """One-cycle learning rate (Smith's super-convergence): torch ``OneCycleLR``.

    Rises from ``max_value / div_factor`` to ``max_value`` over the first
    ``pct_start`` of ``total_steps``, then anneals to
    ``max_value / div_factor / final_div_factor``. With ``three_phase`` it
    first returns symmetrically to the initial value and anneals to the
    minimum only in a third phase. Equal to torch for ``step < total_steps``;
    from ``total_steps - 1`` on it holds the final value (torch extrapolates
    one step, then raises).

    Args:
        max_value: peak value.
        total_steps: length of the cycle, > 0.
        pct_start: fraction of the cycle spent rising, in (0, 1).
        anneal: ``"cos"`` or ``"linear"`` (static).
        div_factor: initial value is ``max_value / div_factor``, > 0.
        final_div_factor: final value is ``initial / final_div_factor``, > 0.
        three_phase: use torch's three-phase variant (static).

    References:
        Smith & Topin, Super-Convergence, 2017, https://arxiv.org/abs/1708.07120

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.one_cycle(1.0, total_steps=100)
        >>> [round(float(s(t)), 4) for t in (0, 29, 99)]
        [0.04, 1.0, 0.0]
    """
    call = "one_cycle"
    concrete(call, "max_value", max_value)
    _check_one_cycle(call, total_steps, pct_start, anneal, three_phase)
    check_positive(call, "div_factor", div_factor)
    check_positive(call, "final_div_factor", final_div_factor)
    fn = _ANNEAL[anneal]

    def schedule(step):
        peak = as_float(max_value)
        initial = peak / as_float(div_factor)
        low = initial / as_float(final_div_factor)
        values = [(initial, peak), (peak, initial), (initial, low)] if three_phase else [
            (initial, peak),
            (peak, low),
        ]
        return fn(*_one_cycle_phases(step, total_steps, pct_start, values, three_phase))

    return schedule


def one_cycle_momentum(
    total_steps: ArrayLike,
    pct_start: ArrayLike = 0.3,
    base_value: ArrayLike = 0.85,
    max_value: ArrayLike = 0.95,
    anneal: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    """One-cycle momentum, moving opposite to :func:`one_cycle`'s LR: torch
    ``OneCycleLR``'s momentum (``base_momentum``, ``max_momentum``).

    Falls from ``max_value`` to ``base_value`` while the LR rises, then climbs
    back to ``max_value`` (in the three-phase variant: climbs back, then holds).
    Holds ``max_value`` from ``total_steps - 1`` on.

    Args:
        total_steps: length of the cycle, > 0.
        pct_start: fraction of the cycle spent falling, in (0, 1).
        base_value: lowest momentum, at the LR peak.
        max_value: highest momentum, at both ends.
        anneal: ``"cos"`` or ``"linear"`` (static).
        three_phase: use torch's three-phase variant (static).
    """
    call = "one_cycle_momentum"
    _check_one_cycle(call, total_steps, pct_start, anneal, three_phase)
    concrete(call, "base_value", base_value)
    concrete(call, "max_value", max_value)
    fn = _ANNEAL[anneal]

    def schedule(step):
        low, high = as_float(base_value), as_float(max_value)
        values = [(high, low), (low, high), (high, high)] if three_phase else [(high, low), (low, high)]
        return fn(*_one_cycle_phases(step, total_steps, pct_start, values, three_phase))

    return schedule


# ---------------------------------------------------------------- CyclicLR

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _cyclic_wave(step, step_size_up, step_size_down, mode, gamma) -> jax.Array:
    """torch ``CyclicLR``'s ``scale_factor * scale_fn``: the height in [0, 1] of
    the triangle wave at ``step``, times the mode's amplitude.

    Works with the position inside the cycle, ``pos = step - (cycle - 1) *
    cycle_len``, rather than torch's ``x = 1 + step / cycle_len - cycle``; the
    two are equal in exact arithmetic and the former is exact for integers.
    """
    down_size = step_size_up if step_size_down is None else step_size_down
    up, down = as_float(step_size_up), as_float(down_size)
    up_arr, down_arr = as_array(step_size_up), as_array(down_size)
    if (
        jnp.issubdtype(up_arr.dtype, jnp.integer)
        and jnp.issubdtype(down_arr.dtype, jnp.integer)
        and _int_sum_fits(step_size_up, down_size, up_arr.dtype)
    ):
        cycle_len = up_arr + down_arr.astype(up_arr.dtype)  # exact integer cycles
    else:
        cycle_len = up + down  # e.g. an int32 and a float32 array: no implicit promotion
    cycles, pos = floor_divmod(step, cycle_len)
    height = jnp.where(
        pos <= up,
        pos / up,
        (up + down - pos) / jnp.where(down > 0, down, 1.0),
    )
    height = jnp.clip(height, 0.0, 1.0)
    if mode == "triangular":
        return height
    if mode == "triangular2":
        return height * 0.5**cycles
    return height * power(gamma, as_step(step))


def _int_sum_fits(a, b, dtype) -> bool:
    """Whether concrete integers ``a + b`` fit ``dtype`` (traced ones are
    assumed to: they cannot be inspected)."""
    if is_traced(a) or is_traced(b):
        return True
    total = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    return bool(np.all(total <= np.iinfo(dtype).max))


def _check_cyclic(call, base_value, max_value, step_size_up, step_size_down, mode, gamma):
    concrete(call, "base_value", base_value)
    concrete(call, "max_value", max_value)
    check_positive(call, "step_size_up", step_size_up)
    if step_size_down is not None:
        check_range(call, "step_size_down", step_size_down, 0.0)
    check_choice(call, "mode", mode, _CYCLIC_MODES)
    check_range(call, "gamma", gamma, 0.0, 1.0, low_open=True)


def cyclic(
    base_value: ArrayLike,
    max_value: ArrayLike,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
    mode: str = "triangular",
    gamma: ArrayLike = 1.0,
) -> Schedule:
    """Cyclical learning rate (Smith 2015): torch ``CyclicLR``'s LR.

    A triangle wave between ``base_value`` and ``max_value``: ``step_size_up``
    steps up, ``step_size_down`` (default: ``step_size_up``) steps down. Modes:
    ``"triangular"`` (constant amplitude), ``"triangular2"`` (amplitude halves
    every cycle), ``"exp_range"`` (amplitude ``gamma ** step``).

    Args:
        base_value: lower bound of the wave.
        max_value: upper bound of the wave (reached only in the first cycle for
            the decaying modes).
        step_size_up: steps rising, > 0.
        step_size_down: steps falling, >= 0; ``None`` means ``step_size_up``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (static).
        gamma: amplitude decay per step for ``"exp_range"``, in (0, 1].

    References:
        Smith, Cyclical Learning Rates for Training Neural Networks, 2015,
        https://arxiv.org/abs/1506.01186
    """
    _check_cyclic("cyclic", base_value, max_value, step_size_up, step_size_down, mode, gamma)

    def schedule(step):
        height = _cyclic_wave(step, step_size_up, step_size_down, mode, gamma)
        # base + (max - base) * height, written so that the peak is exactly max.
        return linear_anneal(as_float(base_value), as_float(max_value), 1.0 - height, height)

    return schedule


def cyclic_momentum(
    base_value: ArrayLike,
    max_value: ArrayLike,
    step_size_up: ArrayLike = 2000,
    step_size_down: ArrayLike | None = None,
    mode: str = "triangular",
    gamma: ArrayLike = 1.0,
) -> Schedule:
    """Cyclical momentum, opposite to :func:`cyclic`'s LR: torch ``CyclicLR``'s
    momentum (``base_momentum=base_value``, ``max_momentum=max_value``).

    ``max_value - (max_value - base_value) * height * amplitude``: the momentum
    is ``max_value`` where the LR is at its base and falls as the LR rises.
    Arguments as in :func:`cyclic`.
    """
    _check_cyclic("cyclic_momentum", base_value, max_value, step_size_up, step_size_down, mode, gamma)

    def schedule(step):
        height = _cyclic_wave(step, step_size_up, step_size_down, mode, gamma)
        # max - (max - base) * height, written so that the trough is exactly base.
        return linear_anneal(as_float(max_value), as_float(base_value), 1.0 - height, height)

    return schedule


# ---------------------------------------------------------------- fastai


def combined_cos(
    total_steps: ArrayLike,
    pct_start: ArrayLike,
    start_value: ArrayLike,
    peak_value: ArrayLike,
    end_value: ArrayLike,
) -> Schedule:
    """fastai's ``combined_cos``: cosine from ``start_value`` to ``peak_value``
    over the first ``pct_start`` of the run, then cosine to ``end_value``.

    Evaluated at position ``step / total_steps``, as fastai's ``fit_one_cycle``
    does; held at ``end_value`` from ``total_steps`` on. fastai's
    ``fit_one_cycle(n, lr)`` uses ``combined_cos(T, 0.25, lr / 25, lr, lr / 1e5)``
    for the LR and ``combined_cos(T, 0.25, 0.95, 0.85, 0.95)`` for momentum.

    Args:
        total_steps: length of the run, > 0.
        pct_start: fraction spent going to the peak, in [0, 1].
        start_value: value at step 0.
        peak_value: value at ``pct_start * total_steps``.
        end_value: value at ``total_steps``.
    """
    call = "combined_cos"
    check_positive(call, "total_steps", total_steps)
    check_range(call, "pct_start", pct_start, 0.0, 1.0)
    for name, v in (("start_value", start_value), ("peak_value", peak_value), ("end_value", end_value)):
        concrete(call, name, v)

    def schedule(step):
        total = as_float(total_steps)
        t = jnp.minimum(as_step(step), total)
        peak_at = as_float(pct_start) * total
        first = t < peak_at
        rem_up, prog_up = phase_position(t, jnp.zeros_like(total), peak_at)
        rem_down, prog_down = phase_position(t, peak_at, total)
        remaining = jnp.where(first, rem_up, rem_down)
        progress = jnp.where(first, prog_up, prog_down)
        start = jnp.where(first, as_float(start_value), as_float(peak_value))
        end = jnp.where(first, as_float(peak_value), as_float(end_value))
        return cos_anneal(start, end, remaining, progress)

    return schedule
