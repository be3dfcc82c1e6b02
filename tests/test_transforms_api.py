"""The transforms as JAX programs: vmap over hyperparameters, compile-once,
dtypes, validation, recorded hyperparameters, sharded clipping, wrappers'
contracts, Flax NNX."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transforms_problem import DTYPE, assert_close, loss_jax, params0, run_fnopt

import fnopt
from fnopt import schedules, transforms

STEPS = 25


def final_params(opt):
    """Un-jitted training loop (scan), so it can be vmapped."""

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss_jax)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    p = params0()
    return jax.lax.scan(step, (p, opt.init(p)), None, length=STEPS)[0][0]


def test_vmap_over_learning_rates_and_momenta_matches_separate_runs():
    lrs, momenta = [0.01, 0.03, 0.1, 0.05], [0.0, 0.5, 0.9, 0.8]
    batched = jax.jit(jax.vmap(lambda lr, m: final_params(fnopt.sgd(lr, momentum=m))))(
        jnp.asarray(lrs, DTYPE), jnp.asarray(momenta, DTYPE)
    )
    for i, (lr, m) in enumerate(zip(lrs, momenta)):
        separate = run_fnopt(fnopt.sgd(lr, momentum=m), STEPS)[-1]
        assert_close(np.concatenate([batched["w"][i], batched["b"][i]]), separate, rtol=1e-5, atol=1e-6)
    assert len({round(float(v), 4) for v in batched["w"][:, 0]}) == 4  # the members differ


def test_vmap_over_schedule_and_beta_matches_separate_runs():
    peaks, b1s = [0.02, 0.05, 0.1], [0.9, 0.8, 0.95]

    def make(peak, b1):
        return fnopt.adam(schedules.one_cycle(peak, STEPS), b1=b1)

    batched = jax.jit(jax.vmap(lambda peak, b1: final_params(make(peak, b1))))(
        jnp.asarray(peaks, DTYPE), jnp.asarray(b1s, DTYPE)
    )
    for i, (peak, b1) in enumerate(zip(peaks, b1s)):
        separate = run_fnopt(make(peak, b1), STEPS)[-1]
        assert_close(np.concatenate([batched["w"][i], batched["b"][i]]), separate, rtol=1e-5, atol=1e-6)


ALIASES = {
    "sgd": lambda lr: fnopt.sgd(lr, momentum=0.9, weight_decay=1e-4),
    "adam": lambda lr: fnopt.adam(lr, amsgrad=True),
    "adamw": lambda lr: fnopt.adamw(lr),
    "radam": lambda lr: fnopt.radam(lr),
    "adagrad": lambda lr: fnopt.adagrad(lr),
    "rmsprop": lambda lr: fnopt.rmsprop(lr, momentum=0.9, centered=True),
    "ranger": lambda lr: fnopt.ranger(lr),
}


@pytest.mark.parametrize("name", ALIASES)
def test_compiles_once_when_traced_learning_rate_changes(name):
    make = ALIASES[name]
    traces = []

    @jax.jit
    def step(params, state, lr):
        traces.append(1)
        opt = make(lr)
        updates, state = opt.update(jax.grad(loss_jax)(params), state, params, value=0.0)
        return optax.apply_updates(params, updates), state

    params = params0()
    state = make(0.1).init(params)
    seen = set()
    for lr in (0.1, 0.01, 0.05, 0.2):
        params, state = step(params, state, jnp.asarray(lr, DTYPE))
        seen.add(float(fnopt.hyperparams(state)["learning_rate"]))
    assert len(traces) == 1
    assert len(seen) == 4  # each call used its own learning rate


def test_scheduled_step_traced_once():
    opt = fnopt.sgd(schedules.one_cycle(0.1, 10), momentum=schedules.one_cycle_momentum(10))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(jax.grad(loss_jax)(params), state, params)
        return optax.apply_updates(params, updates), state

    params = params0()
    state = opt.init(params)
    for _ in range(5):
        params, state = step(params, state)
    assert int(state[-1].count) == 5


# ------------------------------------------------------------------ dtypes

BF16_ALIASES = {
    "sgd": lambda: fnopt.sgd(0.1, momentum=0.9, weight_decay=0.1),
    "adam": lambda: fnopt.adam(amsgrad=True, weight_decay=0.1),
    "adamw": lambda: fnopt.adamw(),
    "radam": lambda: fnopt.radam(),
    "adagrad": lambda: fnopt.adagrad(),
    "rmsprop": lambda: fnopt.rmsprop(momentum=0.9, centered=True),
    "ranger": lambda: fnopt.ranger(),
    "clip-skip": lambda: transforms.skip_nonfinite(fnopt.chain(transforms.clip_by_global_norm(1.0), fnopt.sgd(0.1))),
}


@pytest.mark.parametrize("name", BF16_ALIASES)
def test_bf16_params_give_bf16_updates_and_state(name):
    opt = BF16_ALIASES[name]()
    params = {"w": jnp.linspace(-1, 1, 5, dtype=jnp.bfloat16), "b": jnp.ones(2, jnp.bfloat16)}
    state = opt.init(params)
    for _ in range(3):
        grads = jax.tree.map(lambda p: p * p - 0.5, params)
        updates, state = jax.jit(opt.update)(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert all(np.all(np.isfinite(np.asarray(u, np.float32))) for u in jax.tree.leaves(updates))
    record_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    for leaf in jax.tree.leaves(state):
        if leaf.ndim:  # buffers: the params' dtype
            assert leaf.dtype == jnp.bfloat16
    assert all(v.dtype == record_dtype for v in fnopt.hyperparams(state).values())


def test_bf16_step_is_float32_arithmetic_rounded():
    g = jnp.asarray([0.3, -1.7, 2.5e-3], jnp.bfloat16)
    opt = fnopt.adam(0.1)
    low, _ = opt.update(g, opt.init(g), g)
    high, _ = opt.update(g.astype(jnp.float32), opt.init(g.astype(jnp.float32)), g.astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(low, np.float32), np.asarray(high.astype(jnp.bfloat16), np.float32))


def test_mu_dtype():
    params = jnp.ones(3, jnp.bfloat16)
    for tx in (transforms.scale_by_adam(mu_dtype=jnp.float32), transforms.scale_by_radam(mu_dtype=jnp.float32)):
        state = tx.init(params)
        assert (state.mu.dtype, state.nu.dtype) == (jnp.float32, jnp.bfloat16)
        updates, state = tx.update(params, state)
        assert (updates.dtype, state.mu.dtype) == (jnp.bfloat16, jnp.float32)
    tx = transforms.scale_by_momentum(0.9, mu_dtype=jnp.bfloat16)
    state = tx.init(jnp.ones(3, jnp.float32))
    updates, state = tx.update(jnp.ones(3, jnp.float32), state)
    assert (updates.dtype, state.trace.dtype) == (jnp.float32, jnp.bfloat16)


def test_float32_params_stay_float32_with_x64(x64_enabled):
    params = jnp.ones(2, jnp.float32)
    opt = fnopt.adam(schedules.cosine_decay(0.1, 10))
    updates, state = opt.update(params, opt.init(params), params)
    assert updates.dtype == jnp.float32
    assert fnopt.hyperparams(state)["learning_rate"].dtype == (jnp.float64 if x64_enabled else jnp.float32)


# -------------------------------------------------------------- validation

INNER = fnopt.sgd(0.1)
INVALID = [
    (lambda: transforms.scale_by_momentum(1.0), "`scale_by_momentum(momentum=...)` must be in [0, 1), got 1.0"),
    (lambda: transforms.scale_by_momentum(0.0, nesterov=True), "`scale_by_momentum(nesterov=True)` requires"),
    (lambda: transforms.scale_by_momentum(dampening=-0.1), "`scale_by_momentum(dampening=...)` must be in [0, 1]"),
    (lambda: transforms.scale_by_adam(b1=1.5), "`scale_by_adam(b1=...)` must be in [0, 1), got 1.5"),
    (lambda: transforms.scale_by_adam(b2=-0.5), "`scale_by_adam(b2=...)` must be in [0, 1)"),
    (lambda: transforms.scale_by_adam(eps=-1.0), "`scale_by_adam(eps=...)` must be >= 0"),
    (lambda: transforms.scale_by_radam(b2=1.0), "`scale_by_radam(b2=...)` must be in [0, 1)"),
    (lambda: transforms.scale_by_rms(alpha=2.0), "`scale_by_rms(alpha=...)` must be in [0, 1]"),
    (lambda: transforms.scale_by_rms(eps=-1.0), "`scale_by_rms(eps=...)` must be >= 0"),
    (lambda: transforms.scale_by_adagrad(-0.1), "`scale_by_adagrad(initial_accumulator_value=...)` must be >= 0"),
    (lambda: transforms.add_weight_decay(-1.0), "`add_weight_decay(weight_decay=...)` must be >= 0"),
    (lambda: transforms.add_decayed_weights(-1.0), "`add_decayed_weights(weight_decay=...)` must be >= 0"),
    (lambda: transforms.scale_by_learning_rate(-1.0), "`scale_by_learning_rate(learning_rate=...)` must be >= 0"),
    (lambda: transforms.clip_by_global_norm(0.0), "`clip_by_global_norm(max_norm=...)` must be > 0, got 0.0"),
    (lambda: transforms.lookahead(INNER, sync_period=0.5), "`lookahead(sync_period=...)` must be >= 1"),
    (lambda: transforms.lookahead(INNER, alpha=-0.1), "`lookahead(alpha=...)` must be in [0, 1]"),
    (lambda: transforms.skip_nonfinite(INNER, 0), "`skip_nonfinite(max_consecutive_skips=...)` must be >= 1"),
    (lambda: transforms.skip_nonfinite(INNER, lambda t: 3), "`skip_nonfinite(max_consecutive_skips=...)` must be a number"),
]


@pytest.mark.parametrize("make, message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_hyperparameters_raise(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "opt, call",
    [
        (transforms.lookahead(INNER), "lookahead"),
        (fnopt.ranger(), "lookahead"),
        (transforms.add_weight_decay(0.1), "add_weight_decay"),
        (fnopt.adamw(), "add_decayed_weights"),
    ],
)
def test_update_without_params_raises(opt, call):
    params = jnp.ones(2)
    with pytest.raises(ValueError, match=f"`{call}` needs the current params"):
        opt.update(params, opt.init(params))


# ------------------------------------------------------- recorded values


def one_cycle_np(t, total, up, down, pct=0.3):
    """torch OneCycleLR's two cosine phases written out: the independent oracle."""
    end_up, end_down = pct * total - 1, total - 1
    (start, end), frac = (up, t / end_up) if t <= end_up else (down, (t - end_up) / (end_down - end_up))
    return end + (start - end) / 2 * (math.cos(math.pi * frac) + 1)


