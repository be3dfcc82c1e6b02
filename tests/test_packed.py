"""``fnopt.packed`` (issue 15): an optimizer's state as one flat array per dtype.

For an elementwise optimizer the packed run must equal the unpacked one step
for step (its definition: the same arithmetic per element), through
``tx.update`` + ``apply_updates`` and through ``fnopt.apply_gradients`` with
the packed whole-step kernel; Optax's own ``adam`` / ``sgd`` are independent
oracles too. Kernel tests skip where no kernel can be built.
"""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_apply_gradients import (
    CONFIG_MODES,
    CONFIGS,
    KERNEL,
    assert_trees_close,
    needs_kernel,
    run,
    tree,
    two_lines,
    whole,
)

import fnopt
import fnopt.flax
from fnopt import _fused, _packed, schedules, transforms


def final(step_of, tx, params, **kw):
    """The params after ``run`` (the states' layouts differ)."""
    return run(step_of, tx, params, **kw)[0]


def assert_moments_equal(packed_state, state):
    """The packed run's moments, unpacked, equal the unpacked run's (the first
    chain stage holds them: mu / nu for Adam, trace for SGD)."""
    for field in ("mu", "nu", "trace"):
        ref = getattr(state[0], field, None)
        if ref is not None:
            assert_trees_close(_packed.unpack(getattr(packed_state[0], field), ref), ref)


def hlo(tx, params):
    return jax.jit(whole(tx)).lower(params, tx.init(params), 0).compile().as_text()


def test_pack_and_unpack_against_numpy():
    """The layout: per dtype, the leaves raveled and concatenated in leaf order;
    None leaves and empty leaves hold no place."""
    f32 = jnp.float32
    t = {"a": jnp.arange(6.0, dtype=f32).reshape(2, 3), "b": None, "c": jnp.zeros((0, 4), f32),
         "d": jnp.asarray(7.0, f32),
         "e": jnp.asarray([1, 2], jnp.int32), "f": jnp.asarray([0.5, 1.5], jnp.bfloat16)}
    flat = _packed.pack(t)
    assert sorted(flat) == ["bfloat16", "float32", "int32"]
    np.testing.assert_array_equal(np.asarray(flat["float32"]), np.array([0, 1, 2, 3, 4, 5, 7.0], np.float32))
    np.testing.assert_array_equal(np.asarray(flat["int32"]), [1, 2])
    assert flat["bfloat16"].dtype == jnp.bfloat16 and flat["bfloat16"].shape == (2,)
    back = _packed.unpack(flat, t)
    assert jax.tree.structure(back) == jax.tree.structure(t)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(t)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
    assert _packed.pack({}) == {} and _packed.unpack({}, {}) == {}


@pytest.mark.parametrize("name,mode", CONFIG_MODES)
def test_equals_unpacked(name, mode, monkeypatch):
    """Packed, through update + apply and through apply_gradients (the packed
    kernel with mode 1), equals the unpacked two lines; the tree has leaves
    the kernel does not take (bfloat16, empty, None; float64 under x64)."""
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    expected, expected_state = run(two_lines, CONFIGS[name](), tree())
    # with the kernel off, apply_gradients is the two lines by definition
    for step_of in (two_lines,) if mode == "0" else (whole,):
        got, state = run(step_of, fnopt.packed(CONFIGS[name]()), tree())
        assert_trees_close(got, expected)
        assert_moments_equal(state, expected_state)  # the moments too


