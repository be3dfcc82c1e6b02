"""``fnopt.apply_gradients`` (issue 15): the whole step, update and apply.

It must equal ``tx.update`` + ``optax.apply_updates`` for every ``tx``, with
the fused kernel off (that is its definition) and on (the whole-step kernel
for adam / adamw / sgd(momentum), which updates params and moments in place).
The two-line path is itself checked against Optax and torch elsewhere; here
Optax's ``adam`` / ``adamw`` / ``sgd`` are also used directly as oracles for the
kernel's step. Kernel tests skip where no kernel can be built.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sweeps

import fnopt
import fnopt.flax
from fnopt import _fused, schedules, transforms

X64 = bool(jax.config.jax_enable_x64)
KERNEL = jax.default_backend() == "cpu" and jax.device_count() == 1 and _fused._library() is not None
needs_kernel = pytest.mark.skipif(not KERNEL, reason="no fused kernel here (no C++ compiler, or not one CPU)")
RTOL = {"float32": 2e-6, "float64": 1e-12, "bfloat16": 1e-2}  # relative to the leaf's largest value


def tree(seed=0, extra=True):
    rng = np.random.default_rng(seed)

    def arr(shape, dtype=np.float32):
        return jnp.asarray(rng.standard_normal(shape), dtype)

    t = {"w": arr((7, 5)), "b": arr((5,)), "s": arr(()), "big": arr((300, 700)), "deep": [arr((3, 2)), arr((64,))]}
    if extra:  # leaves the kernel does not take, in the same step
        t.update(empty=arr((0, 3)), none=None, half=arr((6,), jnp.bfloat16))
        if X64:
            t["w64"] = arr((4, 3), np.float64)
    return t


def grads_at(params, t):
    return jax.tree.map(lambda p: jnp.sin(p * jnp.asarray(t + 1, p.dtype) + 0.5).astype(p.dtype), params)


def two_lines(tx):
    def step(p, s, t, **kw):
        u, s = tx.update(grads_at(p, t), s, p, **kw)
        return optax.apply_updates(p, u), s
    return step


def whole(tx):
    def step(p, s, t, **kw):
        return fnopt.apply_gradients(tx, grads_at(p, t), s, p, **kw)
    return step


def run(step_of, tx, params, steps=8, jit=True):
    step = step_of(tx)
    if jit:
        step = jax.jit(step, donate_argnums=(0, 1))
    state = tx.init(params)
    params = jax.tree.map(jnp.copy, params)
    for t in range(steps):
        params, state = step(params, state, t)
    return params, state


def assert_trees_close(a, b, rtol=None):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = np.max(np.abs(y64)) if y64.size else 0.0
        tol = {**RTOL, **(rtol or {})}.get(str(x.dtype), 0.0) * max(scale, 1e-30)  # counts: exact
        np.testing.assert_allclose(x64, y64, rtol=0, atol=tol)


def hlo(tx, params):
    state = tx.init(params)
    return jax.jit(whole(tx)).lower(params, state, 0).compile().as_text()


CONFIGS = {
    "adam": lambda: fnopt.adam(1e-2),
    "adam coupled decay, maximize": lambda: fnopt.adam(1e-2, weight_decay=0.1, maximize=True),
    "adamw scheduled lr and b1": lambda: fnopt.adamw(schedules.one_cycle(1e-2, 10), b1=schedules.one_cycle_momentum(10),
                                                     weight_decay=0.05),
    "adamw traced lr": lambda: fnopt.adamw(jnp.asarray(3e-3), weight_decay=jnp.asarray(0.1)),
    "sgd momentum": lambda: fnopt.sgd(0.05, momentum=0.9),
    "sgd nesterov, decay": lambda: fnopt.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "sgd dampening, maximize": lambda: fnopt.sgd(schedules.cosine_decay(0.05, 10), momentum=0.8, dampening=0.3,
                                                 maximize=True),
}


CONFIG_MODES = sweeps.kernel_modes(CONFIGS, ("adam", "sgd momentum"))


@pytest.mark.parametrize("name,mode", CONFIG_MODES)
def test_equals_update_then_apply(name, mode, monkeypatch):
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    expected = run(two_lines, CONFIGS[name](), tree())
    got = run(whole, CONFIGS[name](), tree())
    assert_trees_close(got, expected)


@needs_kernel
@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernel_is_the_step(name, monkeypatch):
    """With the kernel on, the float32 leaves' params and moments come from
    the whole-step kernel: its custom call is in the program."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    kind = "adam_step" if "adam" in name else "momentum_step"
    assert f"fnopt_{kind}_f32" in hlo(CONFIGS[name](), tree())


