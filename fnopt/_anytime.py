"""Anytime schedules: warmup-stable-decay, inverse square root, inverse time.

None of them ties the shape of the run to its length in advance: the inverse
square root and inverse time decays have no end, and warmup-stable-decay
holds its peak until a cooldown whose start follows ``total_steps``, which
may be a traced value changed between steps (extend or shorten a run
without recompiling). Same conventions as :mod:`fnopt._decay`: closed forms
of the step, every numeric hyperparameter may be traced, concrete ones are
validated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import (
    as_float,
    check_choice,
    check_flag,
    check_nonnegative,
    check_positive,
    concrete,
    float_dtype,
)
from ._decay import (
    ArrayLike,
    Schedule,
    as_step,
    cos_anneal,
    floor_divmod,
    linear_anneal,
    phase_position,
)

_SHAPES = ("linear", "cosine", "1-sqrt")


def _warmup_shape(shape: str, start, end, remaining, progress) -> jax.Array:
    """From ``start`` to ``end`` by transformers' warmup factor ``f(p)``:
    ``p``, ``(1 - cos(pi p)) / 2`` or ``1 - sqrt(1 - p)``.

    Written as ``start * (1 - f) + end * f`` with both weights computed
    directly (``1 - sqrt(1 - p) = p / (1 + sqrt(r))``), so both ends are exact.
    """
    if shape == "1-sqrt":
        root = jnp.sqrt(remaining)
        return linear_anneal(start, end, root, progress / (1.0 + root))
    return (cos_anneal if shape == "cosine" else linear_anneal)(start, end, remaining, progress)


def _decay_shape(shape: str, start, end, remaining, progress) -> jax.Array:
    """From ``start`` to ``end`` by transformers' decay factor ``f(p)``:
    ``1 - p``, ``(1 + cos(pi p)) / 2`` or ``1 - sqrt(p)`` (``= r / (1 +
    sqrt(p))``), as ``start * f + end * (1 - f)``."""
    if shape == "1-sqrt":
        root = jnp.sqrt(progress)
        return linear_anneal(start, end, remaining / (1.0 + root), root)
    return (cos_anneal if shape == "cosine" else linear_anneal)(start, end, remaining, progress)


def _check_phases(call: str, total_steps, warmup_steps, decay_steps) -> None:
    """``total_steps >= warmup_steps + decay_steps`` as the schedule computes
    it (the decay starts at ``total - decay``, in the default float dtype)."""
    values = [concrete(call, name, v) for name, v in
              (("total_steps", total_steps), ("warmup_steps", warmup_steps), ("decay_steps", decay_steps))]
    if any(v is None for v in values):
        return
    total, warm, decay = (v.astype(float_dtype()) for v in values)
    if np.any(total - decay < warm):
        raise ValueError(
            f"`{call}(total_steps=...)` must be >= warmup_steps + decay_steps = "
            f"{np.asarray(warm + decay).tolist()}, got {np.asarray(total).tolist()}"
        )


def warmup_stable_decay(
    peak_value: ArrayLike,
    total_steps: ArrayLike,
    warmup_steps: ArrayLike,
    decay_steps: ArrayLike,
    *,
    warmup_shape: str = "linear",
    decay_shape: str = "1-sqrt",
    min_value: ArrayLike = 0.0,
) -> Schedule:
    """Warmup-stable-decay (WSD): rise to ``peak_value``, hold it, cool down.

    * ``step < warmup_steps``: from ``min_value`` to ``peak_value`` by
      ``warmup_shape``, with ``p = step / warmup_steps``;
    * until ``total_steps - decay_steps``: ``peak_value``;
    * until ``total_steps``: from ``peak_value`` to ``min_value`` by
      ``decay_shape``, ``p`` the progress through the decay;
    * from ``total_steps`` on: ``min_value``.

    Shapes (as factors of the way from the low to the high value): warmup
    ``"linear"`` ``p``, ``"cosine"`` ``(1 - cos(pi p)) / 2``, ``"1-sqrt"``
    ``1 - sqrt(1 - p)``; decay ``"linear"`` ``1 - p``, ``"cosine"``
    ``(1 + cos(pi p)) / 2``, ``"1-sqrt"`` ``1 - sqrt(p)``.

    Equals Hugging Face transformers' ``get_wsd_schedule(num_warmup_steps=
    warmup_steps, num_decay_steps=decay_steps, num_training_steps=total_steps,
    warmup_type=warmup_shape, decay_type=decay_shape, min_lr_ratio=min_value /
    peak_value)`` times ``peak_value`` at every integer step (for
    ``peak_value > 0 <= min_value``: transformers clips its factor at 0), the
    stable phase lasting ``total_steps - warmup_steps - decay_steps`` steps as
    there. Fractional steps and step counts are allowed; the phases stay
    continuous (transformers divides by ``max(1, n)``, which differs only for
    a phase shorter than one step, where no integer step falls).

    A traced ``total_steps`` moves the cooldown: a run can be extended or
    shortened between steps without recompiling, and the value does not jump
    as long as the decay has begun neither before nor after the change.
    Concrete ``total_steps`` must be ``>= warmup_steps + decay_steps``; a
    traced one that is smaller starts the decay at ``total_steps -
    decay_steps`` while the warmup still runs (the warmup wins until it ends,
    as in transformers).

    Args:
        peak_value: value of the stable phase.
        total_steps: length of the run, >= ``warmup_steps + decay_steps``.
        warmup_steps: length of the warmup, >= 0.
        decay_steps: length of the cooldown at the end, >= 0.
        warmup_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"`` (static).
        decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"`` (static).
        min_value: value at step 0 and from ``total_steps`` on.

    References:
        Hu et al., MiniCPM, 2024, https://arxiv.org/abs/2404.06395;
        Hägele et al., Scaling Laws and Compute-Optimal Training Beyond Fixed
        Training Durations, 2024, https://arxiv.org/abs/2405.18392

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.warmup_stable_decay(1.0, total_steps=100, warmup_steps=10, decay_steps=20)
        >>> [round(float(s(t)), 3) for t in (0, 5, 10, 80, 85, 100, 1000)]
        [0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    """
    call = "warmup_stable_decay"
    concrete(call, "peak_value", peak_value)
    check_nonnegative(call, "total_steps", total_steps)
    check_nonnegative(call, "warmup_steps", warmup_steps)
    check_nonnegative(call, "decay_steps", decay_steps)
    _check_phases(call, total_steps, warmup_steps, decay_steps)
    check_choice(call, "warmup_shape", warmup_shape, _SHAPES)
    check_choice(call, "decay_shape", decay_shape, _SHAPES)
    concrete(call, "min_value", min_value)

    def schedule(step):
        t = as_step(step)
        total, warm = as_float(total_steps), as_float(warmup_steps)
        peak, low = as_float(peak_value), as_float(min_value)
        decay_start = total - as_float(decay_steps)
        rise = _warmup_shape(warmup_shape, low, peak, *phase_position(t, jnp.zeros_like(warm), warm))
        fall = _decay_shape(decay_shape, peak, low, *phase_position(t, decay_start, total))
        return jnp.where(t < warm, rise, jnp.where(t < decay_start, peak, fall))

    return schedule


def inverse_sqrt(peak_value: ArrayLike, warmup_steps: ArrayLike, timescale: ArrayLike | None = None) -> Schedule:
    """Linear warmup to ``peak_value``, then an inverse square-root decay.

    After the warmup the value is ``peak * sqrt(timescale / (step -
    warmup_steps + timescale))``: the "rsqrt" schedule of transformers.

    Equals Hugging Face transformers' ``get_inverse_sqrt_schedule(
    num_warmup_steps=warmup_steps, timescale=timescale)`` times
    ``peak_value`` at every integer step, with the same default
    ``timescale``: ``warmup_steps``, or ``10_000`` when ``warmup_steps`` is
    0. The warmup rises from 0 as ``step / warmup_steps`` (transformers
    divides by ``max(1, warmup_steps)``, which differs only for a warmup
    shorter than one step, where the only integer step is 0). The value is
    ``peak_value`` at the end of the warmup and decays as ``1 / sqrt(step)``
    from there, never reaching 0.

    Args:
        peak_value: value at the end of the warmup.
        warmup_steps: length of the warmup, >= 0.
        timescale: steps over which the decay scales, > 0; ``None`` for the
            default above.

    References:
        Vaswani et al., Attention Is All You Need, 2017,
        https://arxiv.org/abs/1706.03762; Zhai et al., Scaling Vision
        Transformers, 2022, https://arxiv.org/abs/2106.04560

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.inverse_sqrt(1.0, warmup_steps=100)
        >>> [round(float(s(t)), 3) for t in (0, 50, 100, 400)]
        [0.0, 0.5, 1.0, 0.5]
    """
    call = "inverse_sqrt"
    concrete(call, "peak_value", peak_value)
    check_nonnegative(call, "warmup_steps", warmup_steps)
    if timescale is not None:
        check_positive(call, "timescale", timescale)

    def schedule(step):
        t = as_step(step)
        warm, peak = as_float(warmup_steps), as_float(peak_value)
        scale = jnp.where(warm > 0, warm, 10_000.0) if timescale is None else as_float(timescale)
        _, progress = phase_position(t, jnp.zeros_like(warm), warm)
        # sqrt(scale) / sqrt(...) rather than sqrt(scale / ...): the quotient
        # underflows for scale = 1e-30, its square root does not.
        decay = jnp.sqrt(scale) / jnp.sqrt(scale + jnp.maximum(t - warm, 0.0))
        return peak * jnp.where(t < warm, progress, jnp.minimum(decay, 1.0))

    return schedule


def _inverse_time(init, rate, steps_mantissa, steps_exponent) -> jax.Array:
    """``init / (1 + rate * p)`` with ``p = steps_mantissa * 2 ** steps_exponent``.

    ``rate * p`` is formed as mantissa and exponent, so neither ``p`` (``step
    / 1e-30``) nor the product overflows: beyond ``2 ** 100`` the 1 is below
    float precision and the value is ``init / (rate * p)``, scaled back by the
    exponent.
    """
    rate_m, rate_e = jnp.frexp(rate)
    mantissa, exponent = rate_m * steps_mantissa, rate_e + steps_exponent
    near = exponent <= 100
    x = jnp.ldexp(mantissa, jnp.minimum(exponent, 100))
    init_m, init_e = jnp.frexp(init)
    far = jnp.ldexp(init_m / jnp.where(near, 1.0, mantissa), init_e - jnp.where(near, 0, exponent))
    return jnp.where(near | (mantissa == 0), init / (1.0 + x), far)


def inverse_time_decay(
    init_value: ArrayLike, decay_steps: ArrayLike, decay_rate: ArrayLike, *, staircase: bool = False
) -> Schedule:
    """``init_value / (1 + decay_rate * step / decay_steps)``: Keras
    ``InverseTimeDecay``.

    With ``staircase``, ``step / decay_steps`` is floored: the value drops
    every ``decay_steps`` steps. Equals Keras ``InverseTimeDecay(
    initial_learning_rate=init_value, decay_steps, decay_rate, staircase)``.
    The value never reaches 0 and stays exact for every step, also where
    ``decay_rate * step / decay_steps`` is beyond float32's range.

    Args:
        init_value: value at step 0.
        decay_steps: steps per unit of decay, > 0 (may be fractional).
        decay_rate: how fast the value falls, >= 0 (0: constant).
        staircase: floor ``step / decay_steps`` (static).

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.inverse_time_decay(1.0, decay_steps=10, decay_rate=0.5)
        >>> [round(float(s(t)), 3) for t in (0, 10, 20, 25)]
        [1.0, 0.667, 0.5, 0.444]
    """
    call = "inverse_time_decay"
    concrete(call, "init_value", init_value)
    check_positive(call, "decay_steps", decay_steps)
    check_nonnegative(call, "decay_rate", decay_rate)
    check_flag(call, "staircase", staircase)

    def schedule(step):
        t, size = as_step(step), as_float(decay_steps)
        step_m, step_e = jnp.frexp(t)
        size_m, size_e = jnp.frexp(size)
        p_m, p_e = step_m / size_m, step_e - size_e  # step / decay_steps, unrounded exponent
        if staircase:
            # Below 2**100 the floor is computed exactly; above, p is an
            # integer to float precision already.
            q, _ = floor_divmod(step, decay_steps)
            q_m, q_e = jnp.frexp(q)
            small = p_e <= 100
            p_m, p_e = jnp.where(small, q_m, p_m), jnp.where(small, q_e, p_e)
        return _inverse_time(as_float(init_value), as_float(decay_rate), p_m, p_e)

    return schedule