def test_hyperparams_are_the_values_used_by_the_last_step():
    total, peak = 20, 0.1
    lr_phases = ((peak / 25, peak), (peak, peak / 25 / 1e4))
    momentum_phases = ((0.95, 0.85), (0.85, 0.95))
    opt = fnopt.sgd(
        schedules.one_cycle(peak, total),
        momentum=schedules.one_cycle_momentum(total),
        weight_decay=schedules.linear(0.1, 0.0, total),
    )
    params = params0()
    state = opt.init(params)
    logged = jax.jit(fnopt.hyperparams)
    np.testing.assert_allclose(logged(state)["learning_rate"], peak / 25, rtol=1e-6)  # at init: step 0
    step = jax.jit(lambda p, s: opt.update(jax.grad(loss_jax)(p), s, p))
    for k in range(1, 16):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        h, t = logged(state), k - 1  # t: the step that was just applied
        np.testing.assert_allclose(h["learning_rate"], one_cycle_np(t, total, *lr_phases), rtol=1e-5)
        np.testing.assert_allclose(h["momentum"], one_cycle_np(t, total, *momentum_phases), rtol=1e-5)
        np.testing.assert_allclose(h["weight_decay"], 0.1 * (1 - t / total), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(h["effective_learning_rate"], h["learning_rate"])


def test_count_saturates_and_updates_stay_finite():
    params = jnp.ones(2)
    opt = fnopt.adam(0.1)
    state = opt.init(params)
    near_max = jnp.asarray(2**31 - 2, jnp.int32)
    state = tuple(s._replace(count=near_max) for s in state)
    for _ in range(3):
        updates, state = opt.update(params, state, params)
    assert [int(s.count) for s in state] == [2**31 - 1] * 2
    assert np.all(np.isfinite(np.asarray(updates)))


# -------------------------------------------------------------- clipping


def test_clip_by_global_norm_with_axis_name_clips_by_the_global_norm():
    g = jnp.arange(1.0, 13.0, dtype=DTYPE)
    whole, _ = transforms.clip_by_global_norm(5.0).update(g, transforms.clip_by_global_norm(5.0).init(g))
    tx = transforms.clip_by_global_norm(5.0, axis_name="shard")
    shards = g.reshape(4, 3)
    clipped = jax.jit(jax.vmap(lambda s: tx.update(s, tx.init(s))[0], axis_name="shard"))(shards)
    assert_close(clipped.reshape(-1), whole, rtol=1e-6)
    assert_close(np.linalg.norm(np.asarray(whole)), 5.0, rtol=1e-6)
    # Without the psum each shard would be clipped by its own norm.
    local = jax.jit(jax.vmap(lambda s: transforms.clip_by_global_norm(5.0).update(s, tx.init(s))[0]))(shards)
    assert not np.allclose(local.reshape(-1), whole)


def test_clip_by_global_norm_keeps_small_gradients():
    g = {"a": jnp.asarray([0.3, 0.4], DTYPE)}
    tx = transforms.clip_by_global_norm(0.5)
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(out["a"], g["a"])


def mixed_tree(rng):
    """Leaves on both sides of the packing threshold, in two dtypes."""
    return {
        "big": jnp.asarray(rng.standard_normal((200, 100)), DTYPE),  # 20,000 elements: reduced alone
        "bias": jnp.asarray(rng.standard_normal(7), DTYPE),
        "scale": jnp.asarray(rng.standard_normal((3, 5)), DTYPE),
        "half": jnp.asarray(rng.standard_normal(9), jnp.bfloat16),
        "scalar": jnp.asarray(rng.standard_normal(()), DTYPE),
    }


def test_clip_by_global_norm_on_a_tree_of_large_small_and_bf16_leaves():
    g = mixed_tree(np.random.default_rng(0))
    as64 = {k: np.asarray(v.astype(jnp.float32), np.float64) for k, v in g.items()}
    norm = math.sqrt(sum(float(np.sum(v * v)) for v in as64.values()))
    tx = transforms.clip_by_global_norm(norm / 4)
    out, _ = jax.jit(tx.update)(g, tx.init(g))
    for k, v in out.items():
        assert v.dtype == g[k].dtype
        tol = 1e-2 if v.dtype == jnp.bfloat16 else 1e-6
        np.testing.assert_allclose(np.asarray(v.astype(jnp.float32), np.float64), as64[k] / 4, rtol=tol, atol=1e-7)


@pytest.mark.parametrize("where", ["big", "bias", "half", "scalar"])
def test_skip_nonfinite_sees_a_nan_in_any_leaf(where):
    g = mixed_tree(np.random.default_rng(1))
    g[where] = g[where].at[(0,) * g[where].ndim].set(jnp.nan)
    opt = transforms.skip_nonfinite(fnopt.sgd(0.1))
    updates, state = jax.jit(opt.update)(g, opt.init(g))
    assert int(state.total_skips) == 1
    assert all(np.all(np.asarray(u.astype(jnp.float32)) == 0) for u in jax.tree.leaves(updates))


# -------------------------------------------------------------- wrappers


def test_lookahead_with_alpha_one_is_the_inner_optimizer():
    inner = fnopt.adam(0.05)
    assert_close(run_fnopt(transforms.lookahead(inner, sync_period=3, alpha=1.0), STEPS), run_fnopt(inner, STEPS))


def test_lookahead_alpha_zero_returns_to_start_every_period():
    traj = run_fnopt(transforms.lookahead(fnopt.sgd(0.1), sync_period=4, alpha=0.0), 12)
    start = run_fnopt(fnopt.sgd(0.0), 1)[0]
    for t in (3, 7, 11):
        assert_close(traj[t], start)
    assert np.max(np.abs(traj[2] - start)) > 1e-2


def test_optax_keywords_pass_and_unknown_ones_raise_in_every_transform():
    """The keyword rule (fnopt/_chain.py): Optax's extra-argument names reach
    every transform (a sibling in an optax.chain may use them); a keyword no
    part of the transform uses is a TypeError naming it."""
    params = {"w": jnp.ones(3)}
    for tx in [
        transforms.scale_by_momentum(),
        transforms.scale_by_adagrad(),
        transforms.scale_by_rms(centered=True),
        transforms.scale_by_adam(),
        transforms.scale_by_radam(),
        transforms.add_weight_decay(0.1),
        transforms.add_decayed_weights(0.1),
        transforms.scale_by_learning_rate(0.1),
        transforms.clip_by_global_norm(1.0),
        transforms.lookahead(fnopt.sgd(0.1)),
        transforms.skip_nonfinite(fnopt.sgd(0.1)),
    ]:
        updates, _ = tx.update(params, tx.init(params), params, value=1.0, grad=params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        with pytest.raises(TypeError, match="unexpected keyword argument 'other'"):
            tx.update(params, tx.init(params), params, value=1.0, other="x")


def test_flax_nnx_optimizer_runs_fnopt_unchanged():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    x, y = jnp.ones((4, 3), jnp.float32), jnp.zeros((4, 1), jnp.float32)

    def loss(m):
        return jnp.mean((m(x) - y) ** 2)

    for tx in (fnopt.adam(0.05), fnopt.ranger(0.05)):
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        before = float(loss(model))
        for _ in range(8):
            optimizer.update(model, nnx.grad(loss)(model), value=0.0)
        assert float(loss(model)) < before


def test_eager_init_makes_no_copy_of_the_params(monkeypatch):
    """Outside ``jit`` the state buffers come from ``jnp.full_like`` (which keeps
    a committed array's sharding); ``shard_alike`` would also return a copy of
    every parameter, a params' worth of peak memory at init."""
    import fnopt._common as common

    def refuse(*args):
        raise AssertionError("shard_alike called eagerly")

    monkeypatch.setattr(common, "shard_alike", refuse)
    params = {"w": jnp.ones((4, 3), DTYPE), "b": jnp.zeros(3, DTYPE)}
    state = fnopt.adam().init(params)
    assert state[0].mu["w"].sharding == params["w"].sharding
    with pytest.raises(AssertionError, match="shard_alike"):
        jax.jit(fnopt.adam().init)(params)  # under jit it ties buffers to their params
