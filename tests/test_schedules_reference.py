"""Every schedule factory against a float64 NumPy reference.

The references below are written from the published formulas (PyTorch's
``lr_scheduler`` docs and source, fastai's ``SchedCos``/``combine_scheds``,
Loshchilov & Hutter's SGDR, Hugging Face transformers' ``optimization.py``
lambdas for WSD and inverse-sqrt, Keras' ``PolynomialDecay`` and
``InverseTimeDecay``, Optax's ``cosine_decay_schedule(exponent=)`` and
``exponential_decay(end_value=)``), independently of fnopt's implementation: SGDR
periods are found by walking the periods with exact rational arithmetic,
one-cycle is a transcription of torch ``OneCycleLR``'s phase table, CyclicLR
of torch's ``cycle``/``x`` formula. Each schedule is compared over thousands
of integer and fractional steps, past its end as well (fnopt holds the final
value there). Fractional steps are first rounded to the default float dtype,
so the reference sees exactly the step fnopt sees.

``FNOPT_REF_ERRORS=path`` writes the largest relative error seen per factory
to ``path`` (JSON).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import zlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnopt import schedules

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32
RTOL = 1e-11 if X64 else 1e-5
ATOL = 1e-15 if X64 else 1e-9  # times the largest |value| of the trace

# Per factory: the largest relative error where |value| >= 1e-4 * scale, and
# the largest absolute error / scale anywhere (beyond the step sensitivity).
MAX_REL_ERR: dict[str, float] = {}
MAX_ABS_ERR: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_errors():
    yield
    path = os.environ.get("FNOPT_REF_ERRORS")
    if path:
        with open(path, "w") as f:
            json.dump({"x64": X64, "max_rel_err": MAX_REL_ERR, "max_abs_err": MAX_ABS_ERR}, f, indent=1, sort_keys=True)


# ------------------------------------------------------------------ references
# Each ``ref_*`` returns a function of a float64 step array.


def ref_constant(value):
    return lambda t: np.full(np.shape(t), float(value))


def ref_step_decay(init, step_size, gamma=0.1):
    return lambda t: init * gamma ** np.floor(t / step_size)


def ref_multistep(init, milestones, gamma=0.1):
    def f(t):
        count = sum((t >= m).astype(np.float64) for m in milestones)
        return init * gamma**count

    return f


def ref_exponential(init, gamma, low=None):
    """torch ``ExponentialLR``; with ``low``, Optax's ``end_value`` floor
    (``decay_rate < 1``: ``max``)."""
    if low is None:
        return lambda t: init * gamma**t
    return lambda t: np.maximum(init * gamma**t, low)


def ref_polynomial(init, total, power=1.0, end=0.0, cycle=False):
    """torch ``PolynomialLR`` / Keras ``PolynomialDecay``: with ``cycle`` the
    decay length is ``total * ceil(t / total)``, ``total`` at ``t = 0``."""
    if not cycle:
        return lambda t: end + (init - end) * (1.0 - np.minimum(t, total) / total) ** power

    def f(t):
        multiplier = np.where(t == 0, 1.0, np.ceil(t / total))
        return (init - end) * (1.0 - t / (total * multiplier)) ** power + end

    return f


def ref_linear(start, end, total):
    return lambda t: start + (end - start) * np.minimum(t, total) / total


def ref_cosine(init, total, low=0.0, exponent=1.0):
    """torch ``CosineAnnealingLR``; Optax ``cosine_decay_schedule`` with
    ``alpha = low / init`` and ``exponent``."""
    def f(t):
        factor = (1.0 + np.cos(np.pi * np.minimum(t, total) / total)) / 2.0
        return low + (init - low) * factor**exponent

    return f


def sgdr_position(t, first_period, mult):
    """(t_cur, period) by walking the periods T0, T0*m, T0*m^2, ... exactly
    (equal periods: exact rational floor division)."""
    t0, m = Fraction(first_period), Fraction(mult)
    exact = [Fraction(float(x)) for x in np.ravel(t)]
    if m == 1:
        t_cur = [float(x - (x // t0) * t0) for x in exact]
        return np.reshape(t_cur, np.shape(t)), np.full(np.shape(t), float(t0))
    starts, periods = [Fraction(0)], [t0]
    while starts[-1] + periods[-1] <= max(exact):
        starts.append(starts[-1] + periods[-1])
        periods.append(periods[-1] * m)
    t_cur, period = [], []
    for x in exact:
        i = bisect.bisect_right(starts, x) - 1
        t_cur.append(float(x - starts[i]))
        period.append(float(periods[i]))
    return np.reshape(t_cur, np.shape(t)), np.reshape(period, np.shape(t))


def ref_sgdr(init, first_period, mult=1, low=0.0):
    def f(t):
        t_cur, period = sgdr_position(t, first_period, mult)
        return low + (init - low) * (1.0 + np.cos(np.pi * t_cur / period)) / 2.0

    return f


def ref_sawtooth(init, first_period, mult=1, low=0.0):
    def f(t):
        t_cur, period = sgdr_position(t, first_period, mult)
        return low + (init - low) * (1.0 - t_cur / period)

    return f


def torch_cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def torch_linear(start, end, pct):
    return (end - start) * pct + start


def one_cycle_table(phases, total, anneal):
    """torch ``OneCycleLR.get_lr``: ``phases`` = [(end_step, start, end)];
    steps from ``total - 1`` on hold the final value (fnopt's choice)."""
    fn = {"cos": torch_cos, "linear": torch_linear}[anneal]

    def value(step):
        step = min(step, total - 1)
        start_step = 0.0
        for i, (end_step, a, b) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                return fn(a, b, (step - start_step) / (end_step - start_step))
            start_step = end_step
        raise AssertionError

    return lambda t: np.vectorize(value, otypes=[np.float64])(t)


def ref_one_cycle(max_lr, total, pct=0.3, anneal="cos", div=25.0, final_div=1e4, three_phase=False):
    initial = max_lr / div
    low = initial / final_div
    if three_phase:
        phases = [
            (pct * total - 1, initial, max_lr),
            (2 * pct * total - 2, max_lr, initial),
            (total - 1, initial, low),
        ]
    else:
        phases = [(pct * total - 1, initial, max_lr), (total - 1, max_lr, low)]
    return one_cycle_table(phases, total, anneal)


def ref_one_cycle_momentum(total, pct=0.3, base=0.85, high=0.95, anneal="cos", three_phase=False):
    if three_phase:
        phases = [(pct * total - 1, high, base), (2 * pct * total - 2, base, high), (total - 1, high, high)]
    else:
        phases = [(pct * total - 1, high, base), (total - 1, base, high)]
    return one_cycle_table(phases, total, anneal)


def cyclic_scale(t, up, down, mode, gamma):
    """torch ``CyclicLR.get_lr``'s ``scale_factor * scale_fn``."""
    total = float(up + down)
    ratio = up / total
    cycle = np.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    if ratio == 1.0:
        factor = x / ratio
    else:
        factor = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    if mode == "triangular":
        return factor
    if mode == "triangular2":
        return factor / 2.0 ** (cycle - 1)
    return factor * gamma**t


def ref_cyclic(base, high, up=2000, down=None, mode="triangular", gamma=1.0):
    down = up if down is None else down
    return lambda t: base + (high - base) * cyclic_scale(t, up, down, mode, gamma)


def ref_cyclic_momentum(base, high, up=2000, down=None, mode="triangular", gamma=1.0):
    down = up if down is None else down
    return lambda t: high - (high - base) * cyclic_scale(t, up, down, mode, gamma)


def ref_combined_cos(total, pct, start, peak, end):
    """fastai: ``combine_scheds([pct, 1 - pct], [SchedCos(start, peak),
    SchedCos(peak, end)])`` at ``pos = t / total`` (held at 1)."""
    pcts = [0.0, pct, 1.0]
    scheds = [(start, peak), (peak, end)]

    def value(pos):
        idx = min(max(i for i, p in enumerate(pcts) if pos >= p), len(pcts) - 2)
        actual = (pos - pcts[idx]) / (pcts[idx + 1] - pcts[idx])
        a, b = scheds[idx]
        return a + (1 + math.cos(math.pi * (1 - actual))) * (b - a) / 2

    return lambda t: np.vectorize(value, otypes=[np.float64])(np.minimum(t / total, 1.0))


def ref_warmup(inner, steps, start=0.0):
    def f(t):
        target = inner(np.zeros(1))[0]
        ramp = start + (target - start) * t / steps if steps > 0 else 0.0 * t
        return np.where(t < steps, ramp, inner(np.maximum(t - steps, 0.0)))

    return f


def ref_join(parts, boundaries):
    def f(t):
        out = parts[0](t)
        for b, part in zip(boundaries, parts[1:]):
            out = np.where(t >= b, part(np.maximum(t - b, 0.0)), out)
        return out

    return f


def ref_multiply(*parts):
    def f(t):
        out = np.ones(np.shape(t))
        for part in parts:
            out = out * part(t)
        return out

    return f


def ref_exponential_range(start, end, num):
    return lambda t: start * (end / start) ** (np.minimum(t, num) / num)


def ref_wsd(peak, total, warmup, decay, warmup_shape="linear", decay_shape="1-sqrt", low=0.0):
    """transformers ``get_wsd_schedule(num_warmup_steps=warmup,
    num_decay_steps=decay, num_training_steps=total, warmup_type, decay_type,
    min_lr_ratio=low / peak)`` (``num_cycles=0.5``): ``_get_wsd_scheduler_lambda``
    transcribed, times ``peak``."""
    ratio = low / peak
    stable = total - warmup - decay  # num_stable_steps as get_wsd_schedule derives it

    def lr_lambda(step):
        if step < warmup:
            progress = float(step) / float(max(1, warmup))
            factor = {
                "linear": progress,
                "cosine": 0.5 * (1.0 - math.cos(math.pi * progress)),
                "1-sqrt": 1.0 - math.sqrt(1.0 - progress),
            }[warmup_shape]
            return max(0.0, factor * (1.0 - ratio) + ratio)
        if step < warmup + stable:
            return 1.0
        if step < warmup + stable + decay:
            progress = float(step - warmup - stable) / float(max(1, decay))
            factor = {
                "linear": 1.0 - progress,
                "cosine": 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)),
                "1-sqrt": 1.0 - math.sqrt(progress),
            }[decay_shape]
            return max(0.0, factor * (1.0 - ratio) + ratio)
        return ratio

    return lambda t: peak * np.vectorize(lr_lambda, otypes=[np.float64])(t)