@needs_kernel
@pytest.mark.parametrize("make, reference", [
    (lambda: fnopt.adam(1e-2), lambda: optax.adam(1e-2)),
    (lambda: fnopt.adamw(1e-2, weight_decay=0.1), lambda: optax.adamw(1e-2, weight_decay=0.1)),
    (lambda: fnopt.sgd(0.05, momentum=0.9), lambda: optax.sgd(0.05, momentum=0.9)),
    (lambda: fnopt.sgd(0.05, momentum=0.9, nesterov=True), lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
])
def test_kernel_step_against_optax(make, reference, monkeypatch):
    """An independent oracle: Optax's own optimizer, step for step (without
    dampening, torch's buffer ``b_0 = g_0`` and Optax's ``trace = g + m * 0``
    agree)."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = tree(extra=False)
    got, _ = run(whole, make(), params, steps=6)
    with jax.numpy_dtype_promotion("standard"):  # Optax itself mixes Python scalars and int32 counts
        expected, _ = run(two_lines, reference(), params, steps=6)
    assert_trees_close(got, expected, rtol={"float32": 1e-5, "float64": 1e-10})


@needs_kernel
@pytest.mark.parametrize("make", [
    lambda: fnopt.adam({"w": 1e-2, "b": 1e-3, "s": 1e-2, "big": 1e-2, "deep": 1e-2}),  # param groups
    pytest.param(lambda: fnopt.adamw(1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)), marks=pytest.mark.slow),
    lambda: fnopt.adam(1e-2, amsgrad=True),
    pytest.param(lambda: fnopt.adam(1e-2, eps=0.0), marks=pytest.mark.slow),
    pytest.param(lambda: fnopt.sgd(0.1), marks=pytest.mark.slow),
    lambda: optax.chain(fnopt.adam(1e-2)),
    pytest.param(lambda: fnopt.rmsprop(1e-2), marks=pytest.mark.slow),
    lambda: fnopt.chain(transforms.clip_by_global_norm(1.0), fnopt.adamw(1e-3)),
])
def test_other_optimizers_take_update_then_apply(make, monkeypatch):
    """Without a whole-step route: no whole-step kernel, the same result as the two lines."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = tree(extra=False)
    assert "_step_f32" not in hlo(make(), params)
    assert_trees_close(run(whole, make(), params, steps=4), run(two_lines, make(), params, steps=4))


@needs_kernel
def test_chunks_and_dtype_groups(monkeypatch):
    """Several kernel calls (64 leaves per call by default; 2 here) and a
    bfloat16 state (nu_dtype) that sends every leaf back to XLA."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    monkeypatch.setattr(_fused, "CHUNK", 2)
    params = tree()
    text = hlo(fnopt.adam(1e-2), params)
    assert text.count("fnopt_adam_step_f32") == 3  # 6 float32 leaves in calls of 2
    assert_trees_close(run(whole, fnopt.adam(1e-2), params), run(two_lines, fnopt.adam(1e-2), params))
    low = lambda: fnopt.adamw(1e-2, mu_dtype=jnp.bfloat16)  # noqa: E731
    assert "_step_f32" not in hlo(low(), params)
    assert_trees_close(run(whole, low(), params), run(two_lines, low(), params))


@needs_kernel
def test_without_jit_vmap_and_grad(monkeypatch):
    """Eager, a vmapped batch of runs (the kernel's jnp fallback), and a
    gradient through the step (jvp falls back too)."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = tree(extra=False)
    assert_trees_close(run(whole, fnopt.adamw(1e-2), params, steps=2, jit=False),
                       run(two_lines, fnopt.adamw(1e-2), params, steps=2, jit=False))
    tx = fnopt.sgd(0.05, momentum=0.9, nesterov=True)
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x, -x]), params)

    def one(p):
        s = tx.init(p)
        p, s = whole(tx)(p, s, 0)
        return whole(tx)(p, s, 1)

    def ref(p):
        s = tx.init(p)
        p, s = two_lines(tx)(p, s, 0)
        return two_lines(tx)(p, s, 1)

    assert_trees_close(jax.jit(jax.vmap(one))(batch), jax.jit(jax.vmap(ref))(batch))

    def loss(step, scale):
        p = jax.tree.map(lambda x: x * scale, params)
        p, _ = step(fnopt.adam(1e-2))(p, fnopt.adam(1e-2).init(p), 0)
        return sum(jnp.sum(x) for x in jax.tree.leaves(p))

    # jit-compiled: the jvp fallback is the same, and eager it costs seconds of op-by-op dispatch
    np.testing.assert_allclose(jax.jit(jax.grad(lambda c: loss(whole, c)))(1.0),
                               jax.jit(jax.grad(lambda c: loss(two_lines, c)))(1.0), rtol=1e-5)


@pytest.mark.parametrize("mode", ["0", "1"])
def test_extra_arguments_and_keyword_rule(mode, monkeypatch):
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    params = tree(extra=False)
    tx = fnopt.chain(fnopt.adam(1e-2), transforms.reduce_on_plateau(patience=0, factor=0.5))
    state = tx.init(params)
    for t, v in enumerate([1.0, 2.0, 3.0]):
        params, state = fnopt.apply_gradients(tx, grads_at(params, t), state, params, value=v)
    assert float(fnopt.hyperparams(state)["plateau_scale"]) < 1.0
    with pytest.raises(TypeError, match="vlaue"):
        fnopt.apply_gradients(fnopt.adam(1e-2), grads_at(params, 0), fnopt.adam(1e-2).init(params), params, vlaue=1.0)


