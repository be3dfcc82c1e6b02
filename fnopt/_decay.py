"""Monotone schedules: constant, step, multistep, exponential, polynomial,
linear, cosine, and the exponential range sweep of the LR range test.

Every factory returns ``schedule(step) -> value``, a closed form of the step
(the number of updates already applied, first update at ``step = 0``). Steps
may be ints, floats (fractional epochs) or arrays; negative steps are treated
as 0. Values come out in the default float dtype (float32, or float64 with
x64 enabled). Every numeric hyperparameter may be a traced JAX value, so
``jax.vmap`` over a grid of hyperparameters works; only concrete values are
validated.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import (
    as_float,
    check_flag,
    check_nonnegative,
    check_positive,
    check_range,
    concrete,
    is_traced,
)

Schedule = Callable[[Any], jax.Array]
ArrayLike = Any


def as_step(step: ArrayLike) -> jax.Array:
    """The step as a float array, clamped at 0."""
    return jnp.maximum(as_float(step), 0.0)


def as_array(x: ArrayLike) -> jax.Array:
    """``jnp.asarray(x)``, except that a Python int too large for the default
    int dtype (e.g. a step count of ``2**40`` without x64) becomes a float
    instead of raising ``OverflowError``."""
    if isinstance(x, int) and not isinstance(x, bool):
        info = np.iinfo(jax.dtypes.canonicalize_dtype(np.int64))
        if not info.min <= x <= info.max:
            return as_float(x)
    return jnp.asarray(x)


def floor_divmod(step: ArrayLike, size: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(floor(step / size), step - floor(step / size) * size)`` as floats.

    Exact integer arithmetic when both are integers (so steps near ``2**31``
    are not rounded through float32). Otherwise the remainder is IEEE
    ``fmod``, which is exact: an exact multiple of ``size`` starts a new
    period, a tiny ``size`` (``1e-30``) gives the true remainder, and an
    infinite one (a cycle longer than float32's range) gives ``step``. The
    quotient is rounded from ``(step - remainder) / size`` (``inf`` when it
    overflows).
    """
    step_arr, size_arr = as_array(step), as_array(size)
    if jnp.issubdtype(step_arr.dtype, jnp.integer) and jnp.issubdtype(
        size_arr.dtype, jnp.integer
    ):
        # The wider of the two int dtypes (an int64 size with x64 must not
        # wrap around when cast to an int32 step).
        wide = max(step_arr.dtype, size_arr.dtype, key=lambda d: jnp.dtype(d).itemsize)
        step_arr = jnp.maximum(step_arr.astype(wide), 0)
        size_arr = size_arr.astype(wide)
        q = step_arr // size_arr
        return as_float(q), as_float(step_arr - q * size_arr)
    t, s = as_step(step_arr), as_float(size_arr)
    rem = jnp.clip(jnp.fmod(t, s), 0.0, s)
    return jnp.round((t - rem) / s), rem


def power(base: ArrayLike, exponent: jax.Array) -> jax.Array:
    """``base ** exponent`` as ``exp(exponent * log(base))``, with ``log(base)``
    taken in float64 on the host when ``base`` is concrete.

    ``float32(0.999) ** 5000`` is off by 6e-5 (the rounding of ``base`` times
    the exponent); this form is exact to float32 precision for every step.
    """
    log_base = log_of(base)
    # base == 1: 1 for every exponent, also an infinite one (a period of 1e-30
    # makes ``exponent`` overflow, and inf * 0 would be NaN).
    return jnp.where(log_base == 0.0, 1.0, jnp.exp(exponent * log_base))


def log_of(x: ArrayLike) -> jax.Array:
    """``log(x)``, taken in float64 on the host when ``x`` is concrete."""
    if is_traced(x):
        return jnp.log(as_float(x))
    return as_float(np.log(np.asarray(x, dtype=np.float64)))


