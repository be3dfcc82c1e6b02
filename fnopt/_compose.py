"""Schedules built from schedules: warmup, join (torch ``SequentialLR``) and
multiply (the closed form of torch ``ChainedScheduler``)."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from ._checks import as_float, check_nonnegative, check_schedule, concrete, is_traced
from ._decay import ArrayLike, Schedule, as_step, constant, linear_anneal, phase_position


def as_schedule(call: str, name: str, value) -> Schedule:
    """A callable is a schedule; a number is a constant schedule."""
    check_schedule(call, name, value)
    return value if callable(value) else constant(value)


def warmup(schedule: Schedule | ArrayLike, warmup_steps: ArrayLike, start_value: ArrayLike = 0.0) -> Schedule:
    """Linear warmup from ``start_value`` to ``schedule(0)``, then ``schedule``.

    For ``step < warmup_steps`` the value is
    ``start_value + (schedule(0) - start_value) * step / warmup_steps``; after
    that it is ``schedule(step - warmup_steps)``: the wrapped schedule starts
    its own count when the warmup ends, and the join is continuous.

    Args:
        schedule: the schedule to warm up into (or a constant).
        warmup_steps: length of the warmup, >= 0 (0 means no warmup).
        start_value: value at step 0.

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.warmup(schedules.cosine_decay(1.0, 100), warmup_steps=10)
        >>> [round(float(s(t)), 3) for t in (0, 5, 10, 60)]
        [0.0, 0.5, 1.0, 0.5]
    """
    inner = as_schedule("warmup", "schedule", schedule)
    check_nonnegative("warmup", "warmup_steps", warmup_steps)
    concrete("warmup", "start_value", start_value)

    def warmed(step):
        t = as_step(step)
        length = as_float(warmup_steps)
        target = inner(jnp.zeros_like(t))
        # start * r + target * p, not start + (target - start) * p: the
        # difference overflows for start = -3e38, target = 3e38.
        ramp = linear_anneal(as_float(start_value), target, *phase_position(t, jnp.zeros_like(length), length))
        return jnp.where(t < length, ramp, inner(jnp.maximum(t - length, 0.0)))

    return warmed


def join(schedules: Sequence[Schedule | ArrayLike], boundaries: Sequence[ArrayLike]) -> Schedule:
    """Schedules one after another: torch ``SequentialLR``.

    ``schedules[i]`` is in force from ``boundaries[i - 1]`` (0 for the first)
    until ``boundaries[i]``, and sees the steps counted from its own start.
    A step equal to a boundary belongs to the later schedule. Boundaries may be
    traced.

    Args:
        schedules: ``k`` schedules (or constants).
        boundaries: ``k - 1`` non-decreasing steps, >= 0.

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.join([schedules.linear(0.0, 1.0, 5), schedules.constant(1.0)], [5])
        >>> [float(s(t)) for t in (0, 5, 9)]
        [0.0, 1.0, 1.0]
    """
    for name, value in (("schedules", schedules), ("boundaries", boundaries)):
        if isinstance(value, (str, bytes)) or not (hasattr(value, "shape") or hasattr(value, "__iter__")):
            raise ValueError(f"`join({name}=...)` must be a sequence, got {value!r}")
    schedules = list(schedules)
    boundaries = list(boundaries) if not hasattr(boundaries, "shape") else boundaries
    if not schedules:
        raise ValueError("`join(schedules=...)` must contain at least one schedule, got []")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"`join(boundaries=...)` must have len(schedules) - 1 = {len(schedules) - 1} "
            f"entries, got {len(boundaries)}"
        )
    parts = [as_schedule("join", f"schedules[{i}]", s) for i, s in enumerate(schedules)]
    check_nonnegative("join", "boundaries", boundaries)
    if not is_traced(boundaries) and len(boundaries) > 1:
        marks = concrete("join", "boundaries", boundaries)
        if marks is not None and (marks[1:] < marks[:-1]).any():
            raise ValueError(f"`join(boundaries=...)` must be non-decreasing, got {list(marks)}")
    marks_arr = jnp.stack([as_float(b) for b in boundaries]) if len(boundaries) else None

    def joined(step):
        t = as_step(step)
        value = parts[0](t)
        for i in range(1, len(parts)):
            start = marks_arr[i - 1]
            value = jnp.where(t >= start, parts[i](jnp.maximum(t - start, 0.0)), value)
        return value

    return joined


def multiply(*schedules: Schedule | ArrayLike) -> Schedule:
    """The product of several schedules (or constants) at every step.

    The closed form of torch ``ChainedScheduler`` for multiplicative
    schedulers: e.g. ``multiply(cosine_decay(1.0, T), cyclic(0.5, 1.0, ...))``
    modulates a cyclic wave by a cosine envelope.

    Examples:
        >>> from fnopt import schedules
        >>> s = schedules.multiply(0.1, schedules.exponential_decay(1.0, 0.5))
        >>> round(float(s(2)), 4)
        0.025
    """
    if not schedules:
        raise ValueError("`multiply(*schedules)` needs at least one schedule")
    parts = [as_schedule("multiply", f"schedules[{i}]", s) for i, s in enumerate(schedules)]

    def product(step):
        value = parts[0](step)
        for part in parts[1:]:
            value = value * part(step)
        return value

    return product
