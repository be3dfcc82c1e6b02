"""Gradient accumulation (issue 11, item 6): ``accumulate_gradients(inner,
k)`` over ``k`` micro-batches equals ``inner`` on the ``k`` times larger
batch, step for step, with schedules counting real updates and a plateau /
early stopping deciding on the mean of the micro-step ``value=``s.

The oracle is the same optimizer run on the concatenated batch (with the
mean of the ``k`` values as its ``value=``), and hand-computed numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt import schedules as S
from fnopt import transforms as T

X64 = bool(jax.config.jax_enable_x64)
FLOAT = jnp.float64 if X64 else jnp.float32
TOL = {"rtol": 1e-9, "atol": 1e-11} if X64 else {"rtol": 2e-5, "atol": 2e-6}

K, BATCH, STEPS = 4, 8, 12  # micro-steps per update, micro-batch rows, real updates


def _problem(seed=0, steps=STEPS, k=K):
    """A small MLP regression: params and ``steps * k`` micro-batches."""
    rng = np.random.default_rng(seed)
    params = {
        "hidden": {"w": rng.normal(size=(3, 5)) / np.sqrt(3), "b": np.zeros(5)},
        "out": {"w": rng.normal(size=(5, 2)) / np.sqrt(5), "b": np.zeros(2)},
    }
    x = rng.normal(size=(steps * k, BATCH, 3))
    y = np.stack([np.sin(x[..., 0]) + x[..., 1], x[..., 2] ** 2], axis=-1)
    as_float = lambda a: jnp.asarray(a, FLOAT)  # noqa: E731
    return jax.tree.map(as_float, params), as_float(x), as_float(y)


def _loss(params, x, y):
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return jnp.mean((h @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


_grad = jax.jit(jax.grad(_loss))


# metric per micro-step: the mean over each cycle of K is exact in binary
# floating point (offsets sum to 0), improves, then plateaus; the offsets
# rotate so the last micro-step's value alone tells a different story.
CYCLE_MEANS = np.array([5.0, 4.0, 4.0, 4.0, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5])
OFFSETS = np.array([-0.75, 0.25, 1.0, -0.5])
VALUES = np.stack([CYCLE_MEANS[c] + np.roll(OFFSETS, c) for c in range(STEPS)])  # (STEPS, K)


def _chain(with_metrics: bool, lr=S.warmup(S.cosine_decay(0.05, STEPS), 3)):
    parts = [fnopt.adam(lr)]
    if with_metrics:
        parts += [T.reduce_on_plateau(factor=0.5, patience=1, threshold=0.0), T.early_stopping(patience=4)]
    return optax.chain(*parts)


def _reference(tx, params, x, y, values):
    """``tx`` on the concatenated batches, one update per cycle."""
    state, step = tx.init(params), jax.jit(tx.update)
    big_x, big_y = x.reshape(STEPS, -1, 3), y.reshape(STEPS, -1, 2)
    trajectory, records = [], []
    for t in range(STEPS):
        grads = _grad(params, big_x[t], big_y[t])
        extra = {} if values is None else {"value": jnp.asarray(values[t].mean(), FLOAT)}
        updates, state = step(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
        records.append(fnopt.hyperparams(state))
    return trajectory, records, state


@pytest.mark.parametrize("with_metrics", [False, True], ids=["schedule", "schedule+plateau+stopping"])
def test_equals_a_k_times_larger_batch_step_for_step(with_metrics):
    params, x, y = _problem()
    values = VALUES if with_metrics else None
    expected, expected_records, ref_state = _reference(_chain(with_metrics), params, x, y, values)

    tx = T.accumulate_gradients(_chain(with_metrics), K)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(STEPS):
        for j in range(K):
            grads = _grad(params, x[t * K + j], y[t * K + j])
            extra = {} if values is None else {"value": jnp.asarray(values[t, j], FLOAT)}
            updates, state = step(grads, state, params, **extra)
            if j < K - 1:  # a micro-step: exact zeros, in the params' dtype
                for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
                    assert u.dtype == p.dtype and np.all(np.asarray(u) == 0.0)
            params = optax.apply_updates(params, updates)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), params, expected[t])
        record = fnopt.hyperparams(state)
        assert record.pop("every_k") == K
        assert record.keys() == expected_records[t].keys()
        for name, v in expected_records[t].items():
            np.testing.assert_allclose(record[name], v, rtol=1e-6, err_msg=f"step {t}: {name}")
    assert int(state.count) == STEPS
    if with_metrics:  # the scenario exercises both decisions
        scales = [float(r["plateau_scale"]) for r in expected_records]
        assert scales[-1] < 1.0 and bool(fnopt.should_stop(ref_state))
        assert bool(fnopt.should_stop(state))


def test_schedules_count_real_updates():
    """The recorded learning rate is that of the ``t``-th real update
    (hand value ``0.1 * 0.5**t``) on every micro-step of its cycle."""
    k = 3
    tx = T.accumulate_gradients(fnopt.sgd(S.exponential_decay(0.1, 0.5), momentum=0.9), k)
    params = jnp.zeros(2, FLOAT)
    state, step = tx.init(params), jax.jit(tx.update)
    for i in range(4 * k):
        _, state = step(jnp.ones(2, FLOAT), state, params)
        real_updates = (i + 1) // k
        last = max(real_updates - 1, 0)
        np.testing.assert_allclose(fnopt.hyperparams(state)["learning_rate"], 0.1 * 0.5**last, rtol=1e-6)
        assert int(state.count) == real_updates == int(state.inner_state[1].count)
        assert int(state.micro_step) == (i + 1) % k


def test_mean_and_sum_by_hand():
    params = jnp.zeros(2, FLOAT)
    grads = [jnp.asarray(g, FLOAT) for g in ([1.0, 2.0], [3.0, -2.0], [2.0, 6.0])]
    for use_grad_mean, expected in ((True, [-0.2, -0.2]), (False, [-0.6, -0.6])):
        tx = T.accumulate_gradients(fnopt.sgd(0.1), 3, use_grad_mean=use_grad_mean)
        state = tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state)
        np.testing.assert_allclose(updates, expected, rtol=1e-6)
        assert not np.any(np.asarray(state.grad_sum))  # restarted


@jax.numpy_dtype_promotion("standard")
def test_optax_multisteps_only_passes_the_last_value():
    """The reason this wrapper exists: with values [5, 1] then [1, 3] the
    means are 3 then 2 (an improvement, no cut); ``optax.MultiSteps`` feeds
    the plateau 1 then 3 (worse: with ``patience=0`` a cut). (``MultiSteps``
    itself needs standard dtype promotion: it divides by an int32 count.)"""
    params = jnp.zeros(2, FLOAT)
    inner = lambda: optax.chain(fnopt.sgd(0.1), T.reduce_on_plateau(factor=0.5, patience=0))  # noqa: E731
    results = {}
    for name, tx in (("fnopt", T.accumulate_gradients(inner(), 2)), ("optax", optax.MultiSteps(inner(), 2))):
        state, step = tx.init(params), jax.jit(tx.update)
        for v in (5.0, 1.0, 1.0, 3.0):
            _, state = step(jnp.ones(2, FLOAT), state, params, value=v)
        results[name] = fnopt.hyperparams(state)
    assert float(results["fnopt"]["plateau_scale"]) == 1.0
    assert float(results["optax"]["plateau_scale"]) == 0.5
    # schedules inside MultiSteps count real updates too (its documented support)
    tx = optax.MultiSteps(fnopt.adam(S.exponential_decay(0.1, 0.5)), 2)
    state, step = tx.init(params), jax.jit(tx.update)
    for _ in range(6):
        _, state = step(jnp.ones(2, FLOAT), state, params)
    np.testing.assert_allclose(fnopt.hyperparams(state)["learning_rate"], 0.1 * 0.5**2, rtol=1e-6)


def _plateau(state) -> T.ReduceOnPlateauState:
    return state.inner_state[1]


def test_value_rules():
    """Micro-steps without ``value`` add nothing; a real update called
    without ``value`` passes none (the plateau observes nothing) and the
    values of its cycle go into the next mean."""
    params = jnp.zeros(2, FLOAT)
    tx = T.accumulate_gradients(optax.chain(fnopt.sgd(0.1), T.reduce_on_plateau()), 2)
    state = tx.init(params)
    g = jnp.ones(2, FLOAT)
    _, state = tx.update(g, state, value=1.0)
    _, state = tx.update(g, state)  # real, without value: nothing observed
    assert np.isinf(float(_plateau(state).best)) and int(state.value_count) == 1
    _, state = tx.update(g, state)  # micro-step without value
    _, state = tx.update(g, state, value=5.0)  # real: mean of 1 and 5
    assert float(_plateau(state).best) == 3.0
    assert int(state.value_count) == 0 and float(state.value_sum) == 0.0
    _, state = tx.update(g, state, value=2.0)
    _, state = tx.update(g, state, value=np.float32(1.0))  # any real scalar
    assert float(_plateau(state).best) == 1.5


def test_report_should_stop_and_hyperparams_reach_inside():
    params = {"w": jnp.zeros(3, FLOAT)}
    tx = T.accumulate_gradients(_chain(True, lr=0.1), 2)
    state = tx.init(params)
    state = fnopt.report(state, 1.0)
    for _ in range(5):
        state = fnopt.report(state, 2.0)
    assert bool(fnopt.should_stop(state))
    assert float(fnopt.hyperparams(state)["plateau_scale"]) == 0.25
    np.testing.assert_allclose(fnopt.hyperparams(state)["effective_learning_rate"], 0.025, rtol=1e-6)
    for _ in range(2):  # stopped: the real update is zero too
        updates, state = tx.update({"w": jnp.ones(3, FLOAT)}, state, params)
        assert not np.any(np.asarray(updates["w"]))


def test_scan_and_vmap_over_every_k_match_the_larger_batches():
    """One jitted scan over 8 micro-batches, ``vmap``-ed over a traced
    ``every_k`` in (1, 2, 4); member ``k`` equals Adam on the concatenation
    of each ``k`` consecutive micro-batches."""
    params, x, y = _problem(seed=1, steps=2)  # 8 micro-batches
    lr = S.exponential_decay(0.02, 0.9)

    @jax.jit
    def run(k):
        tx = T.accumulate_gradients(fnopt.adam(lr), k)

        def step(carry, batch):
            p, s = carry
            updates, s = tx.update(jax.grad(_loss)(p, *batch), s, p, value=_loss(p, *batch))
            return (optax.apply_updates(p, updates), s), None

        (p, s), _ = jax.lax.scan(step, (params, tx.init(params)), (x, y))
        return p, s.count

    ks = jnp.asarray([1, 2, 4], jnp.int32)
    final, counts = jax.vmap(run)(ks)
    for i, k in enumerate([1, 2, 4]):
        assert int(counts[i]) == 8 // k
        tx, p = fnopt.adam(lr), params
        state, step = tx.init(p), jax.jit(tx.update)
        for t in range(8 // k):
            rows = slice(t * k, (t + 1) * k)
            updates, state = step(_grad(p, x[rows].reshape(-1, 3), y[rows].reshape(-1, 2)), state, p)
            p = optax.apply_updates(p, updates)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, **TOL), final, p)


def test_compiles_once_per_shape():
    tx = T.accumulate_gradients(fnopt.adam(0.1), 3)
    traces = []

    @jax.jit
    def step(g, s):
        traces.append(None)
        return tx.update(g, s, value=jnp.sum(g))

    state = tx.init(jnp.zeros(4, FLOAT))
    for i in range(7):
        _, state = step(jnp.full(4, float(i), FLOAT), state)
    assert len(traces) == 1


def test_every_k_schedule_grows_the_cycles():
    """``every_k = 1 + count``: real updates after micro-steps 1, 3, 6, on
    the mean of their cycle."""
    tx = T.accumulate_gradients(fnopt.sgd(1.0), lambda count: 1 + count)
    state = tx.init(jnp.zeros(1, FLOAT))
    emitted = []
    for i in range(1, 7):
        updates, state = tx.update(jnp.asarray([float(i)], FLOAT), state)
        emitted.append(float(updates[0]))
    assert emitted == [-1.0, 0.0, -2.5, 0.0, 0.0, -5.0]
    assert float(fnopt.hyperparams(state)["every_k"]) == 3.0


def test_checkpoint_round_trip_continues_bit_identically():
    params, x, y = _problem(seed=2, steps=3)
    tx = T.accumulate_gradients(_chain(True), K)
    step = jax.jit(tx.update)

    def run(params, state, micro_steps):
        for i in micro_steps:
            updates, state = step(_grad(params, x[i], y[i]), state, params, value=VALUES[i // K, i % K])
            params = optax.apply_updates(params, updates)
        return params, state

    mid = run(params, tx.init(params), range(6))  # in the middle of a cycle
    leaves, treedef = jax.tree.flatten(mid)
    saved = [np.array(leaf) for leaf in leaves]  # what a checkpoint holds: plain arrays
    restored = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in saved])
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(mid[1]))
    a = run(*mid, range(6, 12))
    b = run(*restored, range(6, 12))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert u.dtype == v.dtype and np.array_equal(u, v)


def test_empty_params():
    """(fnopt's stateful optimizers on ``{}`` are item 3 of the issue; here an
    inner that already handles it.)"""
    tx = T.accumulate_gradients(optax.chain(optax.sgd(0.1, momentum=0.9), T.reduce_on_plateau()), 2)
    state = tx.init({})
    for _ in range(3):
        updates, state = jax.jit(tx.update)({}, state, {}, value=1.0)
    assert updates == {} and int(state.count) == 1 and float(_plateau(state).best) == 1.0


def test_state_dtypes(x64_enabled):
    bf16 = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = T.accumulate_gradients(fnopt.adam(0.1), 2)
    state = tx.init(bf16)
    assert state.grad_sum["w"].dtype == jnp.float32  # bf16 gradients are summed in float32
    updates, state = tx.update(bf16, state, bf16)
    assert updates["w"].dtype == jnp.bfloat16
    assert T.accumulate_gradients(fnopt.adam(0.1), 2, accumulator_dtype=jnp.bfloat16).init(bf16).grad_sum["w"].dtype == jnp.bfloat16
    wide = jnp.zeros(2, FLOAT)
    state = tx.init(wide)
    assert state.grad_sum.dtype == FLOAT  # float64 stays float64 under x64
    assert state.value_sum.dtype == FLOAT and state.count.dtype == state.micro_step.dtype == jnp.int32
    # a float32 sum keeps the bits bf16 running sums drop: 256 + 3 * 0.5
    grads = [jnp.asarray([g], jnp.bfloat16) for g in (256.0, 0.5, 0.5, 0.5)]
    for dtype, expected in ((None, -258.0), (jnp.bfloat16, -256.0)):  # bf16(257.5) = 258; 256 + 0.5 = 256 in bf16
        tx = T.accumulate_gradients(fnopt.sgd(1.0), 4, use_grad_mean=False, accumulator_dtype=dtype)
        state = tx.init(jnp.zeros(1, jnp.bfloat16))
        for g in grads:
            updates, state = tx.update(g, state)
        assert float(updates[0]) == expected


@pytest.mark.parametrize(
    "every_k",
    [0, -1, True, False, np.bool_(True), jnp.asarray(True), 2.0, 2.5, np.float32(3.0), "2", None,
     np.array([2, 3]), 2**31, float("nan")],
    ids=repr,
)
def test_invalid_every_k_raises(every_k):
    with pytest.raises(ValueError, match=r"^`accumulate_gradients\(every_k=\.\.\.\)`"):
        T.accumulate_gradients(fnopt.sgd(0.1), every_k)


def test_other_invalid_arguments_raise():
    with pytest.raises(ValueError, match=r"^`accumulate_gradients\(inner=\.\.\.\)`"):
        T.accumulate_gradients(fnopt.sgd, 2)
    with pytest.raises(ValueError, match=r"^`accumulate_gradients\(use_grad_mean=\.\.\.\)`"):
        T.accumulate_gradients(fnopt.sgd(0.1), 2, use_grad_mean="yes")
    for dtype in ("foo", jnp.int32):
        with pytest.raises(ValueError, match=r"^`accumulate_gradients\(accumulator_dtype=\.\.\.\)`"):
            T.accumulate_gradients(fnopt.sgd(0.1), 2, accumulator_dtype=dtype)
    with pytest.raises(ValueError, match=r"^`accumulate_gradients\(every_k=\.\.\.\)` must be an integer, got a traced bool"):
        jax.jit(lambda k: T.accumulate_gradients(fnopt.sgd(0.1), k).init(jnp.zeros(1)))(True)
    tx = T.accumulate_gradients(fnopt.sgd(0.1), 2)
    state = tx.init({"w": jnp.zeros((2, 3), FLOAT)})
    with pytest.raises(ValueError, match=r"^`accumulate_gradients\.update`: the updates at \['w'\] have shape \(3,\)"):
        tx.update({"w": jnp.ones(3, FLOAT)}, state)
    for bad in ("1.0", jnp.ones(2, FLOAT), True):
        with pytest.raises(ValueError, match=r"^`accumulate_gradients\.update\(value=\.\.\.\)`"):
            tx.update({"w": jnp.ones((2, 3), FLOAT)}, state, value=bad)


def test_skip_nonfinite_outside_drops_a_bad_micro_batch():
    tx = T.skip_nonfinite(T.accumulate_gradients(fnopt.sgd(1.0), 2))
    state = tx.init(jnp.zeros(1, FLOAT))
    emitted = []
    for g in (1.0, float("nan"), 3.0):
        updates, state = tx.update(jnp.asarray([g], FLOAT), state)
        emitted.append(float(updates[0]))
    assert emitted == [0.0, 0.0, -2.0] and int(state.total_skips) == 1