@needs_kernel
@pytest.mark.parametrize("name", ["adam", "sgd momentum"])
def test_packed_kernel_is_the_step(name, monkeypatch):
    """The packed whole-step kernel is in the program, a call per 64 leaves
    (2 here) of a dtype, and the unpacked one is not."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    monkeypatch.setattr(_fused, "CHUNK", 2)
    kind = "adam_step" if "adam" in name else "momentum_step"
    text = hlo(fnopt.packed(CONFIGS[name]()), tree())
    # 7 float32 leaves in leaf order b, big, deep[0], deep[1], empty, s, w: calls of
    # 2 leaves, the empty one leaving its call with one
    assert text.count(f"fnopt_{kind}_packed_f32") == 4
    assert f"fnopt_{kind}_f32" not in text
    assert_trees_close(final(whole, fnopt.packed(CONFIGS[name]()), tree()), final(two_lines, CONFIGS[name](), tree()))


@needs_kernel
@pytest.mark.parametrize("make, reference", [
    (lambda: fnopt.adamw(1e-2, weight_decay=0.1), lambda: optax.adamw(1e-2, weight_decay=0.1)),
    (lambda: fnopt.sgd(0.05, momentum=0.9, nesterov=True), lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
])
def test_packed_kernel_against_optax(make, reference, monkeypatch):
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = tree(extra=False)
    got, _ = run(whole, fnopt.packed(make()), params, steps=6)
    with jax.numpy_dtype_promotion("standard"):
        expected, _ = run(two_lines, reference(), params, steps=6)
    assert_trees_close(got, expected, rtol={"float32": 1e-5, "float64": 1e-10})


@pytest.mark.parametrize("make", [
    lambda: fnopt.lion(1e-3),
    pytest.param(lambda: fnopt.rmsprop(1e-2, momentum=0.5), marks=pytest.mark.slow),
    pytest.param(lambda: fnopt.adam(1e-2, amsgrad=True), marks=pytest.mark.slow),
    lambda: fnopt.adamw(1e-2, mu_dtype=jnp.bfloat16),
])
def test_other_elementwise_optimizers(make, monkeypatch):
    """No packed kernel for these (or not for this state dtype): the two lines on
    the packed tree, equal to the unpacked run."""
    monkeypatch.setenv("FNOPT_FUSED", "1" if KERNEL else "0")
    params = tree()
    assert "_packed_f32" not in hlo(fnopt.packed(make()), params)
    assert_trees_close(final(whole, fnopt.packed(make()), params, steps=4),
                       final(two_lines, make(), params, steps=4), rtol={"bfloat16": 2e-2})


@pytest.mark.parametrize("mode", ["0", "1"])
def test_in_chains_wrappers_and_train_state(mode, monkeypatch):
    """Inside optax.chain after global-norm clipping, inside MultiSteps, and
    as a flax TrainState's tx (which calls apply_gradients)."""
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    params = tree(extra=False)
    for wrap in (lambda tx: optax.chain(optax.clip_by_global_norm(0.5), tx), lambda tx: optax.MultiSteps(tx, 2)):
        with jax.numpy_dtype_promotion("standard"):  # Optax's wrappers mix int32 counts and floats
            assert_trees_close(final(whole, wrap(fnopt.packed(fnopt.adamw(1e-2))), params, steps=4),
                               final(two_lines, wrap(fnopt.adamw(1e-2)), params, steps=4))
    state = fnopt.flax.TrainState.create(apply_fn=None, params=params, tx=fnopt.packed(fnopt.adam(1e-2)))
    ref = fnopt.flax.TrainState.create(apply_fn=None, params=params, tx=fnopt.adam(1e-2))
    apply = jax.jit(lambda st, g: st.apply_gradients(grads=g))  # eager, the big leaf costs seconds
    for t in range(3):
        g = jax.tree.map(lambda p: jnp.cos(p + t), params)
        state, ref = apply(state, g), apply(ref, g)
    assert_trees_close(state.params, ref.params)


