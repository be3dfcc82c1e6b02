"""Construction-time validation of the schedule factories.

Concrete invalid hyperparameters raise ``ValueError`` naming the factory and
the argument; valid edge values are accepted; traced values (inside ``jit`` /
``vmap``) are not checked.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnopt import schedules as S

NAN, INF = float("nan"), float("inf")
cos = S.cosine_decay(1.0, 100)

# (call, expected message start: "factory(argument")
INVALID = [
    (lambda: S.constant(NAN), "constant(value"),
    (lambda: S.constant("0.1"), "constant(value"),
    (lambda: S.constant(None), "constant(value"),
    (lambda: S.step_decay(1.0, 0), "step_decay(step_size"),
    (lambda: S.step_decay(1.0, -3), "step_decay(step_size"),
    (lambda: S.step_decay(1.0, "10"), "step_decay(step_size"),
    (lambda: S.step_decay(1.0, 10, 0.0), "step_decay(gamma"),
    (lambda: S.step_decay(1.0, 10, 1.5), "step_decay(gamma"),
    (lambda: S.step_decay(1.0, 10, -0.1), "step_decay(gamma"),
    (lambda: S.step_decay(INF, 10), "step_decay(init_value"),
    (lambda: S.multistep_decay(1.0, [10, -1]), "multistep_decay(milestones"),
    (lambda: S.multistep_decay(1.0, 5), "multistep_decay(milestones"),
    (lambda: S.multistep_decay(1.0, [10, NAN]), "multistep_decay(milestones"),
    (lambda: S.multistep_decay(1.0, [10], 2.0), "multistep_decay(gamma"),
    (lambda: S.multistep_decay(NAN, [10]), "multistep_decay(init_value"),
    (lambda: S.exponential_decay(1.0, 0.0), "exponential_decay(gamma"),
    (lambda: S.exponential_decay(1.0, 1.01), "exponential_decay(gamma"),
    (lambda: S.exponential_decay(1.0, NAN), "exponential_decay(gamma"),
    (lambda: S.exponential_decay("1", 0.9), "exponential_decay(init_value"),
    (lambda: S.polynomial_decay(1.0, 0), "polynomial_decay(total_steps"),
    (lambda: S.polynomial_decay(1.0, -5), "polynomial_decay(total_steps"),
    (lambda: S.polynomial_decay(1.0, 10, 0.0), "polynomial_decay(power"),
    (lambda: S.polynomial_decay(1.0, 10, -1.0), "polynomial_decay(power"),
    (lambda: S.polynomial_decay(1.0, 10, 1.0, NAN), "polynomial_decay(end_value"),
    (lambda: S.linear(0.0, 1.0, 0), "linear(total_steps"),
    (lambda: S.linear(0.0, 1.0, -1.5), "linear(total_steps"),
    (lambda: S.linear(INF, 1.0, 10), "linear(start_value"),
    (lambda: S.linear(0.0, -INF, 10), "linear(end_value"),
    (lambda: S.cosine_decay(1.0, 0), "cosine_decay(total_steps"),
    (lambda: S.cosine_decay(1.0, INF), "cosine_decay(total_steps"),
    (lambda: S.cosine_decay(1.0, 10, NAN), "cosine_decay(min_value"),
    (lambda: S.cosine_warm_restarts(1.0, 0), "cosine_warm_restarts(first_period"),
    (lambda: S.cosine_warm_restarts(1.0, -10), "cosine_warm_restarts(first_period"),
    (lambda: S.cosine_warm_restarts(1.0, 10, 0.5), "cosine_warm_restarts(period_mult"),
    (lambda: S.cosine_warm_restarts(1.0, 10, 0), "cosine_warm_restarts(period_mult"),
    (lambda: S.cosine_warm_restarts(1.0, 10, NAN), "cosine_warm_restarts(period_mult"),
    (lambda: S.cosine_warm_restarts(NAN, 10), "cosine_warm_restarts(init_value"),
    (lambda: S.cosine_warm_restarts(1.0, 10, 2, INF), "cosine_warm_restarts(min_value"),
    (lambda: S.linear_warm_restarts(1.0, 0), "linear_warm_restarts(first_period"),
    (lambda: S.linear_warm_restarts(1.0, 10, 0.99), "linear_warm_restarts(period_mult"),
    (lambda: S.one_cycle(1.0, 0), "one_cycle(total_steps"),
    (lambda: S.one_cycle(1.0, -100), "one_cycle(total_steps"),
    (lambda: S.one_cycle(1.0, "100"), "one_cycle(total_steps"),
    (lambda: S.one_cycle(1.0, 100, 0.0), "one_cycle(pct_start"),
    (lambda: S.one_cycle(1.0, 100, 1.0), "one_cycle(pct_start"),
    (lambda: S.one_cycle(1.0, 100, 1.5), "one_cycle(pct_start"),
    (lambda: S.one_cycle(1.0, 100, -0.1), "one_cycle(pct_start"),
    (lambda: S.one_cycle(1.0, 100, NAN), "one_cycle(pct_start"),
    (lambda: S.one_cycle(1.0, 100, anneal="cosine"), "one_cycle(anneal"),
    (lambda: S.one_cycle(1.0, 100, div_factor=0.0), "one_cycle(div_factor"),
    (lambda: S.one_cycle(1.0, 100, final_div_factor=-1.0), "one_cycle(final_div_factor"),
    (lambda: S.one_cycle(NAN, 100), "one_cycle(max_value"),
    (lambda: S.one_cycle_momentum(0), "one_cycle_momentum(total_steps"),
    (lambda: S.one_cycle_momentum(100, 1.5), "one_cycle_momentum(pct_start"),
    (lambda: S.one_cycle_momentum(100, anneal="exp"), "one_cycle_momentum(anneal"),
    (lambda: S.one_cycle_momentum(100, base_value=NAN), "one_cycle_momentum(base_value"),
    (lambda: S.one_cycle_momentum(100, max_value="0.95"), "one_cycle_momentum(max_value"),
    (lambda: S.cyclic(0.1, 1.0, 0), "cyclic(step_size_up"),
    (lambda: S.cyclic(0.1, 1.0, -5), "cyclic(step_size_up"),
    (lambda: S.cyclic(0.1, 1.0, 10, -1), "cyclic(step_size_down"),
    (lambda: S.cyclic(0.1, 1.0, mode="triangle"), "cyclic(mode"),
    (lambda: S.cyclic(0.1, 1.0, mode="exp_range", gamma=0.0), "cyclic(gamma"),
    (lambda: S.cyclic(0.1, 1.0, mode="exp_range", gamma=1.5), "cyclic(gamma"),
    (lambda: S.cyclic(NAN, 1.0), "cyclic(base_value"),
    (lambda: S.cyclic(0.1, INF), "cyclic(max_value"),
    (lambda: S.cyclic_momentum(0.8, 0.9, 0), "cyclic_momentum(step_size_up"),
    (lambda: S.cyclic_momentum(0.8, 0.9, 10, -1), "cyclic_momentum(step_size_down"),
    (lambda: S.cyclic_momentum(0.8, 0.9, mode="exp"), "cyclic_momentum(mode"),
    (lambda: S.combined_cos(0, 0.25, 0.1, 1.0, 0.0), "combined_cos(total_steps"),
    (lambda: S.combined_cos(100, -0.1, 0.1, 1.0, 0.0), "combined_cos(pct_start"),
    (lambda: S.combined_cos(100, 1.5, 0.1, 1.0, 0.0), "combined_cos(pct_start"),
    (lambda: S.combined_cos(100, 0.25, NAN, 1.0, 0.0), "combined_cos(start_value"),
    (lambda: S.combined_cos(100, 0.25, 0.1, INF, 0.0), "combined_cos(peak_value"),
    (lambda: S.combined_cos(100, 0.25, 0.1, 1.0, "0"), "combined_cos(end_value"),
    (lambda: S.warmup(cos, -1), "warmup(warmup_steps"),
    (lambda: S.warmup(cos, NAN), "warmup(warmup_steps"),
    (lambda: S.warmup(cos, 10, NAN), "warmup(start_value"),
    (lambda: S.warmup("cos", 10), "warmup(schedule"),
    (lambda: S.warmup(NAN, 10), "warmup(schedule"),
    (lambda: S.join([cos, cos], []), "join(boundaries"),
    (lambda: S.join([cos, cos], [10, 20]), "join(boundaries"),
    (lambda: S.join([cos], [10]), "join(boundaries"),
    (lambda: S.join([], []), "join(schedules"),
    (lambda: S.join([cos, cos, cos], [20, 10]), "join(boundaries"),
    (lambda: S.join([cos, cos], [-1]), "join(boundaries"),
    (lambda: S.join([cos, cos], [NAN]), "join(boundaries"),
    (lambda: S.join([cos, "x"], [10]), "join(schedules[1]"),
    (lambda: S.multiply(), "multiply("),
    (lambda: S.multiply(cos, "x"), "multiply(schedules[1]"),
    (lambda: S.multiply(INF), "multiply(schedules[0]"),
    (lambda: S.exponential_range(0.0, 1.0, 10), "exponential_range(start_value"),
    (lambda: S.exponential_range(1e-7, -1.0, 10), "exponential_range(end_value"),
    (lambda: S.exponential_range(1e-7, 10.0, 0), "exponential_range(num_steps"),
    (lambda: S.exponential_range(1e-7, 10.0, NAN), "exponential_range(num_steps"),
    (lambda: S.exponential_decay(1.0, 0.9, NAN), "exponential_decay(min_value"),
    (lambda: S.polynomial_decay(1.0, 10, cycle="yes"), "polynomial_decay(cycle"),
    (lambda: S.cosine_decay(1.0, 10, exponent=0.0), "cosine_decay(exponent"),
    (lambda: S.cosine_decay(1.0, 10, exponent=-1.0), "cosine_decay(exponent"),
    (lambda: S.cosine_decay(1.0, 10, exponent=INF), "cosine_decay(exponent"),
    (lambda: S.warmup_stable_decay(NAN, 100, 10, 10), "warmup_stable_decay(peak_value"),
    (lambda: S.warmup_stable_decay(1.0, -1, 0, 0), "warmup_stable_decay(total_steps"),
    (lambda: S.warmup_stable_decay(1.0, 100, -10, 10), "warmup_stable_decay(warmup_steps"),
    (lambda: S.warmup_stable_decay(1.0, 100, 10, "10"), "warmup_stable_decay(decay_steps"),
    (lambda: S.warmup_stable_decay(1.0, 100, 60, 50), "warmup_stable_decay(total_steps"),
    (lambda: S.warmup_stable_decay(1.0, 100, 0, 100.5), "warmup_stable_decay(total_steps"),
    (lambda: S.warmup_stable_decay(1.0, 100, 10, 10, warmup_shape="sqrt"), "warmup_stable_decay(warmup_shape"),
    (lambda: S.warmup_stable_decay(1.0, 100, 10, 10, decay_shape="cos"), "warmup_stable_decay(decay_shape"),
    (lambda: S.warmup_stable_decay(1.0, 100, 10, 10, min_value=INF), "warmup_stable_decay(min_value"),
    (lambda: S.inverse_sqrt(NAN, 10), "inverse_sqrt(peak_value"),
    (lambda: S.inverse_sqrt(1.0, -1), "inverse_sqrt(warmup_steps"),
    (lambda: S.inverse_sqrt(1.0, 10, 0), "inverse_sqrt(timescale"),
    (lambda: S.inverse_sqrt(1.0, 10, "100"), "inverse_sqrt(timescale"),
    (lambda: S.inverse_time_decay(INF, 10, 0.5), "inverse_time_decay(init_value"),
    (lambda: S.inverse_time_decay(1.0, 0, 0.5), "inverse_time_decay(decay_steps"),
    (lambda: S.inverse_time_decay(1.0, 10, -0.5), "inverse_time_decay(decay_rate"),
    (lambda: S.inverse_time_decay(1.0, 10, 0.5, staircase=1), "inverse_time_decay(staircase"),
    (lambda: S.swa(NAN, 0.1), "swa(init_value"),
    (lambda: S.swa(0.1, "0.1"), "swa(swa_value"),
    (lambda: S.swa(0.1, 0.05, -1), "swa(anneal_steps"),
    (lambda: S.swa(0.1, 0.05, 10, anneal="cosine"), "swa(anneal"),
]


def _id(case):
    return case[1] + ")"


@pytest.mark.parametrize("make,where", INVALID, ids=[_id(c) for c in INVALID])
def test_invalid_hyperparameters_raise(make, where):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert message.startswith("`" + where), message


def test_every_factory_is_validated():
    named = {where.split("(")[0] for _, where in INVALID}
    assert named == set(S.__all__) - {"Schedule"}


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: S.one_cycle(1.0, 100, 1.5), "`one_cycle(pct_start=...)` must be in (0, 1), got 1.5"),
        (lambda: S.step_decay(1.0, 10, 2.0), "`step_decay(gamma=...)` must be in (0, 1], got 2.0"),
        (lambda: S.cosine_warm_restarts(1.0, 10, 0.5), "`cosine_warm_restarts(period_mult=...)` must be >= 1, got 0.5"),
        (lambda: S.linear(0.0, 1.0, 0), "`linear(total_steps=...)` must be > 0, got 0"),
        (lambda: S.cyclic(0.1, 1.0, mode="up"), "`cyclic(mode=...)` must be one of 'triangular', 'triangular2', "
         "'exp_range', got 'up'"),
    ],
)
def test_messages_say_what_was_expected_and_what_came(make, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        make()


def test_array_hyperparameters_are_checked_elementwise():
    with pytest.raises(ValueError, match=r"^`one_cycle\(pct_start=\.\.\.\)`"):
        S.one_cycle(1.0, 100, np.array([0.3, 1.2]))
    with pytest.raises(ValueError, match=r"^`cosine_decay\(total_steps=\.\.\.\)`"):
        S.cosine_decay(1.0, jnp.array([10.0, 0.0]))
    with pytest.raises(ValueError, match=r"^`join\(boundaries=\.\.\.\)`"):
        S.join([cos, cos, cos], np.array([30, 20]))


VALID_EDGES = [
    lambda: S.step_decay(1.0, 0.5, 1.0),
    lambda: S.multistep_decay(1.0, []),
    lambda: S.multistep_decay(1.0, [0, 0, 5]),
    lambda: S.multistep_decay(1.0, np.array([3, 7])),
    lambda: S.exponential_decay(1.0, 1.0),
    lambda: S.polynomial_decay(1.0, 1e-3, 1e-3),
    lambda: S.linear(-1.0, 1.0, 1e-6),
    lambda: S.cosine_decay(-1.0, 1),
    lambda: S.cosine_warm_restarts(1.0, 1e-3, 1.0),
    lambda: S.linear_warm_restarts(1.0, 7, 1.0000001),
    lambda: S.one_cycle(1.0, 1, 1e-6),
    lambda: S.one_cycle(1.0, 1, 0.999999, "linear", three_phase=True),
    lambda: S.one_cycle_momentum(1, 0.5, 0.95, 0.85),
    lambda: S.cyclic(0.1, 1.0, 1e-3, 0, "exp_range", 1.0),
    lambda: S.cyclic_momentum(0.8, 0.9, 1, 0.0, "triangular2"),
    lambda: S.combined_cos(1, 0.0, 0.0, 0.0, 0.0),
    lambda: S.combined_cos(1, 1.0, 0.0, 1.0, 0.0),
    lambda: S.warmup(cos, 0),
    lambda: S.warmup(0.1, 10.5, -1.0),
    lambda: S.join([cos], []),
    lambda: S.join([cos, 0.1, cos], [10, 10]),
    lambda: S.join([cos, 0.1], [0]),
    lambda: S.multiply(cos),
    lambda: S.multiply(2.0, cos, 0.5),
    lambda: S.exponential_range(10.0, 1e-7, 0.5),
    lambda: S.exponential_decay(-1.0, 0.5, -0.1),
    lambda: S.polynomial_decay(1.0, 1e-3, 2.0, 0.5, True),
    lambda: S.cosine_decay(1.0, 10, 0.0, 1e-3),
    lambda: S.warmup_stable_decay(1.0, 0, 0, 0),
    lambda: S.warmup_stable_decay(1.0, 100, 40, 60, min_value=2.0),
    lambda: S.warmup_stable_decay(1.0, 0.5, 0.25, 0.25, warmup_shape="1-sqrt", decay_shape="cosine"),
    lambda: S.inverse_sqrt(1.0, 0),
    lambda: S.inverse_sqrt(1.0, 0.5, 1e-3),
    lambda: S.inverse_time_decay(1.0, 1e-3, 0.0, staircase=True),
]


@pytest.mark.parametrize("make", VALID_EDGES)
def test_valid_edge_values_build_finite_schedules(make):
    sched = make()
    v = np.asarray(sched(jnp.array([0, 1, 10, 2**31 - 1], dtype=jnp.int32)))
    assert np.all(np.isfinite(v))
    assert math.isfinite(float(sched(0.5)))


# (build from one traced argument, an invalid value for it)
TRACED_INVALID = [
    (lambda g: S.exponential_decay(1.0, g), 1.5),
    (lambda g: S.step_decay(1.0, 10, g), 0.0),
    (lambda n: S.step_decay(1.0, n), -5.0),
    (lambda m: S.multistep_decay(1.0, m), jnp.array([-1.0, 5.0])),
    (lambda n: S.polynomial_decay(1.0, n), 0.0),
    (lambda n: S.linear(0.0, 1.0, n), -10.0),
    (lambda n: S.cosine_decay(1.0, n), -10.0),
    (lambda m: S.cosine_warm_restarts(1.0, 10, m), 0.5),
    (lambda t0: S.linear_warm_restarts(1.0, t0), -2.0),
    (lambda p: S.one_cycle(1.0, 100, p), 1.5),
    (lambda n: S.one_cycle(1.0, n), -100.0),
    (lambda d: S.one_cycle(1.0, 100, div_factor=d), -25.0),
    (lambda p: S.one_cycle_momentum(100, p), -0.5),
    (lambda s: S.cyclic(0.1, 1.0, s), -10.0),
    (lambda g: S.cyclic_momentum(0.8, 0.9, 10, mode="exp_range", gamma=g), 2.0),
    (lambda p: S.combined_cos(100, p, 0.1, 1.0, 0.0), 1.5),
    (lambda w: S.warmup(cos, w), -3.0),
    (lambda b: S.join([cos, cos, cos], b), jnp.array([20.0, 10.0])),
    (lambda v: S.constant(v), jnp.nan),
    (lambda s: S.exponential_range(s, 1.0, 10), -1.0),
    (lambda n: S.warmup_stable_decay(1.0, n, 10, 10), 5.0),
    (lambda w: S.inverse_sqrt(1.0, w), -5.0),
    (lambda r: S.inverse_time_decay(1.0, 10, r), -0.5),
    (lambda e: S.cosine_decay(1.0, 10, exponent=e), 0.0),
]


@pytest.mark.parametrize("build,bad", TRACED_INVALID)
def test_traced_values_are_not_checked(build, bad):
    out = jax.jit(lambda h: build(h)(jnp.arange(4)))(bad)  # no ValueError while tracing
    assert out.shape == (4,)


def test_traced_invalid_values_reach_the_math():
    """Not checked means computed: the formula runs on the traced value."""
    got = jax.jit(lambda g: S.exponential_decay(2.0, g)(3))(1.5)
    np.testing.assert_allclose(float(got), 2.0 * 1.5**3, rtol=1e-6)
    grid = jax.vmap(lambda p: S.one_cycle(1.0, 100, p)(10))(jnp.array([0.3, 1.5]))  # under vmap too
    assert grid.shape == (2,)
