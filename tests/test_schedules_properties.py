"""Property tests (hypothesis) of the schedule math over random valid
hyperparameters: finite and within the implied bounds for every step in
``[0, 2**31)``, monotone where the phase says so, continuous at phase
boundaries, periodic restarts, exact endpoints.

Every example evaluates a schedule on a fixed-size array of steps (eagerly,
so the ops compile once per shape), which keeps a few hundred examples fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sweeps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fnopt import schedules as S

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32
EPS = float(np.finfo(FLOAT).eps)
SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
N = 256  # steps per example


def f(x):
    """``x`` as fnopt holds it (the default float dtype), as a Python float."""
    return float(FLOAT(x))


def floats(lo, hi):
    """Floats of the default dtype (bounds rounded to it). XLA on CPU flushes
    subnormals to zero, so magnitudes below 1e-30 (whose products underflow)
    become 0."""
    width = 64 if X64 else 32
    return st.floats(f(lo), f(hi), width=width).map(lambda x: 0.0 if abs(x) < 1e-30 else x)


def values(sched, steps):
    steps = np.asarray(steps)
    padded = np.resize(steps, N) if len(steps) <= N else steps
    return np.asarray(sched(jnp.asarray(padded)), dtype=np.float64)[: len(steps)]


# ------------------------------------------------------------------ strategies

pos = floats(1e-6, 10.0)
steps_count = st.one_of(st.integers(1, 10**6), floats(0.5, 1e6))
gammas = st.one_of(st.just(1.0), floats(1e-3, 1.0))
anneals = st.sampled_from(["cos", "linear"])
modes = st.sampled_from(["triangular", "triangular2", "exp_range"])
seeds = st.integers(0, 2**32 - 1)


@st.composite
def ordered(draw, lo=0.0, hi=10.0):
    a, b = draw(floats(lo, hi)), draw(floats(lo, hi))
    return min(a, b), max(a, b)


@st.composite
def constant_(draw):
    v = draw(floats(-10, 10))
    return S.constant(v), v, v


@st.composite
def step_decay_(draw):
    init = draw(pos)
    return S.step_decay(init, draw(steps_count), draw(gammas)), 0.0, init


@st.composite
def multistep_(draw):
    marks = draw(st.lists(st.one_of(st.integers(0, 2**31 - 1), floats(0, 1e6)), max_size=6))
    init = draw(pos)
    return S.multistep_decay(init, marks, draw(gammas)), 0.0, init


@st.composite
def exponential_(draw):
    init = draw(pos)
    low = draw(st.one_of(st.just(0.0), floats(0.0, init)))
    return S.exponential_decay(init, draw(gammas), low), low, init


@st.composite
def polynomial_(draw, cycle=None):
    end, init = draw(ordered())
    cycle = draw(st.booleans()) if cycle is None else cycle
    return S.polynomial_decay(init, draw(steps_count), draw(floats(0.1, 5.0)), end, cycle), end, init


@st.composite
def linear_(draw):
    a, b = draw(floats(-10, 10)), draw(floats(-10, 10))
    return S.linear(a, b, draw(steps_count)), min(a, b), max(a, b)


@st.composite
def cosine_(draw):
    low, init = draw(ordered())
    exponent = draw(st.one_of(st.just(1.0), floats(0.1, 10.0)))
    return S.cosine_decay(init, draw(steps_count), low, exponent), low, init


@st.composite
def restarts_(draw, factory):
    low, init = draw(ordered())
    t0 = draw(st.one_of(st.integers(1, 10**5), floats(0.1, 1e5)))
    mult = draw(st.one_of(st.sampled_from([1, 2, 3]), floats(1.0, 4.0)))
    return factory(init, t0, mult, low), low, init


@st.composite
def one_cycle_(draw):
    peak, div, final = draw(pos), draw(floats(1.0, 1e4)), draw(floats(1.0, 1e5))
    sched = S.one_cycle(
        peak, draw(st.integers(1, 10**6)), draw(floats(0.01, 0.99)), draw(anneals), div, final, draw(st.booleans())
    )
    return sched, f(f(f(peak) / f(div)) / f(final)), peak


@st.composite
def one_cycle_momentum_(draw):
    base, high = draw(ordered(0.0, 1.0))
    sched = S.one_cycle_momentum(
        draw(st.integers(1, 10**6)), draw(floats(0.01, 0.99)), base, high, draw(anneals), draw(st.booleans())
    )
    return sched, base, high


@st.composite
def cyclic_(draw, factory):
    base, high = draw(ordered())
    up = draw(st.one_of(st.integers(1, 10**5), floats(0.5, 1e5)))
    down = draw(st.one_of(st.none(), st.integers(0, 10**5), floats(0.0, 1e5)))
    return factory(base, high, up, down, draw(modes), draw(floats(0.9, 1.0))), base, high


@st.composite
def combined_cos_(draw):
    a, b, c = (draw(floats(0, 10)) for _ in range(3))
    sched = S.combined_cos(draw(steps_count), draw(floats(0.0, 1.0)), a, b, c)
    return sched, min(a, b, c), max(a, b, c)


@st.composite
def warmup_(draw):
    inner, low, high = draw(cosine_())
    start = draw(floats(0, 10))
    return S.warmup(inner, draw(floats(0, 1e5)), start), min(low, start), max(high, start)


@st.composite
def join_(draw):
    parts = [draw(st.one_of(cosine_(), linear_(), constant_(), step_decay_())) for _ in range(draw(st.integers(1, 3)))]
    bounds = sorted(draw(floats(0, 1e6)) for _ in parts[1:])
    sched = S.join([p[0] for p in parts], bounds)
    return sched, min(p[1] for p in parts), max(p[2] for p in parts)


@st.composite
def multiply_(draw):
    (a, alo, ahi), (b, blo, bhi) = draw(cosine_()), draw(exponential_())
    return S.multiply(a, b), alo * blo, ahi * bhi


@st.composite
def exponential_range_(draw):
    a, b = draw(pos), draw(pos)
    return S.exponential_range(a, b, draw(steps_count)), min(a, b), max(a, b)


@st.composite
def wsd_(draw):
    peak, low = draw(pos), draw(floats(0.0, 10.0))
    total = draw(st.integers(0, 10**6))
    warm = draw(st.integers(0, total))
    decay = draw(st.integers(0, total - warm))
    shapes = st.sampled_from(["linear", "cosine", "1-sqrt"])
    sched = S.warmup_stable_decay(
        peak, total, warm, decay, warmup_shape=draw(shapes), decay_shape=draw(shapes), min_value=low
    )
    return sched, min(peak, low), max(peak, low)


@st.composite
def inverse_sqrt_(draw):
    peak = draw(pos)
    warm = draw(st.one_of(st.integers(0, 10**5), floats(0.0, 1e5)))
    return S.inverse_sqrt(peak, warm, draw(st.none() | floats(1e-3, 1e6))), 0.0, peak


@st.composite
def inverse_time_(draw):
    init = draw(pos)
    sched = S.inverse_time_decay(init, draw(floats(1e-3, 1e6)), draw(floats(0.0, 100.0)), staircase=draw(st.booleans()))
    return sched, 0.0, init


@st.composite
def swa_(draw):
    init, low = draw(pos), draw(floats(0.0, 10.0))
    sched = S.swa(init, low, draw(st.one_of(st.integers(0, 10**5), floats(0.0, 1e5))), draw(st.sampled_from(["cos", "linear"])))
    return sched, min(init, low), max(init, low)


FAMILIES = {
    "constant": constant_(),
    "step_decay": step_decay_(),
    "multistep_decay": multistep_(),
    "exponential_decay": exponential_(),
    "polynomial_decay": polynomial_(),
    "linear": linear_(),
    "cosine_decay": cosine_(),
    "cosine_warm_restarts": restarts_(S.cosine_warm_restarts),
    "linear_warm_restarts": restarts_(S.linear_warm_restarts),
    "one_cycle": one_cycle_(),
    "one_cycle_momentum": one_cycle_momentum_(),
    "cyclic": cyclic_(S.cyclic),
    "cyclic_momentum": cyclic_(S.cyclic_momentum),
    "combined_cos": combined_cos_(),
    "warmup": warmup_(),
    "join": join_(),
    "multiply": multiply_(),
    "exponential_range": exponential_range_(),
    "warmup_stable_decay": wsd_(),
    "inverse_sqrt": inverse_sqrt_(),
    "inverse_time_decay": inverse_time_(),
    "swa": swa_(),
}
FAMILY_NAMES = sorted(FAMILIES)


def test_every_factory_has_a_strategy():
    assert set(FAMILIES) == set(S.__all__) - {"Schedule"}


# ------------------------------------------------------------------ bounds


def wide_steps(seed):
    """Integer and float steps over [0, 2**31): uniform, log-uniform, and the
    extremes 0 and 2**31 - 1."""
    rng = np.random.default_rng(seed)
    ints = np.concatenate(
        [[0, 1, 2, 2**31 - 2, 2**31 - 1], rng.integers(0, 2**31, 60), np.exp(rng.uniform(0, 21.4, 60)).astype(np.int64)]
    )
    floats = np.concatenate([[0.0, 0.5, 2**31 - 1], rng.uniform(0, 2**31, 60), np.exp(rng.uniform(-7, 21.4, 60))])
    return ints.astype(np.int32), np.minimum(floats, 2**31 - 1).astype(FLOAT)


@pytest.mark.parametrize("name", sweeps.sweep(FAMILY_NAMES, sweeps.SCHEDULES))
@SETTINGS
@given(data=st.data(), seed=seeds)
def test_finite_and_within_bounds(name, data, seed):
    sched, lo, hi = data.draw(FAMILIES[name])
    tol = 4 * EPS * max(abs(lo), abs(hi), 1e-30)
    for steps in wide_steps(seed):
        v = values(sched, steps)
        assert np.all(np.isfinite(v)), (name, steps[~np.isfinite(v)])
        assert np.all(v >= lo - tol) and np.all(v <= hi + tol), (name, lo, hi, v.min(), v.max())
    scalar = float(sched(2**31 - 1))
    assert np.isfinite(scalar) and lo - tol <= scalar <= hi + tol


# ------------------------------------------------------------------ monotone


def assert_monotone(v, direction, scale, what):
    d = np.diff(v) * direction
    assert np.all(d >= -8 * EPS * scale), (what, d.min())


def grid(lo, hi, seed, n=N):
    """Sorted steps in [lo, hi], both ends included, in the default dtype."""
    rng = np.random.default_rng(seed)
    return np.unique(np.concatenate([[lo, hi], rng.uniform(lo, hi, n - 2)]).astype(FLOAT))


MONOTONE = ["step_decay", "multistep_decay", "exponential_decay", "cosine_decay", "linear", "inverse_time_decay"]


@pytest.mark.parametrize("name", [*MONOTONE, "polynomial_decay", "exponential_range"])
@SETTINGS
@given(data=st.data(), seed=seeds, span=floats(1.0, 2e6))
def test_decays_are_monotone(name, data, seed, span):
    sched, lo, hi = data.draw(polynomial_(cycle=False) if name == "polynomial_decay" else FAMILIES[name])
    v = values(sched, grid(0.0, span, seed))
    direction = np.sign(v[-1] - v[0]) or 1.0
    assert_monotone(v, direction, max(abs(lo), abs(hi)), name)


@SETTINGS
@given(total=st.integers(10, 10**6), pct=floats(0.05, 0.95), anneal=anneals, three_phase=st.booleans(), seed=seeds)
def test_one_cycle_phases_are_monotone(total, pct, anneal, three_phase, seed):
    lr = S.one_cycle(1.0, total, pct, anneal, three_phase=three_phase)
    mom = S.one_cycle_momentum(total, pct, 0.85, 0.95, anneal, three_phase)
    ends = [f(f(pct) * total - 1)] + ([f(2 * f(pct) * total - 2)] if three_phase else []) + [total - 1.0]
    starts = [0.0] + ends[:-1]
    ups = [1.0, -1.0, -1.0] if three_phase else [1.0, -1.0]
    for (a, b), up in zip(zip(starts, ends), ups):
        if b - a < 1e-3 * max(b, 1.0):
            continue
        steps = grid(a, b, seed)
        assert_monotone(values(lr, steps), up, 1.0, ("lr", a, b))
        assert_monotone(values(mom, steps), -up, 1.0, ("momentum", a, b))  # (flat in phase 3)
    tail = grid(total - 1.0, 10.0 * total, seed)
    np.testing.assert_array_equal(values(lr, tail), values(lr, [total - 1.0])[0])


def period_start(t0, mult, n):
    return t0 * n if mult == 1 else t0 * (mult**n - 1) / (mult - 1)


@pytest.mark.parametrize("factory", [S.cosine_warm_restarts, S.linear_warm_restarts])
@SETTINGS
@given(
    t0=st.one_of(st.integers(1, 1000), floats(0.5, 1000)),
    mult=st.one_of(st.sampled_from([1, 2, 3]), floats(1.0, 3.0)),
    n=st.integers(0, 12),
    seed=seeds,
)
def test_restart_periods_decrease_then_jump(factory, t0, mult, n, seed):
    t0, mult = f(t0), f(mult)
    sched = factory(1.0, t0, mult, 0.1)
    a, b = period_start(t0, mult, n), period_start(t0, mult, n + 1)
    margin = 1e-5 * b
    v = values(sched, grid(a + margin, b - margin, seed))
    assert_monotone(v, -1.0, 1.0, (a, b))
    assert v[0] > 0.99 and v[-1] < 0.11 + 1e-3


@pytest.mark.parametrize("factory,up", [(S.cyclic, 1.0), (S.cyclic_momentum, -1.0)])
@SETTINGS
@given(
    step_up=st.integers(1, 10**4), step_down=st.none() | st.integers(1, 10**4), mode=modes,
    cycle=st.integers(0, 50), seed=seeds,
)
def test_cyclic_rises_then_falls(factory, up, step_up, step_down, mode, cycle, seed):
    sched = factory(0.1, 0.9, step_up, step_down, mode, 0.9999)
    length = step_up + (step_up if step_down is None else step_down)
    start, peak = cycle * length, cycle * length + step_up
    assert_monotone(values(sched, grid(start, peak, seed)), up, 1.0, "up")
    assert_monotone(values(sched, grid(peak, start + length, seed)), -up, 1.0, "down")


@SETTINGS
@given(total=st.integers(10, 10**6), pct=floats(0.05, 0.95), seed=seeds)
def test_combined_cos_phases_are_monotone(total, pct, seed):
    sched = S.combined_cos(total, pct, 0.04, 1.0, 1e-5)
    peak = f(f(pct) * total)
    assert_monotone(values(sched, grid(0.0, peak, seed)), 1.0, 1.0, "up")
    assert_monotone(values(sched, grid(peak, 2.0 * total, seed)), -1.0, 1.0, "down")


# ------------------------------------------------------------------ continuity


def assert_continuous(sched, boundary, slope, what):
    """``sched`` just before ``boundary`` is within ``2 * slope * distance`` of
    its value at the boundary (plus rounding)."""
    b = FLOAT(boundary)
    before = np.array([np.nextafter(b, FLOAT(0)), b - FLOAT(1e-3) * max(1.0, b) ** 0.5, b], dtype=FLOAT)
    v = values(sched, before)
    dist = b.astype(np.float64) - before.astype(np.float64)
    allowed = 2 * slope * dist + 16 * EPS * max(1.0, slope * max(1.0, float(b)))
    assert np.all(np.abs(v - v[-1]) <= allowed), (what, boundary, v)


@SETTINGS
@given(total=st.integers(100, 10**6), pct=floats(0.05, 0.95), anneal=anneals, three_phase=st.booleans(), div=floats(1, 1e3))
def test_one_cycle_is_continuous(total, pct, anneal, three_phase, div):
    if three_phase and pct > 0.5:
        pct = 1.0 - pct
    lr = S.one_cycle(1.0, total, pct, anneal, div, 1e4, three_phase)
    mom = S.one_cycle_momentum(total, pct, 0.85, 0.95, anneal, three_phase)
    ends = [f(f(pct) * total - 1)] + ([f(2 * f(pct) * total - 2)] if three_phase else []) + [total - 1.0]
    slope = 2.0 / min(np.diff([0.0, *ends]))
    for b in ends:
        assert_continuous(lr, b, slope, "lr")
        assert_continuous(mom, b, slope, "momentum")
        after = values(lr, [b, np.nextafter(FLOAT(b), FLOAT(np.inf))])
        assert abs(after[1] - after[0]) <= 2 * slope * 4 * EPS * b + 16 * EPS


@SETTINGS
@given(init=pos, total=steps_count, steps=floats(0.5, 1e5), start=floats(0.0, 10.0), sawtooth=st.booleans())
def test_warmup_and_join_are_continuous(init, total, steps, start, sawtooth):
    inner = S.cosine_decay(init, total) if not sawtooth else S.linear_warm_restarts(init, total)
    w = S.warmup(inner, steps, start)
    slope = max(abs(init - start) / steps, 2 * init / total)
    assert_continuous(w, steps, slope, "warmup")
    assert float(w(0)) == f(start)
    # The same ramp as a join of two continuous pieces.
    j = S.join([S.linear(start, init, steps), inner], [steps])
    assert_continuous(j, steps, slope, "join")


@SETTINGS
@given(total=st.integers(10, 10**6), pct=floats(0.01, 0.99), a=pos, b=pos, c=pos)
def test_combined_cos_is_continuous(total, pct, a, b, c):
    sched = S.combined_cos(total, pct, a, b, c)
    peak = f(f(pct) * total)
    slope = 2 * max(abs(b - a) / peak, abs(c - b) / (total - peak))
    assert_continuous(sched, peak, slope, "peak")
    assert_continuous(sched, total, slope, "end")


# ------------------------------------------------------------------ periodicity


@pytest.mark.parametrize("factory", [S.cosine_warm_restarts, S.linear_warm_restarts])
@SETTINGS
@given(t0=st.integers(1, 10**5), k=st.integers(1, 10**4), seed=seeds)
def test_equal_restarts_are_periodic(factory, t0, k, seed):
    sched = factory(0.7, t0, 1, 0.01)
    rng = np.random.default_rng(seed)
    t = rng.integers(0, min(t0 * 50, 2**31 - 1 - k * t0), N)
    np.testing.assert_array_equal(values(sched, t.astype(np.int32)), values(sched, (t + k * t0).astype(np.int32)))
    # Fractional steps (eighths, exact in float32 below 2**21): exactly equal too.
    k = min(k, 2**20 // t0 - 4)
    x = rng.integers(0, 32 * t0, N) / 8
    np.testing.assert_array_equal(values(sched, x.astype(FLOAT)), values(sched, (x + k * t0).astype(FLOAT)))


@SETTINGS
@given(
    t0=st.integers(1, 100) | st.sampled_from([0.5, 0.25, 1.5]), mult=st.sampled_from([2, 3, 1.5]),
    n=st.integers(1, 10), seed=seeds,
)
def test_growing_restarts_are_scaled_copies(t0, mult, n, seed):
    sched = S.cosine_warm_restarts(1.0, t0, mult, 0.0)
    x = np.random.default_rng(seed).uniform(0, 1, N)
    first = values(sched, (x * t0).astype(FLOAT))
    later = values(sched, (period_start(t0, mult, n) + x * t0 * mult**n).astype(FLOAT))
    np.testing.assert_allclose(later, first, atol=1e-5 if not X64 else 1e-12)
    assert float(sched(period_start(t0, mult, n))) == 1.0


@pytest.mark.parametrize("factory", [S.cyclic, S.cyclic_momentum])
@SETTINGS
@given(up=st.integers(1, 10**4), down=st.integers(0, 10**4), k=st.integers(1, 100), seed=seeds)
def test_triangular_cycles_are_periodic(factory, up, down, k, seed):
    sched = factory(0.2, 0.8, up, down)
    t = np.random.default_rng(seed).integers(0, 100 * (up + down), N)
    np.testing.assert_array_equal(values(sched, t.astype(np.int32)), values(sched, (t + k * (up + down)).astype(np.int32)))


# ------------------------------------------------------------------ endpoints


@SETTINGS
@given(a=floats(-10, 10), b=floats(-10, 10), total=steps_count, power=floats(0.1, 5.0))
def test_endpoints_of_decays(a, b, total, power):
    T = f(total)
    assert float(S.cosine_decay(a, total, b)(0)) == f(a)
    assert float(S.cosine_decay(a, total, b)(T)) == f(b)
    assert float(S.linear(a, b, total)(0)) == f(a)
    assert float(S.linear(a, b, total)(T)) == f(b)
    assert float(S.polynomial_decay(a, total, power, b)(0)) == f(a)
    assert float(S.polynomial_decay(a, total, power, b)(T)) == f(b)
    assert float(S.exponential_decay(a, 0.5)(0)) == f(a)
    assert float(S.step_decay(a, total, 0.5)(0)) == f(a)
    assert float(S.exponential_range(abs(a) + 1e-3, abs(b) + 1e-3, total)(0)) == f(abs(a) + 1e-3)
    assert float(S.exponential_range(abs(a) + 1e-3, abs(b) + 1e-3, total)(T)) == f(abs(b) + 1e-3)


@SETTINGS
@given(
    peak=pos, total=st.integers(2, 10**6), pct=floats(0.01, 0.99), anneal=anneals, div=floats(1.0, 1e4),
    final=floats(1.0, 1e5), three_phase=st.booleans(),
)
def test_endpoints_of_one_cycle(peak, total, pct, anneal, div, final, three_phase):
    lr = S.one_cycle(peak, total, pct, anneal, div, final, three_phase)
    mom = S.one_cycle_momentum(total, pct, 0.8, 0.97, anneal, three_phase)
    top = FLOAT(pct) * FLOAT(total) - FLOAT(1)  # torch's end of the rise, as fnopt holds it
    initial = FLOAT(peak) / FLOAT(div)
    if top > 0:
        assert float(lr(0)) == initial
        assert float(mom(0)) == f(0.97)
    if top >= 0:
        assert float(lr(top)) == f(peak)
        assert float(mom(top)) == f(0.8)
    second_end = FLOAT(2) * FLOAT(pct) * FLOAT(total) - FLOAT(2)
    if three_phase and second_end > total - 1:
        return  # torch's second phase is still running at T - 1
    held = initial if three_phase and second_end == total - 1 else initial / FLOAT(final)
    assert float(lr(total - 1)) == held
    assert float(lr(10 * total)) == held
    assert float(mom(total - 1)) == f(0.97)


@SETTINGS
@given(total=steps_count, pct=floats(0.0, 1.0), a=floats(0, 10), b=floats(0, 10), c=floats(0, 10))
def test_endpoints_of_combined_cos(total, pct, a, b, c):
    sched = S.combined_cos(total, pct, a, b, c)
    peak = FLOAT(pct) * FLOAT(total)
    if peak > 0:
        assert float(sched(0)) == f(a)
    if peak < FLOAT(total):
        assert float(sched(peak)) == f(b)
    assert float(sched(total)) == f(c)


@SETTINGS
@given(base=floats(0, 1), high=floats(0, 1), up=st.integers(1, 10**5), down=st.integers(1, 10**5), cycle=st.integers(0, 100))
def test_endpoints_of_cyclic(base, high, up, down, cycle):
    start = cycle * (up + down)
    assert float(S.cyclic(base, high, up, down)(start)) == f(base)
    assert float(S.cyclic(base, high, up, down)(start + up)) == f(high)
    assert float(S.cyclic_momentum(base, high, up, down)(start)) == f(high)
    assert float(S.cyclic_momentum(base, high, up, down)(start + up)) == f(base)
    assert float(S.cyclic(base, high, up, down, "triangular2")(start + up)) == pytest.approx(
        base + (high - base) / 2**cycle, rel=8 * EPS, abs=8 * EPS
    )


def test_empty_phases_count_as_finished():
    # pct_start * total_steps - 1 == 0: the rise has zero length, the peak is
    # at step 0 (torch divides 0 by 0 there).
    assert float(S.one_cycle(0.7, 10, 0.1)(0)) == f(0.7)
    assert float(S.one_cycle_momentum(10, 0.1, 0.85, 0.95)(0)) == f(0.85)
    # pct_start = 1: the descent has zero length; from total_steps on the
    # value is end_value (fastai's formula gives 0/0 at the very end).
    sched = S.combined_cos(100, 1.0, 0.1, 1.0, 0.25)
    assert float(sched(100)) == f(0.25)
    assert float(sched(99.5)) == pytest.approx(1.0, rel=1e-3)
    # step_size_down = 0: the wave drops straight back to base after the peak.
    cyc = S.cyclic(0.1, 1.0, 10, 0)
    assert float(cyc(9.5)) == pytest.approx(0.955, rel=1e-6)
    assert float(cyc(10)) == f(0.1)