@needs_kernel
def test_eager_vmap_and_grad(monkeypatch):
    """Without jit, a vmapped batch (the kernel's jnp fallback) and a
    gradient through the step (jvp falls back too)."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = {k: v for k, v in tree(extra=False).items() if k != "big"}  # eager and vmapped: small leaves
    assert_trees_close(final(whole, fnopt.packed(fnopt.adamw(1e-2)), params, steps=3, jit=False),
                       final(two_lines, fnopt.adamw(1e-2), params, steps=3, jit=False))
    for make in (lambda: fnopt.adam(1e-2), lambda: fnopt.sgd(0.05, momentum=0.9)):
        batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x, -x]), params)

        def two(step_of, tx, p):
            s = tx.init(p)
            p, s = step_of(tx)(p, s, 0)
            return step_of(tx)(p, s, 1)[0]

        got = jax.jit(jax.vmap(lambda p: two(whole, fnopt.packed(make()), p)))(batch)
        assert_trees_close(got, jax.jit(jax.vmap(lambda p: two(two_lines, make(), p)))(batch))

    def loss(step_of, tx, scale):
        p = jax.tree.map(lambda x: x * scale, params)
        p, _ = step_of(tx)(p, tx.init(p), 0)
        return sum(jnp.sum(x) for x in jax.tree.leaves(p))

    np.testing.assert_allclose(jax.jit(jax.grad(lambda s: loss(whole, fnopt.packed(fnopt.adam(1e-2)), s)))(1.5),
                               jax.jit(jax.grad(lambda s: loss(two_lines, fnopt.adam(1e-2), s)))(1.5), rtol=1e-5)


def test_state_checkpoints_and_resumes(monkeypatch):
    """The packed state is a plain pytree of arrays: through Flax's state
    dict and NumPy and back, the run continues as if never interrupted."""
    monkeypatch.setenv("FNOPT_FUSED", "1" if KERNEL else "0")
    tx = fnopt.packed(fnopt.adam(schedules.cosine_decay(1e-2, 10)))
    step = jax.jit(whole(tx))
    params = tree(extra=False)
    state = tx.init(params)
    for t in range(3):
        params, state = step(params, state, t)
    saved = jax.tree.map(np.asarray, flax.serialization.to_state_dict(state))
    restored = flax.serialization.from_state_dict(tx.init(params), jax.tree.map(jnp.asarray, saved))
    a, b = (params, state), (params, restored)
    for t in range(3, 6):
        a, b = step(*a, t), step(*b, t)
    assert_trees_close(a, b, rtol={"float32": 0.0, "float64": 0.0})


def test_empty_tree_and_errors():
    tx = fnopt.packed(fnopt.adam(1e-2))
    params, state = fnopt.apply_gradients(tx, {}, tx.init({}), {})
    assert params == {}
    with pytest.raises(TypeError, match=r"fnopt\.packed\(tx=\.\.\.\)"):
        fnopt.packed(optax.adam)  # the factory, not a transformation
    p = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"fnopt\.packed: gradient leaf .* bfloat16"):
        tx.update({"w": jnp.ones(3), "b": jnp.ones(2)}, tx.init(p), p)
    with pytest.raises(ValueError, match=r"fnopt\.packed: .*different structures"):
        tx.update({"w": jnp.ones(3)}, tx.init(p), p)
    with pytest.raises(ValueError):  # a group tree no longer matches the packed params
        fnopt.packed(fnopt.adam({"w": 1e-2, "b": 1e-3})).init(p)


def test_global_norm_clipping_inside_is_unchanged(monkeypatch):
    """A global statistic (the gradient's global norm) is the same over the
    packed vectors as over the leaves."""
    monkeypatch.setenv("FNOPT_FUSED", "0")
    make = lambda: fnopt.chain(transforms.clip_by_global_norm(0.1), fnopt.adam(1e-2))  # noqa: E731
    assert_trees_close(final(two_lines, fnopt.packed(make()), tree(extra=False), steps=4),
                       final(two_lines, make(), tree(extra=False), steps=4))


def test_value_reaches_the_plateau_and_plain_optax_ignores_it(monkeypatch):
    """``value=`` goes to the packed ``tx`` (a plateau stage sees the metric and
    cuts the learning rate as the unpacked chain does); a plain Optax
    transformation, which takes no extra arguments, runs packed too."""
    monkeypatch.setenv("FNOPT_FUSED", "0")
    make = lambda: fnopt.chain(fnopt.adam(1e-2), transforms.reduce_on_plateau(factor=0.5, patience=1))  # noqa: E731
    params = tree(extra=False)
    runs = []
    for tx in (fnopt.packed(make()), make()):
        p, s = params, tx.init(params)
        for t in range(6):
            p, s = fnopt.apply_gradients(tx, jax.tree.map(jnp.cos, p), s, p, value=jnp.asarray(1.0))
        runs.append((p, fnopt.hyperparams(s)["effective_learning_rate"]))
    assert_trees_close(runs[0][0], runs[1][0])
    # patience 1, a flat metric: cuts after observations 3 and 5 (torch's rule)
    assert float(runs[0][1]) == float(runs[1][1]) == pytest.approx(1e-2 * 0.25, rel=1e-6)
    tx = fnopt.packed(optax.sgd(0.1))
    p, _ = fnopt.apply_gradients(tx, {"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}), {"w": jnp.ones(2)}, value=1.0)
    np.testing.assert_allclose(np.asarray(p["w"]), [0.9, 0.9], rtol=1e-6)


def test_nnx_optimizer():
    """``flax.nnx.Optimizer`` with a packed tx: the same training as unpacked,
    and its state holds the flat arrays."""
    from flax import nnx

    def train(tx):
        model = nnx.Sequential(nnx.Linear(3, 8, rngs=nnx.Rngs(0)), nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x = jnp.linspace(-1, 1, 12, dtype=jnp.float32).reshape(4, 3)

        @nnx.jit
        def step(model, opt):
            grads = nnx.grad(lambda m: jnp.mean((m(x) - 1.0) ** 2))(model)
            opt.update(model, grads)

        for _ in range(3):
            step(model, opt)
        return nnx.state(model, nnx.Param), opt

    packed_params, opt = train(fnopt.packed(fnopt.adam(1e-2)))
    params, _ = train(fnopt.adam(1e-2))
    assert_trees_close(packed_params, params)
    sizes = [x.size for x in jax.tree.leaves(nnx.state(opt, nnx.OptState)) if x.ndim == 1 and x.size > 1]
    assert sizes == [3 * 8 + 8 + 8 + 1] * 2  # mu and nu, one flat float32 array each


@pytest.mark.parametrize("bad", [True, "adam", None, 0.1, jnp.ones(3)])
def test_not_a_transformation_is_an_error(bad):
    with pytest.raises(TypeError, match=r"fnopt\.packed\(tx=\.\.\.\)"):
        fnopt.packed(bad)


WRAPPED = {
    "partition, one group empty": lambda: optax.partition(
        {"a": fnopt.packed(fnopt.adamw(1e-2)), "b": fnopt.packed(fnopt.sgd(0.05, momentum=0.9))},
        lambda p: {k: "a" for k in p}),
    "masked": lambda: optax.masked(fnopt.packed(fnopt.adam(1e-2)), lambda p: {k: k != "b" for k in p}),
    "masked out entirely": lambda: optax.masked(fnopt.packed(fnopt.adam(1e-2)), lambda p: {k: False for k in p}),
    "inject_hyperparams": lambda: fnopt.packed(optax.inject_hyperparams(fnopt.adam)(learning_rate=1e-2)),
}
UNPACKED = {
    "partition, one group empty": lambda: optax.partition(
        {"a": fnopt.adamw(1e-2), "b": fnopt.sgd(0.05, momentum=0.9)}, lambda p: {k: "a" for k in p}),
    "masked": lambda: optax.masked(fnopt.adam(1e-2), lambda p: {k: k != "b" for k in p}),
    "masked out entirely": lambda: optax.masked(fnopt.adam(1e-2), lambda p: {k: False for k in p}),
    "inject_hyperparams": lambda: optax.inject_hyperparams(fnopt.adam)(learning_rate=1e-2),
}


@pytest.mark.parametrize("name", list(WRAPPED))
def test_inside_optax_wrappers(name, monkeypatch):
    """A packed tx inside partition (with an empty group), masked (also
    masked out entirely) and around inject_hyperparams: the unpacked run."""
    monkeypatch.setenv("FNOPT_FUSED", "1" if KERNEL else "0")
    params = tree(extra=False)
    with jax.numpy_dtype_promotion("standard"):  # Optax's wrappers mix Python scalars and int32 counts
        assert_trees_close(final(whole, WRAPPED[name](), params, steps=3),
                           final(two_lines, UNPACKED[name](), params, steps=3))


@needs_kernel
@pytest.mark.parametrize("make", [lambda: fnopt.adamw(jnp.asarray(3e-3), weight_decay=0.1),
                                  lambda: fnopt.sgd(0.05, momentum=0.9, nesterov=True)])
def test_nonfinite_and_huge_gradients(make, monkeypatch):
    """NaN, inf, 1e30 and 0 gradients through the packed kernel give the unpacked
    XLA path's NaN / inf positions and finite values."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    params = tree(extra=False)
    grads = jax.tree.map(jnp.ones_like, params)
    grads["b"] = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1e30, 0.0], jnp.float32)
    tx, ref = fnopt.packed(make()), make()
    got, _ = jax.jit(lambda g, s, p: fnopt.apply_gradients(tx, g, s, p))(grads, tx.init(params), params)
    reference = jax.jit(lambda g, s, p: optax.apply_updates(p, ref.update(g, s, p)[0]))
    expected = reference(grads, ref.init(params), params)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        np.testing.assert_array_equal(np.isinf(x), np.isinf(y))
        finite = np.isfinite(y)
        scale = np.max(np.abs(y[finite]), initial=0.0)  # relative to the leaf's largest value, as elsewhere
        np.testing.assert_allclose(x[finite], y[finite], rtol=0, atol=2e-6 * scale)


