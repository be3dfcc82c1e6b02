"""Extreme but valid schedule settings never give NaN (issue 11, item 8).

Every schedule whose exact value is finite and representable returns it,
finite, for every step in ``[0, 2**31)``: the settings reported in the issue
against float64 references (SGDR with a period of ``1e-30`` or a growth of
``3e38``, a cyclic step of ``2e38``, an exponential range over 40 decades,
``lr_find(end_lr=3e38)``), then every factory fuzzed with hypothesis over
periods, multipliers, rates and values from the smallest normal float to
the largest, checked to be finite and between the values its
hyperparameters imply.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sweeps
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_schedules_reference import (
    ref_cosine,
    ref_cyclic,
    ref_exponential_range,
    ref_inverse_time,
    ref_linear,
    ref_polynomial,
    ref_sgdr,
    ref_step_decay,
    ref_wsd,
)

import fnopt
from fnopt import schedules as S

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32
INFO = np.finfo(FLOAT)
WIDTH = 64 if X64 else 32
INT32_MAX = 2**31 - 1
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
STEPS = np.array([0, 1, 2, 7, 1000, 123456, 2**24 + 1, 987654321, INT32_MAX - 1, INT32_MAX])


def f(x):
    return float(FLOAT(x))


def evaluate(sched, steps):
    """At int32 steps and at the same steps plus a half, as float64."""
    ints = np.asarray(sched(jnp.asarray(steps, jnp.int32)), np.float64)
    halves = np.asarray(sched(jnp.asarray(np.asarray(steps, np.float64) + 0.5, FLOAT)), np.float64)
    return ints, halves


# ------------------------------------------------------------------ the reported settings


def near(got, want, rtol=1e-5):
    """Relative error, with the rounding of the step itself allowed for where
    the reference moves fast."""
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.max(np.abs(want)))


@pytest.mark.parametrize(
    "first_period,mult",
    [(1e-30, 1), (1e-30, 2), (10, 3e38), (1e-30, 3e38), (1e-30, 1.5), (3e38, 2), (7, 1e20)],
)
def test_sgdr_extremes_against_exact_periods(first_period, mult):
    t0, m = f(first_period), f(mult)
    for factory in (S.cosine_warm_restarts, S.linear_warm_restarts):
        sched = factory(1.0, t0, m, 0.1)
        ints, halves = evaluate(sched, STEPS)
        assert np.all(np.isfinite(ints)) and np.all(np.isfinite(halves))
        assert np.all((ints >= 0.1 - 1e-6) & (ints <= 1.0 + 1e-6))
    sched = S.cosine_warm_restarts(1.0, t0, m, 0.1)
    ref = ref_sgdr(1.0, t0, m, 0.1)
    if t0 >= 1e-3:  # with a tiny period the value at a step is ill-conditioned in the step
        near(evaluate(sched, STEPS)[0], ref(STEPS.astype(np.float64)))
    else:
        # The exact remainder of an exactly representable step still gives
        # the exact value at steps that float32 holds.
        small = STEPS[STEPS < 2**24]
        near(evaluate(sched, small)[0], ref(small.astype(np.float64)), rtol=1e-4)


@pytest.mark.parametrize("up,down", [(2e38, None), (2e38, 2e38), (3e38, 1.0), (1e-30, 1e-30), (1.0, 3e38)])
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_extremes(up, down, mode):
    sched = S.cyclic(0.1, 1.0, f(up), None if down is None else f(down), mode, 0.999)
    ints, halves = evaluate(sched, STEPS)
    assert np.all(np.isfinite(ints)) and np.all(np.isfinite(halves))
    assert np.all((ints >= 0.1 - 1e-6) & (ints <= 1.0 + 1e-6))
    # torch's ``1 + t / T - cycle`` cancels for a tiny period or a lopsided cycle.
    if up >= 1.0 and (down is None or down == up or min(up, down) >= 1e30):
        want = ref_cyclic(0.1, 1.0, f(up), None if down is None else f(down), mode, 0.999)(STEPS.astype(np.float64))
        near(ints, want)


@pytest.mark.parametrize("start,end", [(1e-20, 1e20), (1.2e-38, 3e38), (3e38, 1.2e-38), (1e-30, 1e-29)])
def test_exponential_range_over_many_decades(start, end):
    sched = S.exponential_range(start, end, 100)
    steps = np.arange(0, 120)
    ints, halves = evaluate(sched, steps)
    assert np.all(np.isfinite(ints)) and np.all(np.isfinite(halves))
    # exp() of a float32 log of up to 88: ~100 ulps.
    np.testing.assert_allclose(ints, ref_exponential_range(f(start), f(end), 100)(steps.astype(np.float64)), rtol=2e-5)
    assert float(sched(0)) == f(start) and float(sched(100)) == f(end) and float(sched(INT32_MAX)) == f(end)


def test_lr_find_sweeps_to_float32_max_without_nan():
    # A constant loss never diverges, so the whole sweep is recorded.
    result = fnopt.lr_find(
        lambda p, b: jnp.sum(p * 0.0) + b, jnp.zeros(2, jnp.float32), jnp.ones(40, jnp.float32),
        fnopt.sgd, start_lr=1e-7, end_lr=3e38, num_steps=40,
    )
    assert len(result.lrs) == 40 and np.all(np.isfinite(result.lrs)) and np.all(result.lrs > 0)
    np.testing.assert_allclose(result.lrs, ref_exponential_range(1e-7, f(3e38), 40)(np.arange(40.0)), rtol=2e-5)


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("init,size,rate", [(3e38, 1e-30, 1.0), (1.0, 1e-30, 1e-30), (3e38, 1e-30, 3e38), (1.0, 3e38, 3e38), (1e-30, 1.0, 0.0)])
def test_inverse_time_beyond_float32_in_the_denominator(init, size, rate, staircase):
    """``rate * step / decay_steps`` beyond float32's range, or 0 * inf: the
    exact value is still returned (0 only where it is below float32's range)."""
    sched = S.inverse_time_decay(init, size, rate, staircase=staircase)
    ints, _ = evaluate(sched, STEPS)
    want = ref_inverse_time(f(init), f(size), f(rate), staircase)(STEPS.astype(np.float64))
    want = np.where(np.abs(want) < INFO.tiny, 0.0, want)
    assert np.all(np.isfinite(ints))
    np.testing.assert_allclose(ints, want, rtol=1e-5, atol=INFO.tiny)


# ------------------------------------------------------------------ fuzzing every factory

TINY, BIG = float(INFO.tiny), float(INFO.max)


def magnitudes(lo=TINY, hi=BIG):
    """Positive floats over the whole normal range, ends included."""
    lo, hi = f(lo), f(hi)
    return st.one_of(st.sampled_from([lo, hi, 1.0]), st.floats(lo, hi, width=WIDTH))


def reals():
    """Any finite value, subnormals flushed to 0 as XLA on CPU does."""
    return st.floats(-BIG, BIG, width=WIDTH).map(lambda x: 0.0 if abs(x) < TINY else x)


counts = st.one_of(st.integers(1, INT32_MAX), magnitudes())
phases = st.one_of(st.just(0), counts)
units = st.floats(TINY, 1.0, width=WIDTH)
open_units = st.floats(TINY, 1.0, width=WIDTH, exclude_max=True)


def span(*values):
    return min(values), max(values)


@st.composite
def extreme_schedules(draw, name):
    """(schedule, low, high): a schedule at extreme valid settings and the
    bounds its values must stay in."""
    a, b, c = draw(reals()), draw(reals()), draw(reals())
    if name == "constant":
        return S.constant(a), a, a
    if name == "step_decay":
        return S.step_decay(a, draw(counts), draw(units)), *span(a, 0.0)
    if name == "multistep_decay":
        marks = draw(st.lists(st.one_of(st.integers(0, INT32_MAX), magnitudes()), max_size=4))
        return S.multistep_decay(a, marks, draw(units)), *span(a, 0.0)
    if name == "exponential_decay":
        return S.exponential_decay(a, draw(units), b), *span(a, b, 0.0)
    if name == "polynomial_decay":
        sched = S.polynomial_decay(a, draw(counts), draw(magnitudes(1e-30, 1e30)), b, draw(st.booleans()))
        return sched, *span(a, b)
    if name == "linear":
        return S.linear(a, b, draw(counts)), *span(a, b)
    if name == "cosine_decay":
        return S.cosine_decay(a, draw(counts), b, draw(magnitudes(1e-30, 1e30))), *span(a, b)
    if name in ("cosine_warm_restarts", "linear_warm_restarts"):
        mult = draw(st.one_of(st.just(1), magnitudes(1.0, BIG)))
        return getattr(S, name)(a, draw(counts), mult, b), *span(a, b)
    if name == "one_cycle":
        div, final = draw(magnitudes()), draw(magnitudes())
        with np.errstate(over="ignore", under="ignore"):
            initial = FLOAT(a) / FLOAT(div)
            low = initial / FLOAT(final)
        # The implied values must be representable (normal or 0).
        assume(all(np.isfinite(v) and (v == 0 or abs(v) >= TINY) for v in (initial, low)))
        sched = S.one_cycle(a, draw(counts), draw(open_units), draw(st.sampled_from(["cos", "linear"])), div, final,
                            draw(st.booleans()))
        return sched, *span(a, float(initial), float(low))
    if name == "one_cycle_momentum":
        sched = S.one_cycle_momentum(draw(counts), draw(open_units), a, b, draw(st.sampled_from(["cos", "linear"])),
                                     draw(st.booleans()))
        return sched, *span(a, b)
    if name in ("cyclic", "cyclic_momentum"):
        mode = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
        down = draw(st.one_of(st.none(), phases))
        return getattr(S, name)(a, b, draw(counts), down, mode, draw(units)), *span(a, b)
    if name == "combined_cos":
        return S.combined_cos(draw(counts), draw(st.floats(0.0, 1.0, width=WIDTH)), a, b, c), *span(a, b, c)
    if name == "warmup":
        inner = S.cosine_decay(b, draw(counts), c)
        return S.warmup(inner, draw(phases), a), *span(a, b, c)
    if name == "join":
        bounds = sorted(draw(st.lists(st.one_of(st.integers(0, INT32_MAX), magnitudes()), min_size=2, max_size=2)))
        parts = [S.linear(a, b, draw(counts)), c, S.cosine_warm_restarts(b, draw(counts), draw(magnitudes(1.0, BIG)), a)]
        return S.join(parts, bounds), *span(a, b, c)
    if name == "multiply":
        # Factors in [-1, 1]: the product is representable (and may underflow to 0).
        x = [draw(st.floats(-1.0, 1.0, width=WIDTH)) for _ in range(2)]
        sched = S.multiply(S.cosine_warm_restarts(x[0], draw(counts), draw(magnitudes(1.0, BIG))), S.linear(x[1], 1.0, draw(counts)))
        return sched, -1.0, 1.0
    if name == "exponential_range":
        start, end = draw(magnitudes()), draw(magnitudes())
        return S.exponential_range(start, end, draw(counts)), *span(start, end)
    if name == "warmup_stable_decay":
        total, warm, decay = draw(phases), draw(phases), draw(phases)
        t, w, d = FLOAT(total), FLOAT(warm), FLOAT(decay)
        assume(np.isfinite(t - d) and t - d >= w)
        shapes = st.sampled_from(["linear", "cosine", "1-sqrt"])
        sched = S.warmup_stable_decay(a, total, warm, decay, warmup_shape=draw(shapes), decay_shape=draw(shapes), min_value=b)
        return sched, *span(a, b)
    if name == "inverse_sqrt":
        return S.inverse_sqrt(a, draw(phases), draw(st.one_of(st.none(), magnitudes()))), *span(a, 0.0)
    if name == "inverse_time_decay":
        rate = draw(st.one_of(st.just(0.0), magnitudes()))
        return S.inverse_time_decay(a, draw(magnitudes()), rate, staircase=draw(st.booleans())), *span(a, 0.0)
    if name == "swa":
        anneal = draw(st.sampled_from(["cos", "linear"]))
        return S.swa(a, b, draw(phases), anneal), *span(a, b)
    raise AssertionError(name)


NAMES = sorted(set(S.__all__) - {"Schedule"})


def test_every_factory_is_fuzzed():
    for name in NAMES:
        extreme_schedules(name).example  # noqa: B018 - builds the strategy


@pytest.mark.parametrize("name", sweeps.sweep(NAMES, sweeps.SCHEDULES))
@SETTINGS
@given(data=st.data(), steps=st.lists(st.integers(0, INT32_MAX), min_size=6, max_size=6))
def test_extreme_settings_are_finite_and_within_bounds(name, data, steps):
    sched, low, high = data.draw(extreme_schedules(name), label="schedule")
    tol = 4 * float(INFO.eps) * max(abs(low), abs(high))
    for values in evaluate(sched, np.array([0, 1, INT32_MAX, *steps])):
        assert np.all(np.isfinite(values)), values
        assert np.all((values >= low - tol) & (values <= high + tol)), (low, high, values)
    assert math.isfinite(float(sched(INT32_MAX)))


# ------------------------------------------------------------------ exact where representable

ORACLES = {
    "step_decay": (lambda a, n, g, b, c: (S.step_decay(a, n, g), ref_step_decay(a, n, g))),
    "exponential_decay": (  # the decay stops at b: from above for a >= 0, from below for a < 0
        lambda a, n, g, b, c: (S.exponential_decay(a, g, b), lambda t: (np.maximum if a >= 0 else np.minimum)(a * g**t, b))
    ),
    "polynomial_decay": (lambda a, n, g, b, c: (S.polynomial_decay(a, n, c, b), ref_polynomial(a, n, c, b))),
    "linear": (lambda a, n, g, b, c: (S.linear(a, b, n), ref_linear(a, b, n))),
    "cosine_decay": (lambda a, n, g, b, c: (S.cosine_decay(a, n, b, c), ref_cosine(a, n, b, c))),
    # transformers' 1 / sqrt((t + timescale - warmup) / timescale) with t - warmup
    # taken first (in float64 the tiny timescale would cancel against the warmup).
    "inverse_sqrt": (
        lambda a, n, g, b, c: (
            S.inverse_sqrt(a, n, c),
            lambda t: a * np.where(t < n, t / n, np.sqrt(c / (c + np.maximum(t - n, 0.0)))),
        )
    ),
    "inverse_time_decay": (lambda a, n, g, b, c: (S.inverse_time_decay(a, n, c), ref_inverse_time(a, n, c))),
    # torch SWALR's closed form, linear: b * x + a * (1 - x), x = min(t / n, 1)
    "swa": (lambda a, n, g, b, c: (S.swa(a, b, n, "linear"),
                                   lambda t: b * np.minimum(t / n, 1.0) + a * (1.0 - np.minimum(t / n, 1.0)))),
    "warmup_stable_decay": (
        # the reference gets the phase lengths as the default dtype holds them
        # (2 * n + c = 1.000002 is 1.0000019 in float32, a 5% change of a
        # 2e-6 remainder of the cooldown)
        lambda a, n, g, b, c: (S.warmup_stable_decay(abs(a), 2 * n + c, n, c, min_value=abs(b)),
                               ref_wsd(abs(a), *(float(FLOAT(v)) for v in (2 * n + c, n, c)), low=abs(b)))
    ),
}


@pytest.mark.parametrize("name", sorted(ORACLES))
@SETTINGS
@given(
    a=reals(), b=reals(), n=st.one_of(st.integers(1, 10**6), magnitudes()), g=units,
    c=st.one_of(st.integers(1, 10**6), magnitudes()), steps=st.lists(st.integers(0, INT32_MAX), min_size=6, max_size=6),
)
def test_extreme_settings_give_the_exact_value(name, a, b, n, g, c, steps):
    """Where the float64 reference is representable in the default dtype,
    fnopt returns it (2e-4 in float32: exp() of a log of up to 88 and powers
    up to 1e6 are within a few hundred ulps)."""
    if name == "warmup_stable_decay":
        with np.errstate(over="ignore"):
            total = FLOAT(2 * n + c)
        assume(abs(a) > 0 and np.isfinite(total) and total - FLOAT(c) >= FLOAT(n))
    if name in ("inverse_sqrt", "inverse_time_decay", "polynomial_decay", "cosine_decay"):
        c = float(min(FLOAT(c), FLOAT(1e6)))  # a power / exponent / timescale / rate
    sched, ref = ORACLES[name](a, n, g, b, c)
    t = np.array([0, 1, 10, 1000, *steps])
    with np.errstate(all="ignore"):
        want = ref(t.astype(np.float64))
    # Representable, and not within a few binades of the underflow threshold,
    # where XLA's reciprocal-times-numerator may round below it and flush to 0.
    floor = 1e-300 if X64 else 1e-30
    ok = np.isfinite(want) & (np.abs(want) <= BIG) & (np.abs(want) >= floor)
    got = np.asarray(sched(jnp.asarray(t, jnp.int32)), np.float64)
    assert np.all(np.isfinite(got))
    rtol = 1e-10 if X64 else 2e-4
    # Plus the float64 oracle's own cancellation (1 - (1 + cos x) / 2 near
    # x = 0), which a power c magnifies c times.
    atol = 1e-15 * max(abs(a), abs(b)) * min(max(1.0, c), 1e6)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "sched,want",
    [
        (S.linear(0.0, 1.0, BIG), lambda t: t / BIG),
        (S.inverse_sqrt(1.0, BIG), lambda t: t / BIG),
        (S.warmup_stable_decay(2.0, BIG, 2.0**100, 1.0), lambda t: 2.0 * t / 2.0**100),
        (S.polynomial_decay(1.0, BIG, 1.0, 2.0), lambda t: 1.0 + t / BIG),
    ],
)
def test_tiny_progress_through_a_huge_phase_is_not_flushed(sched, want):
    """``t / length`` for a length beyond ``2**126`` (float32): XLA divides by
    multiplying with the reciprocal, which is flushed to zero there; fnopt
    scales the length down first."""
    t = np.array([10, 1000, 123456, INT32_MAX])
    got = np.asarray(sched(jnp.asarray(t, jnp.int32)), np.float64)
    np.testing.assert_allclose(got, want(t.astype(np.float64)), rtol=1e-5)