def fractions(ahead: jax.Array, done: jax.Array, length: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(remaining, progress) = (ahead / length, done / length)`` for
    ``ahead + done == length``.

    The smaller of the two is divided out, the larger is one minus it: both
    keep full relative precision, and the ends are exactly ``(1, 0)`` and
    ``(0, 1)`` even under ``jit``, where XLA turns a division by a constant
    hyperparameter into a multiplication by its rounded reciprocal (so that
    ``total / total`` may come out as ``1 - ulp``).

    That reciprocal is flushed to zero for a length beyond ``2**126`` (float32),
    so such lengths are first scaled down by a power of two (exact).
    """
    half = jnp.finfo(jnp.result_type(length)).maxexp // 2
    scale = jnp.where(length >= 2.0**half, 2.0**-half, 1.0)
    ahead, done, length = ahead * scale, done * scale, length * scale
    remaining, progress = ahead / length, done / length
    early = progress <= remaining
    return jnp.where(early, 1.0 - progress, remaining), jnp.where(early, progress, 1.0 - remaining)


def phase_position(t: jax.Array, lo: jax.Array, hi: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(remaining, progress)`` of ``t`` in the phase ``[lo, hi]``, in [0, 1].

    ``(hi - t) / (hi - lo)`` and ``(t - lo) / (hi - lo)`` from
    :func:`fractions` (full relative precision near both ends, exact ends).
    An empty phase (``hi <= lo``) counts as finished (remaining 0, progress 1).
    """
    length = hi - lo
    ok = length > 0
    t = jnp.clip(t, lo, jnp.maximum(hi, lo))
    remaining, progress = fractions(hi - t, t - lo, jnp.where(ok, length, 1.0))
    return jnp.where(ok, remaining, 0.0), jnp.where(ok, progress, 1.0)


def power_weights(remaining: jax.Array, progress: jax.Array, exponent: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(remaining ** exponent, 1 - remaining ** exponent)``, as
    :func:`fractions` returns them: ``exp`` and ``-expm1`` of ``exponent *
    log(remaining)``, the log taken as ``log1p(-progress)`` near the start.

    So a large exponent multiplies the rounding of ``progress``, not that of
    ``1 - progress`` (``0.99986 ** 13151``), and the second weight keeps full
    precision where the first is close to 1. Exact at both ends.
    """
    log_r = jnp.where(progress <= remaining, jnp.log1p(-progress), jnp.log(remaining))
    log_w = jnp.where(progress == 0.0, 0.0, exponent * log_r)
    return jnp.exp(log_w), -jnp.expm1(log_w)


def cos_anneal(
    start: jax.Array, end: jax.Array, remaining: jax.Array, progress: jax.Array | None = None
) -> jax.Array:
    """Half-cosine from ``start`` to ``end``; ``remaining`` runs from 1 to 0.

    ``end + (start - end) * (1 + cos(pi * (1 - remaining))) / 2``, written as
    ``start * sin(pi/2 r)**2 + end * sin(pi/2 p)**2`` with ``p = 1 - r`` the
    progress, so that both endpoints are exact. Callers pass both from
    :func:`fractions`, not ``progress`` as ``1 - remaining``: then values
    close to either end keep full relative precision (``1 - r`` loses it near
    the start, e.g. on a rise from a small value).
    """
    if progress is None:
        progress = 1.0 - remaining
    return between(
        start * jnp.square(jnp.sin(0.5 * jnp.pi * remaining)) + end * jnp.square(jnp.sin(0.5 * jnp.pi * progress)),
        start,
        end,
    )


def linear_anneal(
    start: jax.Array, end: jax.Array, remaining: jax.Array, progress: jax.Array | None = None
) -> jax.Array:
    """Straight line from ``start`` to ``end``; ``remaining`` runs from 1 to 0
    (``start * r + end * p`` with ``p = 1 - r`` the progress, passed by the
    caller as for :func:`cos_anneal`: both endpoints exact)."""
    if progress is None:
        progress = 1.0 - remaining
    return between(start * remaining + end * progress, start, end)


def between(value: jax.Array, start: jax.Array, end: jax.Array) -> jax.Array:
    """``value`` clipped to the interval spanned by ``start`` and ``end``.

    An interpolation ``start * a + end * b`` with ``a + b = 1`` can round a
    few ulps outside its ends, and to ``inf`` when both ends are near
    float32's maximum; the exact value lies between them.
    """
    return jnp.clip(value, jnp.minimum(start, end), jnp.maximum(start, end))


def constant(value: ArrayLike) -> Schedule:
    """A schedule that always returns ``value``.

    Examples:
        >>> from fnopt import schedules
        >>> float(schedules.constant(0.1)(1000))
        0.10000000149011612
    """
    concrete("constant", "value", value)

    def schedule(step):
        return jnp.broadcast_to(as_float(value), jnp.shape(step))

    return schedule


def step_decay(init_value: ArrayLike, step_size: ArrayLike, gamma: ArrayLike = 0.1) -> Schedule:
    """``init_value * gamma ** floor(step / step_size)``: torch ``StepLR``.

    Args:
        init_value: value at step 0.
        step_size: steps between decays, > 0 (may be fractional).
        gamma: multiplicative factor per decay, in (0, 1].

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.step_decay(1.0, step_size=30, gamma=0.1)
        >>> [round(float(s(t)), 4) for t in (0, 29, 30, 60)]
        [1.0, 1.0, 0.1, 0.01]
    """
    concrete("step_decay", "init_value", init_value)
    check_positive("step_decay", "step_size", step_size)
    check_range("step_decay", "gamma", gamma, 0.0, 1.0, low_open=True)

    def schedule(step):
        q, _ = floor_divmod(step, step_size)
        return as_float(init_value) * power(gamma, q)

    return schedule


def multistep_decay(
    init_value: ArrayLike, milestones: Sequence[ArrayLike] | jax.Array, gamma: ArrayLike = 0.1
) -> Schedule:
    """``init_value * gamma ** (number of milestones <= step)``: torch ``MultiStepLR``.

    A milestone listed twice counts twice (as in torch). Milestones need not be
    sorted and may be a traced array.

    Args:
        init_value: value at step 0.
        milestones: steps at which the value is multiplied by ``gamma``, >= 0.
        gamma: multiplicative factor, in (0, 1].
    """
    concrete("multistep_decay", "init_value", init_value)
    if not isinstance(milestones, jax.Array) and not hasattr(milestones, "__len__"):
        raise ValueError(
            f"`multistep_decay(milestones=...)` must be a sequence of steps, got {milestones!r}"
        )
    check_nonnegative("multistep_decay", "milestones", milestones)
    check_range("multistep_decay", "gamma", gamma, 0.0, 1.0, low_open=True)
    marks = as_float(milestones).reshape(-1)

    def schedule(step):
        t = as_step(step)
        passed = marks.reshape(marks.shape + (1,) * t.ndim) <= t
        return as_float(init_value) * power(gamma, jnp.sum(passed, axis=0).astype(t.dtype))

    return schedule


def exponential_decay(init_value: ArrayLike, gamma: ArrayLike, min_value: ArrayLike = 0.0) -> Schedule:
    """``init_value * gamma ** step``, stopped at ``min_value``: torch
    ``ExponentialLR``, with Optax's ``end_value``.

    The value is ``max(init_value * gamma ** step, min_value)``: a floor, as
    Optax's ``exponential_decay(end_value=...)`` with ``decay_rate < 1``.
    (Optax makes ``end_value`` a ceiling when ``decay_rate > 1``; fnopt's
    ``gamma`` is at most 1, so the value never grows and ``min_value`` is
    always where the decay stops.) A negative ``init_value`` rises towards 0
    and stops at ``min_value`` from below: ``min(..., min_value)``. The default
    0 leaves both unchanged; the torch schedule is ``min_value=0``.

    Args:
        init_value: value at step 0.
        gamma: multiplicative factor per step, in (0, 1].
        min_value: where the decay stops.

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.exponential_decay(1.0, 0.5, min_value=0.2)
        >>> [round(float(s(t)), 3) for t in (0, 1, 2, 3, 100)]
        [1.0, 0.5, 0.25, 0.2, 0.2]
    """
    concrete("exponential_decay", "init_value", init_value)
    check_range("exponential_decay", "gamma", gamma, 0.0, 1.0, low_open=True)
    concrete("exponential_decay", "min_value", min_value)

    def schedule(step):
        init, low = as_float(init_value), as_float(min_value)
        value = init * power(gamma, as_step(step))
        return jnp.where(init >= 0, jnp.maximum(value, low), jnp.minimum(value, low))

    return schedule


def polynomial_decay(
    init_value: ArrayLike,
    total_steps: ArrayLike,
    power: ArrayLike = 1.0,
    end_value: ArrayLike = 0.0,
    cycle: bool = False,
) -> Schedule:
    """Polynomial decay to ``end_value`` over ``total_steps``, then held (or
    restarted, with ``cycle``).

    ``end + (init - end) * (1 - min(step, total_steps) / total_steps) ** power``;
    equals torch ``PolynomialLR`` (``total_iters=total_steps``) when
    ``end_value = 0``, and Keras ``PolynomialDecay(initial_learning_rate,
    decay_steps=total_steps, end_learning_rate=end_value, power, cycle)``.

    With ``cycle``, the decay length becomes the first multiple of
    ``total_steps`` at or after the step (``total_steps * ceil(step /
    total_steps)``, and ``total_steps`` at step 0, as Keras): the value
    reaches ``end_value`` at every multiple, then jumps back up to
    ``end + (init - end) * (1 / (k + 1)) ** power`` after the ``k``-th one.

    Args:
        init_value: value at step 0.
        total_steps: steps to reach ``end_value``, > 0.
        power: exponent, > 0.
        end_value: value from ``total_steps`` on (at each multiple with ``cycle``).
        cycle: restart the decay with a longer length after each multiple
            (static).

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.polynomial_decay(1.0, 10, end_value=0.0, cycle=True)
        >>> [round(float(s(t)), 3) for t in (0, 5, 10, 15, 20)]
        [1.0, 0.5, 0.0, 0.25, 0.0]
    """
    concrete("polynomial_decay", "init_value", init_value)
    check_positive("polynomial_decay", "total_steps", total_steps)
    check_positive("polynomial_decay", "power", power)
    concrete("polynomial_decay", "end_value", end_value)
    check_flag("polynomial_decay", "cycle", cycle)

    def schedule(step):
        total = as_float(total_steps)
        if cycle:
            # 1 - t / (k * total) with k = ceil(t / total) (1 at t = 0) is
            # (total - rem) / total / k: 0 at an exact multiple, and 0 to float
            # precision when k overflows (a total of 1e-30).
            q, rem = floor_divmod(step, total_steps)
            within, done = fractions(total - rem, rem, total)
            multiple = (q > 0) & (rem == 0)
            remaining = jnp.where(multiple, 0.0, within / (q + 1.0))
            progress = jnp.where(multiple, 1.0, (q + done) / (q + 1.0))
        else:
            t = jnp.minimum(as_step(step), total)
            remaining, progress = fractions(total - t, t, total)
        weights = power_weights(remaining, progress, as_float(power))
        return linear_anneal(as_float(init_value), as_float(end_value), *weights)

    return schedule


def linear(start_value: ArrayLike, end_value: ArrayLike, total_steps: ArrayLike) -> Schedule:
    """Straight line from ``start_value`` to ``end_value`` over ``total_steps``, then held.

    torch ``LinearLR`` written with absolute values instead of factors.

    Args:
        start_value: value at step 0.
        end_value: value from ``total_steps`` on.
        total_steps: length of the ramp, > 0.
    """
    concrete("linear", "start_value", start_value)
    concrete("linear", "end_value", end_value)
    check_positive("linear", "total_steps", total_steps)

    def schedule(step):
        total = as_float(total_steps)
        t = jnp.minimum(as_step(step), total)
        return linear_anneal(as_float(start_value), as_float(end_value), *fractions(total - t, t, total))

    return schedule


def cosine_decay(
    init_value: ArrayLike, total_steps: ArrayLike, min_value: ArrayLike = 0.0, exponent: ArrayLike = 1.0
) -> Schedule:
    """Half-cosine from ``init_value`` to ``min_value`` over ``total_steps``, then held.

    ``min + (init - min) * ((1 + cos(pi * step / total_steps)) / 2) ** exponent``:
    torch ``CosineAnnealingLR`` (``T_max=total_steps``, ``eta_min=min_value``)
    for ``step <= total_steps`` when ``exponent = 1``, and Optax
    ``cosine_decay_schedule(init_value, decay_steps=total_steps,
    alpha=min_value / init_value, exponent=exponent)``. torch then rises again;
    fnopt holds ``min_value`` (use :func:`cosine_warm_restarts` for restarts).

    Args:
        init_value: value at step 0.
        total_steps: length of the half-period, > 0.
        min_value: value from ``total_steps`` on.
        exponent: power of the cosine factor, > 0 (above 1 the value falls
            sooner, below 1 later).

    References:
        Loshchilov & Hutter, SGDR, 2017, https://arxiv.org/abs/1608.03983
    """
    call = "cosine_decay"
    concrete(call, "init_value", init_value)
    concrete(call, "min_value", min_value)
    check_positive(call, "total_steps", total_steps)
    check_positive(call, "exponent", exponent)

    def schedule(step):
        total = as_float(total_steps)
        t = jnp.minimum(as_step(step), total)
        remaining, progress = fractions(total - t, t, total)
        init, low = as_float(init_value), as_float(min_value)
        plain = cos_anneal(init, low, remaining, progress)
        # factor = sin(pi/2 r) ** (2 e), and 1 - factor from expm1: both keep
        # full precision, and the ends are exact (factor 1 at r = 1, 0 at r = 0).
        # Near the start log(sin(pi/2 r)) = log(cos(pi/2 p)) = log1p(-2 sin(pi/4 p)**2).
        log_sin = jnp.where(
            progress <= remaining,
            jnp.log1p(-2.0 * jnp.square(jnp.sin(0.25 * jnp.pi * progress))),
            jnp.log(jnp.sin(0.5 * jnp.pi * remaining)),
        )
        log_factor = as_float(exponent) * 2.0 * log_sin
        powered = between(init * jnp.exp(log_factor) - low * jnp.expm1(log_factor), init, low)
        return jnp.where(as_float(exponent) == 1.0, plain, powered)

    return schedule


def exponential_range(start_value: ArrayLike, end_value: ArrayLike, num_steps: ArrayLike) -> Schedule:
    """``start * (end / start) ** (step / num_steps)``: the LR range test sweep.

    Geometric interpolation from ``start_value`` (step 0) to ``end_value``
    (step ``num_steps``); held at ``end_value`` after that so that values stay
    finite for every step. Decreasing sweeps (``end < start``) are allowed.

    Args:
        start_value: value at step 0, > 0.
        end_value: value at ``num_steps``, > 0.
        num_steps: length of the sweep, > 0.
    """
    check_positive("exponential_range", "start_value", start_value)
    check_positive("exponential_range", "end_value", end_value)
    check_positive("exponential_range", "num_steps", num_steps)

    def schedule(step):
        total = as_float(num_steps)
        t = jnp.minimum(as_step(step), total)
        remaining, progress = fractions(total - t, t, total)
        start, end = as_float(start_value), as_float(end_value)
        # Not log(end / start): that ratio overflows for a sweep from 1e-20 to
        # 1e20. Geometric from whichever end is closer (both ends exact, held
        # at end_value), the factor applied as two square roots: a half sweep
        # from 3e38 down to 1e-38 multiplies by exp(-88), which is below
        # float32's normal range, but twice by exp(-44) stays inside it.
        log_ratio = log_of(end_value) - log_of(start_value)
        early = progress <= remaining
        base = jnp.where(early, start, end)
        root = jnp.exp(0.5 * jnp.where(early, progress, -remaining) * log_ratio)
        return base * root * root

    return schedule
