"""Schedules under JAX transformations.

- ``jax.vmap`` over every numeric hyperparameter of every factory gives the
  values of separate scalar builds.
- A traced hyperparameter passed as a ``jit`` argument can change without a
  retrace; a jitted schedule compiles once for any step value.
- jit and no-jit, int and float steps, scalar and array steps agree.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sweeps

from fnopt import schedules as S

X64 = bool(jax.config.jax_enable_x64)
FLOAT = np.float64 if X64 else np.float32
RTOL = 1e-12 if X64 else 2e-6
# jit vs eager: XLA turns a division by a constant hyperparameter into a
# multiplication by its rounded reciprocal, and exp() amplifies that by |log|
# (exponential_range over 8 decades: ~18x), hence a few dozen ulps.
JIT_TOL = 32 * np.finfo(FLOAT).eps
cos = S.cosine_decay(1.0, 100)

# factory -> (build(**hyperparameters), scalar defaults, {name: grid})
GRIDS = {
    "constant": (S.constant, {"value": 0.3}, {"value": [0.1, -2.0, 7.5]}),
    "step_decay": (
        S.step_decay,
        {"init_value": 1.0, "step_size": 30, "gamma": 0.5},
        {"init_value": [0.1, 2.0], "step_size": [1, 7, 30], "gamma": [0.1, 0.9, 1.0]},
    ),
    "step_decay_fractional": (
        S.step_decay,
        {"init_value": 1.0, "step_size": 2.5, "gamma": 0.5},
        {"step_size": [0.5, 2.5, 33.25]},
    ),
    "multistep_decay": (
        S.multistep_decay,
        {"init_value": 1.0, "milestones": [10, 50], "gamma": 0.5},
        {"milestones": [[10, 50], [0, 0], [30, 5.5]], "gamma": [0.1, 0.99], "init_value": [0.5, 3.0]},
    ),
    "exponential_decay": (
        S.exponential_decay,
        {"init_value": 1.0, "gamma": 0.99, "min_value": 0.0},
        {"init_value": [0.1, 4.0], "gamma": [0.5, 0.999, 1.0], "min_value": [0.0, 0.05, 0.5]},
    ),
    "polynomial_decay": (
        S.polynomial_decay,
        {"init_value": 1.0, "total_steps": 100, "power": 2.0, "end_value": 0.01},
        {"init_value": [0.5, 2.0], "total_steps": [1, 50, 300], "power": [0.5, 1.0, 3.0], "end_value": [0.0, 0.1]},
    ),
    "polynomial_decay_cycle": (
        lambda **kw: S.polynomial_decay(cycle=True, **kw),
        {"init_value": 1.0, "total_steps": 30, "power": 2.0, "end_value": 0.01},
        {"init_value": [0.5, 2.0], "total_steps": [1, 30, 77.5], "power": [0.5, 1.0, 3.0], "end_value": [0.0, 0.1]},
    ),
    "inverse_sqrt": (
        S.inverse_sqrt,
        {"peak_value": 1.0, "warmup_steps": 100, "timescale": None},
        {"peak_value": [0.5, 2.0], "warmup_steps": [0, 1, 100, 37.5], "timescale": [1, 100, 5000.5]},
    ),
    **{
        f"inverse_time_decay-{staircase}": (
            lambda staircase=staircase, **kw: S.inverse_time_decay(staircase=staircase, **kw),
            {"init_value": 1.0, "decay_steps": 10, "decay_rate": 0.5},
            {"init_value": [0.1, 2.0], "decay_steps": [1, 10, 7.5], "decay_rate": [0.0, 0.5, 3.0]},
        )
        for staircase in (False, True)
    },
    **{
        f"warmup_stable_decay-{w}-{d}": (
            lambda w=w, d=d, **kw: S.warmup_stable_decay(warmup_shape=w, decay_shape=d, **kw),
            {"peak_value": 1.0, "total_steps": 300, "warmup_steps": 30, "decay_steps": 100, "min_value": 0.01},
            {
                "peak_value": [0.5, 2.0],
                "total_steps": [130, 300, 1000.5],
                "warmup_steps": [0, 1, 30, 17.5],
                "decay_steps": [0, 50, 100, 70.5],
                "min_value": [0.0, 0.1],
            },
        )
        for w, d in (("linear", "1-sqrt"), ("cosine", "cosine"), ("1-sqrt", "linear"))
    },
    "linear": (
        S.linear,
        {"start_value": 0.0, "end_value": 1.0, "total_steps": 100},
        {"start_value": [0.0, 2.0], "end_value": [1.0, -1.0], "total_steps": [1, 99.5, 300]},
    ),
    "cosine_decay": (
        S.cosine_decay,
        {"init_value": 1.0, "total_steps": 100, "min_value": 0.0, "exponent": 1.0},
        {"init_value": [0.1, 2.0], "total_steps": [3, 100, 250.5], "min_value": [0.0, 0.05], "exponent": [1.0, 0.5, 2.0]},
    ),
    "cosine_warm_restarts": (
        S.cosine_warm_restarts,
        {"init_value": 1.0, "first_period": 10, "period_mult": 2, "min_value": 0.01},
        {
            "init_value": [0.5, 2.0],
            "first_period": [1, 3, 10, 0.5],
            "period_mult": [1, 1.5, 2, 3],
            "min_value": [0.0, 0.1],
        },
    ),
    "linear_warm_restarts": (
        S.linear_warm_restarts,
        {"init_value": 1.0, "first_period": 10, "period_mult": 1, "min_value": 0.0},
        {"init_value": [0.5, 3.0], "first_period": [1, 7, 0.5], "period_mult": [1, 2, 1.25], "min_value": [0.0, 0.2]},
    ),
    "cyclic": (
        S.cyclic,
        {"base_value": 0.1, "max_value": 1.0, "step_size_up": 20, "step_size_down": 30, "mode": "exp_range", "gamma": 0.99},
        {
            "base_value": [0.0, 0.5],
            "max_value": [1.0, 2.0],
            "step_size_up": [1, 20, 7.5],
            "step_size_down": [0, 30, 12.5],
            "gamma": [0.9, 1.0],
        },
    ),
    "cyclic_momentum": (
        S.cyclic_momentum,
        {"base_value": 0.8, "max_value": 0.9, "step_size_up": 20, "step_size_down": None, "mode": "exp_range"},
        {
            "base_value": [0.7, 0.85],
            "max_value": [0.9, 0.99],
            "step_size_up": [1, 20, 45],
            "step_size_down": [0, 5, 20.5],
            "gamma": [0.95, 1.0],
        },
    ),
    "combined_cos": (
        S.combined_cos,
        {"total_steps": 200, "pct_start": 0.25, "start_value": 0.04, "peak_value": 1.0, "end_value": 1e-5},
        {
            "total_steps": [10, 200, 333.3],
            "pct_start": [0.0, 0.3, 0.9],
            "start_value": [0.0, 0.5],
            "peak_value": [1.0, 0.1],
            "end_value": [0.0, 0.95],
        },
    ),
    "warmup": (
        lambda warmup_steps, start_value, peak: S.warmup(S.cosine_decay(peak, 100), warmup_steps, start_value),
        {"warmup_steps": 20, "start_value": 0.0, "peak": 1.0},
        {"warmup_steps": [0, 1, 20, 37.5], "start_value": [0.0, 0.3], "peak": [0.5, 2.0]},
    ),
    "join": (
        lambda boundaries, level: S.join([S.linear(0.0, level, 10), level, S.exponential_decay(level, 0.9)], boundaries),
        {"boundaries": [10, 50], "level": 1.0},
        {"boundaries": [[10, 50], [0, 0], [30, 30], [5.5, 120]], "level": [0.5, 2.0]},
    ),
    "multiply": (
        lambda a, b: S.multiply(a, S.exponential_decay(b, 0.9), cos),
        {"a": 2.0, "b": 0.5},
        {"a": [0.1, 3.0], "b": [1.0, 0.25]},
    ),
    "exponential_range": (
        S.exponential_range,
        {"start_value": 1e-7, "end_value": 10.0, "num_steps": 100},
        {"start_value": [1e-7, 1.0], "end_value": [10.0, 1e-3], "num_steps": [1, 100, 250.5]},
    ),
}
# The shapes and the staircase change the formula, not the tracing: their
# variants vary the step counts only.
for _name in ("warmup_stable_decay-cosine-cosine", "warmup_stable_decay-1-sqrt-linear"):
    GRIDS[_name] = (GRIDS[_name][0], GRIDS[_name][1], {"total_steps": [130, 300, 1000.5], "decay_steps": [0, 50, 70.5]})
GRIDS["inverse_time_decay-True"][2].pop("init_value")
for _three_phase in (False, True):
    for _anneal in ("cos", "linear"):
        GRIDS[f"one_cycle-{_anneal}-{_three_phase}"] = (
            lambda anneal=_anneal, three_phase=_three_phase, **kw: S.one_cycle(anneal=anneal, three_phase=three_phase, **kw),
            {"max_value": 1.0, "total_steps": 100, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
            {
                "max_value": [0.1, 2.0],
                "total_steps": [1, 3, 100, 250],
                "pct_start": [0.05, 0.3, 0.5, 0.9],
                "div_factor": [1.0, 25.0, 1e3],
                "final_div_factor": [1.0, 1e4],
            },
        )
        if (_anneal, _three_phase) != ("cos", False):  # the phase structure is what varies
            GRIDS[f"one_cycle-{_anneal}-{_three_phase}"][2].pop("max_value")
            GRIDS[f"one_cycle-{_anneal}-{_three_phase}"][2].pop("final_div_factor")
        GRIDS[f"one_cycle_momentum-{_anneal}-{_three_phase}"] = (
            lambda anneal=_anneal, three_phase=_three_phase, **kw: S.one_cycle_momentum(
                anneal=anneal, three_phase=three_phase, **kw
            ),
            {"total_steps": 100, "pct_start": 0.3, "base_value": 0.85, "max_value": 0.95},
            {
                "total_steps": [2, 100, 250],
                "pct_start": [0.1, 0.3, 0.7],
                "base_value": [0.8, 0.9],
                "max_value": [0.95, 0.99],
            },
        )

CASES = [(name, param) for name, (_, _, grids) in GRIDS.items() for param in grids]
# The default run keeps these schedules of each sweep (tests/sweeps.py); CI runs every one.
KEEP = ("constant", "cosine_decay", "cosine_warm_restarts", "cyclic", "join", "one_cycle-cos-False",
        "warmup_stable_decay-linear-1-sqrt")
VMAP_KEEP = ("constant", "cosine_warm_restarts", "join", "warmup_stable_decay-linear-1-sqrt")  # 12 cases
STEPS = np.concatenate([np.arange(0, 400, 3), np.arange(0, 60, 0.75), [2**31 - 1]])


def as_grid(values, size=4):
    """A grid as an array in the default dtype (integer grids kept integer),
    cycled to ``size`` entries so that every vmap sees the same batch shape."""
    arr = np.asarray(values)
    arr = arr.astype(np.int32) if arr.dtype.kind == "i" else arr.astype(FLOAT)
    return arr[np.arange(size) % len(arr)]


def scalar_value(v):
    v = np.asarray(v)
    return v.tolist() if v.ndim else v.item()


@pytest.mark.parametrize("name,param", sweeps.sweep(CASES, VMAP_KEEP), ids=[f"{n}-{p}" for n, p in CASES])
def test_vmap_over_each_hyperparameter(name, param):
    build, defaults, grids = GRIDS[name]
    grid = as_grid(grids[param])
    steps = jnp.asarray(STEPS.astype(FLOAT))
    got = jax.vmap(lambda h: build(**{**defaults, param: h})(steps))(jnp.asarray(grid))
    want = np.stack([np.asarray(build(**{**defaults, param: scalar_value(g)})(steps)) for g in grid])
    scale = np.max(np.abs(want)) or 1.0
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=RTOL * scale * 1e-2, err_msg=f"{name}({param})")
    assert np.all(np.isfinite(np.asarray(got)))


@pytest.mark.parametrize("name", sweeps.sweep(sorted(GRIDS), KEEP))
def test_changing_traced_hyperparameters_does_not_retrace(name):
    """Every numeric hyperparameter as a jit argument: new values, same trace."""
    build, defaults, grids = GRIDS[name]
    traces = []

    @jax.jit
    def value(hyper, t):
        traces.append(1)
        return build(**{**defaults, **hyper})(t)

    steps = jnp.asarray(STEPS[:100].astype(FLOAT))
    for k in range(3):
        hyper = {param: as_grid(grid)[k] for param, grid in grids.items()}
        got = value({p: jnp.asarray(v) for p, v in hyper.items()}, steps)
        want = np.asarray(build(**{**defaults, **{p: scalar_value(v) for p, v in hyper.items()}})(steps))
        np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=1e-9 * (np.max(np.abs(want)) or 1.0))
    assert len(traces) == 1


@pytest.mark.parametrize("name", sweeps.sweep(sorted(GRIDS), KEEP))
def test_concrete_array_hyperparameters_of_mixed_dtypes(name):
    """int32 step counts next to float32 rates, as concrete arrays: the same
    values as Python scalars, under strict dtype promotion."""
    build, defaults, grids = GRIDS[name]
    steps = jnp.asarray(STEPS[:100].astype(FLOAT))
    for k in (1,):
        hyper = {param: as_grid(grid)[k] for param, grid in grids.items()}
        got = build(**{**defaults, **{p: jnp.asarray(v) for p, v in hyper.items()}})(steps)
        want = build(**{**defaults, **{p: scalar_value(v) for p, v in hyper.items()}})(steps)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=1e-9)


def test_mixed_dtype_lists_and_pairs():
    steps = jnp.arange(0, 200, 7)
    pairs = [
        (S.join([cos, 0.5, cos], [jnp.int32(10), jnp.float32(20.5)]), S.join([cos, 0.5, cos], [10, 20.5])),
        (S.join([cos, 0.5, cos], [jnp.int32(10), 20.5]), S.join([cos, 0.5, cos], [10, 20.5])),
        (S.multistep_decay(1.0, [jnp.int32(10), jnp.float32(20.5)]), S.multistep_decay(1.0, [10, 20.5])),
        (S.cyclic(0.1, 1.0, jnp.int32(20), jnp.float32(5.5)), S.cyclic(0.1, 1.0, 20, 5.5)),
        (S.cyclic_momentum(0.8, 0.9, jnp.float32(2.5), jnp.int32(5)), S.cyclic_momentum(0.8, 0.9, 2.5, 5)),
        (S.cosine_warm_restarts(1.0, jnp.int32(3), jnp.float32(1.5)), S.cosine_warm_restarts(1.0, 3, 1.5)),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(np.asarray(got(steps)), np.asarray(want(steps)), rtol=RTOL)
    traced = jax.jit(lambda up, down: S.cyclic(0.1, 1.0, up, down)(steps))(jnp.int32(20), jnp.float32(5.5))
    np.testing.assert_allclose(np.asarray(traced), np.asarray(pairs[3][1](steps)), rtol=RTOL)


# ------------------------------------------------------------------ jit and step types

SCHEDULES = {
    name: build(**defaults)
    for name, (build, defaults, _) in GRIDS.items()
    if name not in ("step_decay_fractional",)
}
NAMES = sorted(SCHEDULES)


@pytest.mark.parametrize("name", sweeps.sweep(NAMES, KEEP))
def test_int_float_scalar_and_array_steps_agree(name):
    sched = SCHEDULES[name]
    ints = np.array([0, 1, 2, 3, 10, 29, 30, 31, 99, 100, 101, 399, 1000, 12345, 2**24, 2**31 - 1])
    as_int = np.asarray(sched(jnp.asarray(ints, dtype=jnp.int32)))
    as_float = np.asarray(sched(jnp.asarray(ints.astype(FLOAT))))
    small = ints < 2**24  # float32 holds these exactly
    scale = np.max(np.abs(as_int)) or 1.0
    tol = dict(rtol=JIT_TOL, atol=JIT_TOL * scale)
    np.testing.assert_allclose(as_float[small], as_int[small], **tol)
    for i in (0, 8, 13):
        np.testing.assert_allclose(float(sched(int(ints[i]))), as_int[i], **tol)
        np.testing.assert_allclose(float(sched(float(ints[i]))), as_float[i], **tol)
        np.testing.assert_allclose(float(sched(np.int32(ints[i]))), as_int[i], **tol)
    assert np.asarray(sched(jnp.zeros((2, 3), jnp.int32))).shape == (2, 3)


@pytest.mark.parametrize("name", sweeps.sweep(NAMES, KEEP))
def test_jitted_schedule_compiles_once_and_agrees_with_eager(name):
    sched = SCHEDULES[name]
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def at(t):
        return sched(t)

    steps = [0, 1, 7, 30, 100, 101, 12345, 2**24 + 1, 2**31 - 1]
    jitted = np.array([float(at(jnp.int32(t))) for t in steps])
    eager = np.asarray(sched(jnp.asarray(steps, dtype=jnp.int32)))
    assert np.all(np.isfinite(jitted))
    np.testing.assert_allclose(jitted, eager, rtol=JIT_TOL, atol=JIT_TOL * (np.max(np.abs(eager)) or 1.0))


def test_schedule_in_a_scan_equals_direct_evaluation():
    sched = S.join([S.linear(0.0, 1.0, 10), S.one_cycle(1.0, 200)], [10])

    def body(count, _):
        return count + 1, sched(count)

    _, scanned = jax.lax.scan(body, jnp.int32(0), None, length=300)
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(sched(jnp.arange(300, dtype=jnp.int32))), rtol=RTOL)


def test_optax_count_drives_a_schedule():
    """A schedule is a plain ``count -> value`` function: Optax accepts it."""
    import optax

    sched = S.one_cycle(0.1, 50)
    opt = optax.sgd(sched)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    lrs = []
    for _ in range(5):
        updates, state = opt.update({"w": jnp.ones(3)}, state, params)
        lrs.append(-float(updates["w"][0]))
    np.testing.assert_allclose(lrs, np.asarray(sched(jnp.arange(5))), rtol=1e-6)