# Leaf shapes for the random trees: scalars, empty leaves and None (no place
# in the packed arrays), sizes around a vector register and a 64-leaf chunk.
SHAPES = [(), (1,), (3,), (2, 3), (0,), (0, 2), (17,), (65,), None]


@needs_kernel
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shapes=st.lists(st.sampled_from(SHAPES), max_size=7), half=st.lists(st.booleans(), min_size=7, max_size=7),
       name=st.sampled_from(["adam", "adam coupled decay, maximize", "sgd nesterov, decay", "sgd momentum"]),
       chunk=st.sampled_from([1, 2, 64]), seed=st.integers(0, 2**16))
def test_random_trees_equal_unpacked(shapes, half, name, chunk, seed, monkeypatch):
    """Property: on any tree (any mix of scalar, empty, None, float32 and
    bfloat16 leaves, kernel calls of 1, 2 or 64 leaves, so that chunks start
    at every offset), the packed kernel's step equals the unpacked two lines,
    params and moments."""
    monkeypatch.setenv("FNOPT_FUSED", "1")
    monkeypatch.setattr(_fused, "CHUNK", chunk)
    rng = np.random.default_rng(seed)
    params = {f"p{i}": None if s is None else jnp.asarray(rng.standard_normal(s), jnp.bfloat16 if h else jnp.float32)
              for i, (s, h) in enumerate(zip(shapes, half))}
    expected, expected_state = run(two_lines, CONFIGS[name](), params, steps=3)
    got, state = run(whole, fnopt.packed(CONFIGS[name]()), params, steps=3)
    assert_trees_close(got, expected)
    assert_moments_equal(state, expected_state)