def ref_swalr(lr, swa_lr, anneal_epochs, strategy):
    """torch ``SWALR.get_lr`` transcribed: the recursion on the current LR,
    from the optimizer's LR ``lr`` at construction (step 0), at integer
    steps; at a fractional step, ``get_lr`` with that step and the starting
    LR recovered exactly (torch has no fractional steps)."""
    f = (lambda x: (1 - math.cos(math.pi * x)) / 2) if strategy == "cos" else (lambda x: x)

    def get_lr(count, current, recover=True):
        step = max(1, count) if anneal_epochs == 0 else count  # _step_count - 1
        prev_alpha = f(max(0, min(1, (step - 1) / max(1, anneal_epochs))))
        initial = swa_lr if prev_alpha == 1 else (current - prev_alpha * swa_lr) / (1 - prev_alpha)
        alpha = f(max(0, min(1, step / max(1, anneal_epochs))))
        return swa_lr * alpha + (initial if recover else lr) * (1 - alpha)

    def values(n):
        out, current = [], lr
        for count in range(n):
            current = get_lr(count, current)
            out.append(current)
        return np.asarray(out)

    def ref(t):
        t = np.asarray(t, np.float64)
        whole = values(int(np.max(t)) + 1)
        return np.where(t == np.floor(t), whole[np.floor(t).astype(np.int64)],
                        np.vectorize(lambda s: get_lr(s, lr, recover=False))(t))

    return ref


