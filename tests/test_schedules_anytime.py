"""The anytime schedules and the new options (issue 12, item 1).

- Optax itself as the oracle for ``cosine_decay(exponent=)`` and
  ``exponential_decay(min_value=)`` (its ``end_value``).
- Property tests (hypothesis) for warmup-stable-decay and inverse-sqrt:
  exact endpoints, continuity at every phase boundary, monotone phases.
- A traced ``total_steps``: a ``vmap`` over it, and a jitted training step
  whose run is extended and shortened between steps without a retrace and
  without a jump in the learning rate while the decay has not begun.

The float64 NumPy oracles (transformers' WSD and inverse-sqrt lambdas,
Keras' ``InverseTimeDecay`` and ``PolynomialDecay(cycle=True)``) live with
the other references in ``test_schedules_reference.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_schedules_reference import ref_inverse_sqrt, ref_wsd

import fnopt
from fnopt import schedules as S

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32
EPS = float(np.finfo(FLOAT).eps)
RTOL = 1e-12 if X64 else 2e-6
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SHAPES = ["linear", "cosine", "1-sqrt"]
N = 256


def f(x):
    return float(FLOAT(x))


def values(sched, steps):
    steps = np.asarray(steps, dtype=FLOAT)
    padded = np.resize(steps, N) if len(steps) <= N else steps
    return np.asarray(sched(jnp.asarray(padded)), dtype=np.float64)[: len(steps)]


# ------------------------------------------------------------------ Optax as the oracle


@pytest.mark.parametrize("exponent", [1.0, 0.3, 2.0, 5.0])
@pytest.mark.parametrize("init,low", [(1.0, 0.0), (0.1, 0.01), (2.0, 0.5)])
def test_cosine_exponent_equals_optax(init, low, exponent):
    total = 500
    ours = S.cosine_decay(init, total, low, exponent)
    theirs = optax.cosine_decay_schedule(init, total, alpha=low / init, exponent=exponent)
    steps = np.arange(0, 700, dtype=np.int32)
    want = np.array([float(theirs(int(t))) for t in steps[::7]])
    got = values(ours, steps[::7])
    # Optax's float32 ``0.5 * (1 + cos(x))`` cancels near the end, and an
    # exponent below 1 magnifies that (4e-5 relative at step 497 of 500 for
    # exponent 0.3); the float64 reference test holds fnopt to 1e-5.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * init)
    assert float(ours(0)) == f(init) and float(ours(total)) == f(low)


@pytest.mark.parametrize("gamma", [0.5, 0.99, 0.999])
@pytest.mark.parametrize("low", [0.0, 0.05, 0.3])
def test_exponential_min_value_equals_optax_end_value(gamma, low):
    # Both given the base as float32 holds it (Optax raises the rounded base
    # to the power; fnopt takes its log in float64 on the host).
    gamma = f(gamma)
    ours = S.exponential_decay(1.0, gamma, low)
    theirs = optax.exponential_decay(1.0, transition_steps=1, decay_rate=gamma, end_value=low)
    steps = np.arange(0, 3000, 11)
    want = np.array([float(theirs(int(t))) for t in steps])
    np.testing.assert_allclose(values(ours, steps), want, rtol=1e-5, atol=1e-7)


def test_exponential_min_value_stops_a_negative_decay_from_below():
    # -1 rises towards 0; the decay stops at -0.25; the default 0 changes nothing.
    np.testing.assert_allclose(values(S.exponential_decay(-1.0, 0.5, -0.25), [0, 1, 2, 3, 50]), [-1, -0.5, -0.25, -0.25, -0.25])
    np.testing.assert_allclose(values(S.exponential_decay(-1.0, 0.5), [0, 1, 3]), [-1, -0.5, -0.125])


def test_polynomial_cycle_restarts_lower_at_every_multiple():
    sched = S.polynomial_decay(1.0, 10, 2.0, 0.1, cycle=True)
    # Keras: decay length 10 * ceil(t / 10); end_value at every multiple.
    assert float(sched(0)) == 1.0
    np.testing.assert_allclose(values(sched, [10, 20, 30]), 0.1, rtol=1e-6)
    after = values(sched, [10.5, 20.5, 1e6 + 0.5])
    want = 0.1 + 0.9 * (1 - np.array([10.5 / 20, 20.5 / 30, (1e6 + 0.5) / (1e6 + 10)])) ** 2
    np.testing.assert_allclose(after, want, rtol=1e-4 if not X64 else 1e-12)


# ------------------------------------------------------------------ WSD properties


@st.composite
def wsd_args(draw):
    total = draw(st.integers(2, 10**6))
    warm = draw(st.integers(0, total - 1))
    decay = draw(st.integers(1, total - warm))
    peak, low = draw(st.floats(1e-4, 10.0)), draw(st.floats(0.0, 1.0))
    low = 0.0 if low * peak < 1e-30 else low * peak  # XLA on CPU flushes subnormals
    return peak, total, warm, decay, low, draw(st.sampled_from(SHAPES)), draw(st.sampled_from(SHAPES))


def grid(lo, hi, seed, n=N):
    rng = np.random.default_rng(seed)
    return np.unique(np.concatenate([[lo, hi], rng.uniform(lo, hi, n - 2)]).astype(FLOAT))


@SETTINGS
@given(args=wsd_args(), seed=st.integers(0, 2**32 - 1))
def test_wsd_endpoints_exact_and_phases_monotone(args, seed):
    peak, total, warm, decay, low, ws, ds = args
    sched = S.warmup_stable_decay(peak, total, warm, decay, warmup_shape=ws, decay_shape=ds, min_value=low)
    start = total - decay
    assert float(sched(0)) == f(low if warm > 0 else peak)
    assert float(sched(warm)) == f(peak)  # warm <= start: the stable phase or the decay's first step
    assert float(sched(start)) == f(peak)
    for t in (total, total + 1, 10 * total, 2**31 - 1):
        assert float(sched(t)) == f(low)
    scale = 8 * EPS * peak
    if warm > 0:
        assert np.all(np.diff(values(sched, grid(0, warm, seed))) >= -scale)
    np.testing.assert_array_equal(values(sched, grid(warm, start, seed)), f(peak))
    assert np.all(np.diff(values(sched, grid(start, total, seed))) <= scale)
    # Bounds everywhere.
    v = values(sched, grid(0, 2 * total, seed))
    assert np.all(v >= f(low) - scale) and np.all(v <= f(peak) + scale)


@SETTINGS
@given(args=wsd_args())
def test_wsd_is_continuous_at_every_boundary(args):
    peak, total, warm, decay, low, ws, ds = args
    sched = S.warmup_stable_decay(peak, total, warm, decay, warmup_shape=ws, decay_shape=ds, min_value=low)
    # 1-sqrt has an infinite slope at one end of its phase: |f(p) - f(0)| <= sqrt(p).
    for boundary, length in ((warm, warm), (total - decay, decay), (total, decay)):
        if length == 0:
            continue
        b = FLOAT(boundary)
        near = np.array([b - FLOAT(1e-3) * FLOAT(length), b], dtype=FLOAT)
        v = values(sched, near)
        dist = float(b) - float(near[0])
        assert abs(v[0] - v[1]) <= (peak - low) * 2 * np.sqrt(dist / length) + 16 * EPS * peak, (boundary, v)


@pytest.mark.parametrize("ws", SHAPES)
@pytest.mark.parametrize("ds", SHAPES)
def test_wsd_equals_transformers_around_every_phase_boundary(ws, ds):
    """Steps next to the ends of transformers' phases: ``num_warmup_steps``,
    ``num_warmup_steps + num_stable_steps`` with ``num_stable_steps =
    num_training_steps - num_warmup_steps - num_decay_steps``, and
    ``num_training_steps``."""
    for total, warm, decay in ((100, 10, 20), (100, 10, 90), (100, 0, 100), (7, 3, 4), (1000, 1, 1)):
        sched = S.warmup_stable_decay(0.3, total, warm, decay, warmup_shape=ws, decay_shape=ds, min_value=0.003)
        steps = np.unique(np.clip(np.array([0, 1, warm - 1, warm, warm + 1, total - decay - 1, total - decay,
                                            total - decay + 1, total - 1, total, total + 1, 3 * total]), 0, None))
        want = ref_wsd(0.3, total, warm, decay, ws, ds, 0.003)(steps.astype(np.float64))
        np.testing.assert_allclose(values(sched, steps), want, rtol=1e-5, atol=1e-9, err_msg=str((total, warm, decay)))


def test_inverse_sqrt_is_continuous_and_decreasing_after_the_warmup():
    for warm, scale in ((100, None), (0, None), (50, 10.0), (1000, 5000)):
        sched = S.inverse_sqrt(2.0, warm, scale)
        if warm:
            assert float(sched(warm)) == 2.0
            assert abs(float(sched(warm - 1e-3)) - 2.0) <= 2.0 * 1e-3 / warm + 1e-6
        v = values(sched, grid(warm, 2**31 - 1, 0))
        assert np.all(np.diff(v) <= 8 * EPS) and np.all(v > 0)
        steps = np.arange(0, 5 * max(warm, 10))
        np.testing.assert_allclose(values(sched, steps), ref_inverse_sqrt(2.0, warm, scale)(steps), rtol=1e-5)


# ------------------------------------------------------------------ a traced total_steps


def test_vmap_over_traced_total_steps_equals_separate_builds():
    totals = jnp.asarray([500, 800, 1000, 4000], dtype=jnp.int32)
    steps = jnp.arange(0, 4500, 3)
    got = jax.vmap(lambda total: S.warmup_stable_decay(1.0, total, 100, 300)(steps))(totals)
    for row, total in zip(np.asarray(got), [500, 800, 1000, 4000]):
        want = ref_wsd(1.0, total, 100, 300)(np.asarray(steps, np.float64))
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-7)


def test_a_run_extended_and_shortened_without_recompiling_or_a_jump():
    """The jitted step takes ``total_steps`` as an argument: the budget moves
    from 1000 to 3000 (extended), then to 2000 (shortened) while the LR is in
    its stable phase; one trace, no jump, and the cooldown follows the last
    budget, as a fresh transformers schedule with that budget would."""
    traces = []

    @jax.jit
    def step(params, opt_state, total):
        traces.append(1)
        opt = fnopt.sgd(S.warmup_stable_decay(0.1, total, 50, 400))
        grads = jnp.ones_like(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, -updates[0]

    params = jnp.zeros(2, FLOAT)
    opt_state = fnopt.sgd(0.1).init(params)
    budgets = [1000] * 300 + [3000] * 900 + [2000] * 1100
    lrs = []
    for total in budgets:
        params, opt_state, lr = step(params, opt_state, jnp.int32(total))
        lrs.append(float(lr))
    assert len(traces) == 1
    lrs = np.asarray(lrs)
    # The switches happen in the stable phase of every budget involved: no jump.
    np.testing.assert_allclose(lrs[295:1600], 0.1, rtol=1e-6)
    # Warmup and cooldown are those of the budget in force.
    np.testing.assert_allclose(lrs[:300], ref_wsd(0.1, 1000, 50, 400)(np.arange(300.0)), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lrs[1200:], ref_wsd(0.1, 2000, 50, 400)(np.arange(1200.0, 2300.0)), rtol=1e-5, atol=1e-9)
    assert lrs[-1] == 0.0 and lrs[1599] == pytest.approx(0.1) and lrs[1700] < 0.1