def test_params_none_is_an_error():
    tx = fnopt.adam(1e-2)
    with pytest.raises(ValueError, match=r"apply_gradients\(params=None\)"):
        fnopt.apply_gradients(tx, {"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}), None)


def test_empty_tree():
    tx = fnopt.adam(1e-2)
    params, _ = fnopt.apply_gradients(tx, {}, tx.init({}), {})
    assert params == {}


@pytest.mark.parametrize("mode", ["0", "1"])
def test_flax_train_state(mode, monkeypatch):
    """``fnopt.flax.TrainState.apply_gradients`` is ``fnopt.apply_gradients``."""
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    model = nn.Dense(3)
    params = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.float32))["params"]
    tx = fnopt.adamw(1e-2, weight_decay=0.1)
    state = fnopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    grads = grads_at(params, 0)
    step = jax.jit(lambda s, g: s.apply_gradients(grads=g))
    new = step(state, grads)
    u, expected_state = tx.update(grads, tx.init(params), params)
    assert_trees_close(new.params, optax.apply_updates(params, u))
    assert_trees_close(new.opt_state, expected_state)
    assert int(new.step) == 1
    if mode == "1":
        assert "fnopt_adam_step_f32" in jax.jit(lambda s, g: s.apply_gradients(grads=g)).lower(state, grads).compile().as_text()


@needs_kernel
def test_default_is_whole_steps_only(monkeypatch):
    """FNOPT_FUSED unset: ``apply_gradients`` takes the whole-step kernel,
    ``tx.update`` keeps XLA's program; ``0`` switches both off, ``auto`` both on."""
    params = tree(extra=False)
    tx = fnopt.adam(1e-2)

    def update_hlo():
        return jax.jit(two_lines(tx)).lower(params, tx.init(params), 0).compile().as_text()

    monkeypatch.delenv("FNOPT_FUSED", raising=False)
    assert "fnopt_adam_step_f32" in hlo(tx, params)
    assert "fnopt_" not in update_hlo()
    assert "whole steps only" in _fused.status()
    monkeypatch.setenv("FNOPT_FUSED", "0")
    assert "fnopt_" not in hlo(tx, params)
    monkeypatch.setenv("FNOPT_FUSED", "auto")
    assert "fnopt_adam_f32" in update_hlo() and "fnopt_adam_step_f32" in hlo(tx, params)
    assert _fused.status() == "on"


@pytest.mark.parametrize("tx", [None, True, "adam", 0.1, jnp.ones(2)])
def test_not_a_transformation_is_an_error(tx):
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"fnopt.apply_gradients\(tx=...\)"):
        fnopt.apply_gradients(tx, params, (), params)


WRAPPED = {
    "partition": lambda: optax.partition({"a": fnopt.adamw(1e-2), "b": fnopt.sgd(0.05, momentum=0.9)},
                                         lambda p: {k: ("a" if k in ("w", "big") else "b") for k in p}),
    "masked": lambda: optax.masked(fnopt.adam(1e-2), lambda p: {k: k != "b" for k in p}),
    "masked out entirely": lambda: optax.masked(fnopt.adam(1e-2), lambda p: {k: False for k in p}),
    "MultiSteps": lambda: optax.MultiSteps(fnopt.adamw(1e-2), every_k_schedule=2),
    "inject_hyperparams": lambda: optax.inject_hyperparams(fnopt.adam)(learning_rate=1e-2),
}


@pytest.mark.parametrize("name,mode", sweeps.kernel_modes(WRAPPED, ("partition",)))
def test_inside_optax_wrappers(name, mode, monkeypatch):
    """fnopt optimizers inside Optax's wrappers: the wrapper's own step (no
    whole-step route), the same result as the two lines."""
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    params = tree(extra=False)
    with jax.numpy_dtype_promotion("standard"):  # MultiSteps mixes Python scalars and int32 counts
        got = run(whole, WRAPPED[name](), params, steps=4)
        expected = run(two_lines, WRAPPED[name](), params, steps=4)
    assert_trees_close(got, expected)


@needs_kernel
@pytest.mark.parametrize("name", ["adamw traced lr", "sgd nesterov, decay"])
def test_nonfinite_and_huge_gradients(name, monkeypatch):
    """NaN, inf and 1e30 gradients go through the kernel as through XLA's path
    (the same NaN / inf positions, the same finite values)."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = tree(extra=False)
    tx = CONFIGS[name]()
    grads = jax.tree.map(jnp.ones_like, params)
    grads["b"] = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1e30, 0.0], jnp.float32)
    state = tx.init(params)
    got = jax.jit(lambda g, s, p: fnopt.apply_gradients(tx, g, s, p))(grads, state, params)
    def reference(g, s, p):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    expected = jax.jit(reference)(grads, state, params)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        np.testing.assert_array_equal(np.isinf(x), np.isinf(y))
        finite = np.isfinite(np.asarray(y))
        np.testing.assert_allclose(np.asarray(x)[finite], np.asarray(y)[finite], rtol=RTOL.get(str(x.dtype), 0.0), atol=0)