def ref_inverse_sqrt(peak, warmup, timescale=None):
    """transformers ``get_inverse_sqrt_schedule`` (its lambda transcribed)
    times ``peak``."""
    if timescale is None:
        timescale = warmup or 10_000

    def lr_lambda(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        shift = timescale - warmup
        return 1.0 / math.sqrt((step + shift) / timescale)

    return lambda t: peak * np.vectorize(lr_lambda, otypes=[np.float64])(t)


def ref_inverse_time(init, decay_steps, rate, staircase=False):
    """Keras ``InverseTimeDecay``: ``init / (1 + rate * p)``, ``p = t /
    decay_steps`` (floored with ``staircase``)."""
    def f(t):
        p = t / decay_steps
        if staircase:
            p = np.floor(p)
        return init / (1.0 + rate * p)

    return f


# ------------------------------------------------------------------ cases


def f32(x):
    """A fractional period rounded to float32, given to both fnopt and the
    reference. Restarts fall at multiples of the period, so the rounding of,
    say, 1.3 would move every later restart by ~t*eps; with a float32 value
    both dtypes hold the period exactly and only the schedule's own rounding
    is measured."""
    return float(np.float32(x))


# (factory name, fnopt schedule, reference, steps to cover)

S = schedules
CASES = [
    ("constant", S.constant(0.3), ref_constant(0.3), 3000),
    ("step_decay", S.step_decay(1.0, 30), ref_step_decay(1.0, 30), 3000),
    ("step_decay", S.step_decay(0.5, 7, gamma=0.9), ref_step_decay(0.5, 7, 0.9), 3000),
    ("step_decay", S.step_decay(2.0, 2.5, gamma=0.97), ref_step_decay(2.0, 2.5, 0.97), 3000),
    ("multistep_decay", S.multistep_decay(1.0, [300, 800, 800, 2000]), ref_multistep(1.0, [300, 800, 800, 2000]), 3000),
    ("multistep_decay", S.multistep_decay(0.1, [2500, 10, 1000], 0.5), ref_multistep(0.1, [2500, 10, 1000], 0.5), 3000),
    ("multistep_decay", S.multistep_decay(0.1, [10.5, 99.25], 0.3), ref_multistep(0.1, [10.5, 99.25], 0.3), 3000),
    ("exponential_decay", S.exponential_decay(1.0, 0.999), ref_exponential(1.0, 0.999), 5000),
    ("exponential_decay", S.exponential_decay(3e-3, 0.99), ref_exponential(3e-3, 0.99), 5000),
    ("exponential_decay", S.exponential_decay(0.1, 1.0), ref_exponential(0.1, 1.0), 5000),
    ("exponential_decay", S.exponential_decay(1.0, 0.999, 0.02), ref_exponential(1.0, 0.999, 0.02), 5000),
    ("polynomial_decay", S.polynomial_decay(1.0, 4000), ref_polynomial(1.0, 4000), 5000),
    ("polynomial_decay", S.polynomial_decay(0.1, 1000, power=2.0), ref_polynomial(0.1, 1000, 2.0), 3000),
    ("polynomial_decay", S.polynomial_decay(0.1, 999.5, 0.5, 1e-3), ref_polynomial(0.1, 999.5, 0.5, 1e-3), 3000),
    ("polynomial_decay", S.polynomial_decay(1.0, 300, 1.0, 1e-4, cycle=True),
     ref_polynomial(1.0, 300, 1.0, 1e-4, cycle=True), 3000),
    ("polynomial_decay", S.polynomial_decay(0.1, 250.5, 2.0, 0.0, cycle=True),
     ref_polynomial(0.1, 250.5, 2.0, 0.0, cycle=True), 3000),
    ("linear", S.linear(1.0, 0.01, 3000), ref_linear(1.0, 0.01, 3000), 4000),
    ("linear", S.linear(0.0, 0.5, 1000), ref_linear(0.0, 0.5, 1000), 3000),
    ("linear", S.linear(0.3, 0.3, 10), ref_linear(0.3, 0.3, 10), 3000),
    ("linear", S.linear(1e-3, 1.0, 2000), ref_linear(1e-3, 1.0, 2000), 3000),
    ("cosine_decay", S.cosine_decay(1.0, 4000), ref_cosine(1.0, 4000), 5000),
    ("cosine_decay", S.cosine_decay(0.1, 1000, 1e-3), ref_cosine(0.1, 1000, 1e-3), 3000),
    ("cosine_decay", S.cosine_decay(0.1, 777.7), ref_cosine(0.1, 777.7), 3000),
    ("cosine_decay", S.cosine_decay(1.0, 1000, 0.1, exponent=2.0), ref_cosine(1.0, 1000, 0.1, 2.0), 3000),
    ("cosine_decay", S.cosine_decay(0.1, 1000, 0.0, exponent=0.5), ref_cosine(0.1, 1000, 0.0, 0.5), 3000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(1.0, 100), ref_sgdr(1.0, 100), 5000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(0.1, 10, 2, 1e-4), ref_sgdr(0.1, 10, 2, 1e-4), 5000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(1.0, 1, 3), ref_sgdr(1.0, 1, 3), 5000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(1.0, 0.5, 1.5), ref_sgdr(1.0, 0.5, 1.5), 5000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(1.0, 7, 1.25), ref_sgdr(1.0, 7, 1.25), 5000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(1.0, f32(0.7), f32(1.1), 0.1),
     ref_sgdr(1.0, f32(0.7), f32(1.1), 0.1), 5000),
    ("cosine_warm_restarts", S.cosine_warm_restarts(0.2, f32(1.3)), ref_sgdr(0.2, f32(1.3)), 3000),
    ("linear_warm_restarts", S.linear_warm_restarts(1.0, 50), ref_sawtooth(1.0, 50), 5000),
    ("linear_warm_restarts", S.linear_warm_restarts(0.1, 3, 2, 1e-3), ref_sawtooth(0.1, 3, 2, 1e-3), 5000),
    ("linear_warm_restarts", S.linear_warm_restarts(1.0, 0.5, 1.5), ref_sawtooth(1.0, 0.5, 1.5), 5000),
    ("one_cycle", S.one_cycle(1.0, 5000), ref_one_cycle(1.0, 5000), 6000),
    ("one_cycle", S.one_cycle(0.1, 3000, 0.25, div_factor=10, final_div_factor=100),
     ref_one_cycle(0.1, 3000, 0.25, div=10, final_div=100), 4000),
    ("one_cycle", S.one_cycle(0.1, 3000, 0.4, anneal="linear"), ref_one_cycle(0.1, 3000, 0.4, "linear"), 4000),
    ("one_cycle", S.one_cycle(1.0, 4000, 0.3, three_phase=True), ref_one_cycle(1.0, 4000, 0.3, three_phase=True), 5000),
    ("one_cycle", S.one_cycle(2.0, 2000, 0.45, "linear", 5.0, 50.0, True),
     ref_one_cycle(2.0, 2000, 0.45, "linear", 5.0, 50.0, True), 3000),
    ("one_cycle", S.one_cycle(1.0, 3, 0.25), ref_one_cycle(1.0, 3, 0.25), 20),
    ("one_cycle", S.one_cycle(1.0, 5000, 0.2, div_factor=1e4, final_div_factor=10),
     ref_one_cycle(1.0, 5000, 0.2, div=1e4, final_div=10), 6000),
    ("one_cycle_momentum", S.one_cycle_momentum(5000), ref_one_cycle_momentum(5000), 6000),
    ("one_cycle_momentum", S.one_cycle_momentum(3000, 0.25, 0.8, 0.99, "linear"),
     ref_one_cycle_momentum(3000, 0.25, 0.8, 0.99, "linear"), 4000),
    ("one_cycle_momentum", S.one_cycle_momentum(4000, 0.3, three_phase=True),
     ref_one_cycle_momentum(4000, 0.3, three_phase=True), 5000),
    ("cyclic", S.cyclic(1e-3, 1e-2, 200), ref_cyclic(1e-3, 1e-2, 200), 5000),
    ("cyclic", S.cyclic(0.1, 1.0, 150, 350, "triangular2"), ref_cyclic(0.1, 1.0, 150, 350, "triangular2"), 5000),
    ("cyclic", S.cyclic(0.1, 1.0, 100, 40, "exp_range", 0.9995), ref_cyclic(0.1, 1.0, 100, 40, "exp_range", 0.9995), 5000),
    ("cyclic", S.cyclic(0.1, 1.0, 60, 0), ref_cyclic(0.1, 1.0, 60, 0), 3000),
    ("cyclic_momentum", S.cyclic_momentum(0.8, 0.9, 200), ref_cyclic_momentum(0.8, 0.9, 200), 5000),
    ("cyclic_momentum", S.cyclic_momentum(0.8, 0.9, 150, 350, "triangular2"),
     ref_cyclic_momentum(0.8, 0.9, 150, 350, "triangular2"), 5000),
    ("cyclic_momentum", S.cyclic_momentum(0.8, 0.9, 100, 40, "exp_range", 0.999),
     ref_cyclic_momentum(0.8, 0.9, 100, 40, "exp_range", 0.999), 5000),
    ("combined_cos", S.combined_cos(4000, 0.25, 0.04, 1.0, 1e-5), ref_combined_cos(4000, 0.25, 0.04, 1.0, 1e-5), 5000),
    ("combined_cos", S.combined_cos(3000, 0.25, 0.95, 0.85, 0.95), ref_combined_cos(3000, 0.25, 0.95, 0.85, 0.95), 4000),
    ("combined_cos", S.combined_cos(1001, 0.3, 0.0, 1.0, 0.5), ref_combined_cos(1001, 0.3, 0.0, 1.0, 0.5), 3000),
    ("combined_cos", S.combined_cos(500, 0.0, 0.2, 1.0, 0.1), ref_combined_cos(500, 0.0, 0.2, 1.0, 0.1), 3000),
    ("warmup", S.warmup(S.cosine_decay(1.0, 3000), 500), ref_warmup(ref_cosine(1.0, 3000), 500), 4000),
    ("warmup", S.warmup(S.exponential_decay(0.1, 0.999), 100.5, 0.01),
     ref_warmup(ref_exponential(0.1, 0.999), 100.5, 0.01), 4000),
    ("warmup", S.warmup(0.3, 200), ref_warmup(ref_constant(0.3), 200), 3000),
    ("warmup", S.warmup(S.constant(0.3), 0), ref_warmup(ref_constant(0.3), 0), 3000),
    ("join", S.join([S.linear(0.0, 1.0, 100), S.cosine_decay(1.0, 2000)], [100]),
     ref_join([ref_linear(0.0, 1.0, 100), ref_cosine(1.0, 2000)], [100]), 3000),
    ("join", S.join([S.constant(0.1), S.exponential_decay(1.0, 0.999), S.cosine_warm_restarts(0.5, 100, 2)], [50, 1500]),
     ref_join([ref_constant(0.1), ref_exponential(1.0, 0.999), ref_sgdr(0.5, 100, 2)], [50, 1500]), 5000),
    ("join", S.join([S.step_decay(1.0, 10), 0.5, S.linear(0.5, 0.0, 100)], [30.5, 30.5]),
     ref_join([ref_step_decay(1.0, 10), ref_constant(0.5), ref_linear(0.5, 0.0, 100)], [30.5, 30.5]), 3000),
    ("multiply", S.multiply(S.cosine_decay(1.0, 4000), S.cyclic(0.5, 1.0, 100)),
     ref_multiply(ref_cosine(1.0, 4000), ref_cyclic(0.5, 1.0, 100)), 5000),
    ("multiply", S.multiply(0.1, S.exponential_decay(1.0, 0.999), S.step_decay(1.0, 1000, 0.5)),
     ref_multiply(ref_constant(0.1), ref_exponential(1.0, 0.999), ref_step_decay(1.0, 1000, 0.5)), 5000),
    ("exponential_range", S.exponential_range(1e-7, 10.0, 3000), ref_exponential_range(1e-7, 10.0, 3000), 4000),
    ("exponential_range", S.exponential_range(1.0, 1e-3, 777), ref_exponential_range(1.0, 1e-3, 777), 3000),
    ("warmup_stable_decay", S.warmup_stable_decay(1.0, 3000, 300, 600), ref_wsd(1.0, 3000, 300, 600), 4000),
    *[
        ("warmup_stable_decay",
         S.warmup_stable_decay(3e-3, 2000, 150, 500, warmup_shape=w, decay_shape=d, min_value=3e-5),
         ref_wsd(3e-3, 2000, 150, 500, w, d, 3e-5), 3000)
        for w in ("linear", "cosine", "1-sqrt") for d in ("linear", "cosine", "1-sqrt")
    ],
    ("warmup_stable_decay", S.warmup_stable_decay(0.5, 1000, 0, 1000, decay_shape="cosine"),
     ref_wsd(0.5, 1000, 0, 1000, "linear", "cosine"), 2000),
    ("warmup_stable_decay", S.warmup_stable_decay(0.5, 1000, 100, 0), ref_wsd(0.5, 1000, 100, 0), 2000),
    ("warmup_stable_decay", S.warmup_stable_decay(1.0, 1000, 400, 600, warmup_shape="1-sqrt", min_value=0.1),
     ref_wsd(1.0, 1000, 400, 600, "1-sqrt", "1-sqrt", 0.1), 2000),
    ("inverse_sqrt", S.inverse_sqrt(1.0, 400), ref_inverse_sqrt(1.0, 400), 5000),
    ("inverse_sqrt", S.inverse_sqrt(1e-3, 0), ref_inverse_sqrt(1e-3, 0), 5000),
    ("inverse_sqrt", S.inverse_sqrt(0.1, 250, 1000), ref_inverse_sqrt(0.1, 250, 1000), 5000),
    ("inverse_sqrt", S.inverse_sqrt(0.1, 100, 7.5), ref_inverse_sqrt(0.1, 100, 7.5), 3000),
    ("inverse_time_decay", S.inverse_time_decay(0.1, 1.0, 0.5), ref_inverse_time(0.1, 1.0, 0.5), 3000),
    ("inverse_time_decay", S.inverse_time_decay(1.0, 100, 2.0, staircase=True),
     ref_inverse_time(1.0, 100, 2.0, True), 3000),
    ("inverse_time_decay", S.inverse_time_decay(1.0, 33.25, 0.1), ref_inverse_time(1.0, 33.25, 0.1), 3000),
    ("inverse_time_decay", S.inverse_time_decay(3.0, 7.5, 1.5, staircase=True), ref_inverse_time(3.0, 7.5, 1.5, True), 3000),
    ("inverse_time_decay", S.inverse_time_decay(1.0, 10, 0.0), ref_inverse_time(1.0, 10, 0.0), 3000),
]
CASES += [
    ("swa", S.swa(0.1, 0.01, 40), ref_swalr(0.1, 0.01, 40, "cos"), 100),
    ("swa", S.swa(0.3, 0.05, 7, "linear"), ref_swalr(0.3, 0.05, 7, "linear"), 50),
    ("swa", S.swa(0.1, 0.02, 0), ref_swalr(0.1, 0.02, 0, "cos"), 20),
    ("swa", S.swa(0.01, 0.5, 1, "linear"), ref_swalr(0.01, 0.5, 1, "linear"), 20),
]
IDS = [f"{name}-{i}" for i, (name, *_rest) in enumerate(CASES)]


def int_steps(n):
    return np.arange(n, dtype=np.int32)


def frac_steps(n, seed):
    """Random fractional steps in [0, n) plus all quarter steps of [0, 50),
    rounded to the default float dtype."""
    rng = np.random.default_rng(seed)
    steps = np.concatenate([rng.uniform(0, n, 3000), np.arange(0, 50, 0.25)])
    return steps.astype(FLOAT)


def evaluate(sched, steps):
    """``sched(steps)`` as float64, padded to a fixed length so that the eager
    ops compile for a handful of shapes only."""
    n = len(steps)
    size = max(4096, 1 << (n - 1).bit_length())
    padded = np.concatenate([steps, np.zeros(size - n, steps.dtype)])
    return np.asarray(sched(jnp.asarray(padded)), dtype=np.float64)[:n]


def step_sensitivity(ref, t):
    """How far the reference moves when the step moves by 4 ulps: the
    precision of the step itself, and of a fractional period or rate, whose
    rounding error accumulates to ~t*eps after t steps. The smaller one-sided
    slope is used, so a jump right at ``t`` allows nothing."""
    h = 1e-7 * np.maximum(t, 1.0)
    v = ref(t)
    left = np.where(t >= h, np.abs(v - ref(np.maximum(t - h, 0.0))) / h, np.inf)
    right = np.abs(ref(t + h) - v) / h
    return 4 * np.finfo(FLOAT).eps * t * np.minimum(left, right)


def compare(name, sched, ref, steps, scale=None):
    """Asserts ``sched == ref`` at ``steps`` to RTOL, with an absolute floor of
    ATOL times ``scale`` (default: the largest |value| of the trace) plus the
    reference's own sensitivity to a rounding of the step."""
    got = evaluate(sched, steps)
    t = steps.astype(np.float64)
    want = ref(t)
    scale = scale or float(np.max(np.abs(want))) or 1.0
    err = np.abs(got - want) - step_sensitivity(ref, t)
    err_pos = np.maximum(err, 0.0)
    big = np.abs(want) >= 1e-4 * scale
    rel = float(np.max(err_pos[big] / np.abs(want[big]), initial=0.0))
    MAX_REL_ERR[name] = max(MAX_REL_ERR.get(name, 0.0), rel)
    MAX_ABS_ERR[name] = max(MAX_ABS_ERR.get(name, 0.0), float(np.max(err_pos)) / scale)
    bad = err > RTOL * np.abs(want) + ATOL * scale
    assert not bad.any(), (
        f"{name}: {bad.sum()} of {len(t)} steps off, e.g. step {t[bad][:3]}: "
        f"got {got[bad][:3]}, want {want[bad][:3]}"
    )


@pytest.mark.parametrize("name,sched,ref,n", CASES, ids=IDS)
def test_integer_steps(name, sched, ref, n):
    compare(name, sched, ref, int_steps(n))


@pytest.mark.parametrize("name,sched,ref,n", CASES, ids=IDS)
def test_fractional_steps(name, sched, ref, n):
    compare(name, sched, ref, frac_steps(n, seed=zlib.crc32(name.encode())))


def test_every_factory_is_covered():
    covered = {name for name, *_ in CASES}
    assert covered == set(schedules.__all__) - {"Schedule"}


# ------------------------------------------------------------------ SGDR boundaries


def sgdr_boundaries(first_period, mult, limit):
    """Restart steps below ``limit``, exactly (as Fractions): all of them for
    growing periods, the first and last hundred for equal periods."""
    t0, m = Fraction(first_period), Fraction(mult)
    if m == 1:
        last = int(limit / t0)
        return [k * t0 for k in [*range(1, 100), *range(last - 100, last)]]
    out, start, period = [], t0, t0 * m
    while start < limit:
        out.append(start)
        start, period = start + period, period * m
    return out


@pytest.mark.parametrize("first_period", [1, 2, 3, 0.5])
@pytest.mark.parametrize("mult", [1, 2, 3, 1.5])
@pytest.mark.parametrize("kind", ["cos", "linear"])
def test_sgdr_restart_boundaries(first_period, mult, kind):
    factory, ref = {
        "cos": (schedules.cosine_warm_restarts, ref_sgdr),
        "linear": (schedules.linear_warm_restarts, ref_sawtooth),
    }[kind]
    sched = factory(1.0, first_period, mult, 0.0)
    limit = 2**20 if X64 else 2**14  # boundaries exactly representable as steps
    bounds = [b for b in sgdr_boundaries(first_period, mult, limit) if float(FLOAT(b)) == b]
    assert len(bounds) >= 8
    at = np.array([float(b) for b in bounds], dtype=FLOAT)
    # The very step of each restart starts a new period: exactly init_value.
    np.testing.assert_array_equal(evaluate(sched, at), 1.0)
    integer = np.array([int(b) for b in bounds if b.denominator == 1], dtype=np.int32)
    np.testing.assert_array_equal(evaluate(sched, integer), 1.0)
    # Just before a restart the value is near the minimum, just after near init.
    before = np.nextafter(at, FLOAT(0))
    after = np.nextafter(at, FLOAT(np.inf))
    np.testing.assert_array_less(evaluate(sched, before), 1e-2)
    np.testing.assert_array_less(0.99, evaluate(sched, after))
    steps = np.concatenate([at, before, after, at - FLOAT(0.25), at + FLOAT(0.25), integer - 1])
    compare(factory.__name__, sched, ref(1.0, first_period, mult), steps.astype(FLOAT), scale=1.0)


def test_sgdr_step_121_is_a_restart():
    # Periods 1, 3, 9, 27, 81: restarts at 1, 4, 13, 40, 121. A rounded
    # log_3(121 * 2 / 1 + 1) = 5 - eps puts step 121 at the end of period 4.
    sched = schedules.cosine_warm_restarts(0.5, first_period=1, period_mult=3, min_value=0.01)
    for step in (121, 121.0, jnp.int32(121), jnp.asarray(121.0)):
        assert float(sched(step)) == pytest.approx(0.5, rel=1e-7)
    assert float(sched(120)) == pytest.approx(ref_sgdr(0.5, 1, 3, 0.01)(np.array([120.0]))[0], rel=RTOL)
    assert float(sched(120.5)) == pytest.approx(ref_sgdr(0.5, 1, 3, 0.01)(np.array([120.5]))[0], rel=RTOL)


# ------------------------------------------------------------------ one-cycle past the end


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("total", [1, 2, 10, 1000, 10**6])
def test_one_cycle_holds_its_final_value(anneal, three_phase, total):
    """From ``total_steps - 1`` on: the final value, never negative, never an
    error, at int and float steps up to 2**31 - 1 (torch extrapolates one
    step, then raises)."""
    lr = schedules.one_cycle(0.5, total, 0.3, anneal, three_phase=three_phase)
    mom = schedules.one_cycle_momentum(total, 0.3, 0.85, 0.95, anneal, three_phase)
    final = ref_one_cycle(0.5, total, 0.3, anneal, three_phase=three_phase)(np.array([total - 1.0]))[0]
    after = np.array([total - 1, total, total + 1, 2 * total, 10**7, 2**31 - 2, 2**31 - 1])
    for steps in (after.astype(np.int32), after.astype(FLOAT), after.astype(FLOAT) + FLOAT(0.5)):
        got = evaluate(lr, steps)
        assert np.all(got > 0)
        np.testing.assert_allclose(got, final, rtol=RTOL)
        np.testing.assert_allclose(evaluate(mom, steps), 0.95, rtol=RTOL)
    assert float(lr(2**31 - 1)) == float(lr(total - 1)) > 0
