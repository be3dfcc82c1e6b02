"""``fnopt.flat_params`` (issue 15): the params as one flat array per dtype, and their view.

Oracles: NumPy's concatenation of the raveled leaves (the layout), the
closed-form gradient of a weighted sum of squares (the backward pass), and
Optax's own optimizers run on the tree (the training).
"""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnopt
import fnopt.flax

from test_apply_gradients import KERNEL, assert_trees_close

F = jnp.result_type(float)  # float32, or float64 under FNOPT_X64=1
FN = np.dtype(F).name


def model_params():
    return {"dense": {"w": jnp.linspace(-1, 1, 12, dtype=F).reshape(3, 4), "b": jnp.zeros(4, F)},
            "out": {"w": jnp.linspace(0.5, -0.5, 4, dtype=F).reshape(4, 1), "b": jnp.asarray(0.1, F)},
            "skip": None}


def loss(p, x):
    h = jnp.tanh(x @ p["dense"]["w"] + p["dense"]["b"])
    return jnp.mean((h @ p["out"]["w"] + p["out"]["b"] - 1.0) ** 2)


X = jnp.linspace(-2, 2, 15, dtype=F).reshape(5, 3)


def test_layout_against_numpy():
    """Per dtype, the leaves raveled and concatenated in leaf order; None and
    empty leaves hold no place; the view gives the tree back exactly."""
    t = {"a": jnp.arange(6.0, dtype=F).reshape(2, 3), "b": None, "c": jnp.zeros((0, 4), F),
         "d": jnp.asarray(7.0, F), "e": jnp.asarray([1, 2], jnp.int32), "f": jnp.asarray([0.5, 1.5], jnp.bfloat16)}
    flat, view = fnopt.flat_params(t)
    assert sorted(flat) == sorted(["bfloat16", FN, "int32"])
    np.testing.assert_array_equal(np.asarray(flat[FN]), np.array([0, 1, 2, 3, 4, 5, 7.0]))
    np.testing.assert_array_equal(np.asarray(flat["int32"]), [1, 2])
    assert flat["bfloat16"].dtype == jnp.bfloat16 and flat["bfloat16"].shape == (2,)
    back = view(flat)
    assert jax.tree.structure(back) == jax.tree.structure(t)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(t)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
    packed = view.pack(back)
    assert all(np.array_equal(np.asarray(packed[k], np.float64), np.asarray(flat[k], np.float64)) for k in flat)
    assert fnopt.flat_params({})[0] == {} and fnopt.flat_params({})[1]({}) == {}
    assert "FlatView(5 leaves" in repr(view)  # None is no leaf


LEAF = st.tuples(st.lists(st.integers(0, 3), max_size=3), st.sampled_from(["f", "bfloat16", "none"]),
                 st.sampled_from(["a", "b"]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LEAF, max_size=7), st.booleans(), st.integers(0, 2**16))
def test_random_trees_round_trip_and_gradient(leaves, labelled, seed):
    """Random trees and labels: view and pack are inverse, and the gradient
    of ``sum_i c_i * sum(leaf_i ** 2)`` through the view is, per buffer,
    ``2 c_i leaf_i`` raveled and concatenated in leaf order (NumPy)."""
    rng = np.random.default_rng(seed)
    params, labels, coeffs = {}, {}, {}
    for i, (shape, kind, label) in enumerate(leaves):
        name = f"l{i}"
        if kind == "none":
            params[name], labels[name] = None, None
            continue
        dtype = F if kind == "f" else jnp.bfloat16
        params[name] = jnp.asarray(rng.standard_normal(shape), dtype)
        labels[name], coeffs[name] = label, float(i + 1)
    flat, view = fnopt.flat_params(params, labels if labelled else None)
    assert_trees_close(view(flat), params, rtol={FN: 0.0, "bfloat16": 0.0})
    again = view.pack(view(flat))
    assert jax.tree.structure(again) == jax.tree.structure(flat)

    def objective(tree):
        return sum((coeffs[k] * jnp.sum(jnp.asarray(v, jnp.float32) ** 2) for k, v in tree.items() if v is not None),
                   jnp.zeros((), jnp.float32))

    grads = jax.jit(jax.grad(lambda f: objective(view(f))))(flat)
    expect: dict = {}
    for k, v in params.items():
        if v is None:
            continue
        key = (labels[k] if labelled else None, np.dtype(v.dtype).name)
        expect.setdefault(key, []).append(2 * coeffs[k] * np.asarray(v, np.float64).ravel())
    for (label, dtype), parts in expect.items():
        got = grads[label][dtype] if labelled else grads[dtype]
        assert got.dtype == np.dtype(dtype)
        tol = 2e-2 if dtype == "bfloat16" else 1e-6
        np.testing.assert_allclose(np.asarray(got, np.float64), np.concatenate(parts), rtol=tol, atol=tol)


def step_two_lines(tx, p, s):
    u, s = tx.update(jax.grad(loss)(p, X), s, p)
    return optax.apply_updates(p, u), s


@pytest.mark.parametrize("mode", ["0", "1"])
@pytest.mark.parametrize("make, reference", [
    (lambda: fnopt.adam(0.05), lambda: optax.adam(0.05)),
    pytest.param(lambda: fnopt.adamw(0.05, weight_decay=0.1), lambda: optax.adamw(0.05, weight_decay=0.1),
                 marks=pytest.mark.slow),
    pytest.param(lambda: fnopt.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9), marks=pytest.mark.slow),
    (lambda: fnopt.lion(0.01), lambda: optax.lion(0.01)),
])
def test_training_equals_optax_on_the_tree(make, reference, mode, monkeypatch):
    """Training the flat params (gradients through the view, the fused kernel's
    whole step with mode 1) equals the same optimizer on the tree, and Optax's
    on the tree (to 3e-5 in float32: Optax rounds ``b2`` to float32 in its bias
    correction, ``1 - 0.999`` off by 1.3e-5, which fnopt does not)."""
    if mode == "1" and not KERNEL:
        pytest.skip("no fused kernel here")
    monkeypatch.setenv("FNOPT_FUSED", mode)
    params = model_params()
    flat, view = fnopt.flat_params(params)
    tx, ref = make(), reference()

    @jax.jit
    def flat_step(f, s):
        g = jax.grad(lambda q: loss(view(q), X))(f)
        return fnopt.apply_gradients(tx, g, s, f)

    for reference_tx, rtol in ((make(), None), (ref, {"float32": 3e-5})):
        tree_step = jax.jit(lambda p, s, r=reference_tx: step_two_lines(r, p, s))
        a, b = (flat, tx.init(flat)), (params, reference_tx.init(params))
        with jax.numpy_dtype_promotion("standard"):  # Optax mixes int32 counts and floats
            for _ in range(5):
                a, b = flat_step(*a), tree_step(*b)
        assert_trees_close(view(a[0]), b[0], rtol=rtol)


def test_labels_give_groups_for_partition_and_masks():
    """With labels, each group is a buffer: ``optax.partition`` by label and a
    weight-decay mask by label equal Optax's masked AdamW on the tree."""
    params = model_params()
    labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)  # noqa: E731
    flat, view = fnopt.flat_params(params, labels)
    assert sorted(flat) == ["decay", "no_decay"] and list(flat["decay"]) == [FN]
    assert flat["decay"][FN].shape == (16,) and flat["no_decay"][FN].shape == (5,)
    matrices = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731
    cases = [  # (on the flat groups, on the tree)
        (optax.partition({"decay": fnopt.adamw(0.05, weight_decay=0.5), "no_decay": fnopt.adam(0.05)},
                         {"decay": "decay", "no_decay": "no_decay"}),
         fnopt.adamw(0.05, weight_decay=0.5, mask=matrices)),
        (optax.adamw(0.05, weight_decay=0.5, mask={"decay": True, "no_decay": False}),
         optax.adamw(0.05, weight_decay=0.5, mask=matrices)),
    ]
    for tx, ref in cases:
        a, b = (flat, tx.init(flat)), (params, ref.init(params))
        for _ in range(4):
            ga = jax.grad(lambda q: loss(view(q), X))(a[0])
            gb = jax.grad(loss)(b[0], X)
            with jax.numpy_dtype_promotion("standard"):
                ua, sa = tx.update(ga, a[1], a[0])
                ub, sb = ref.update(gb, b[1], b[0])
            a, b = (optax.apply_updates(a[0], ua), sa), (optax.apply_updates(b[0], ub), sb)
        assert_trees_close(view(a[0]), b[0])


def test_inside_multisteps_inject_hyperparams_and_a_frozen_group():
    """The flat dict is a plain pytree, so Optax's wrappers take it: MultiSteps
    (2 micro-steps), inject_hyperparams (the learning rate changed in the
    state) and a group frozen by ``optax.partition`` with ``set_to_zero``;
    each equals the same wrapper around Optax's Adam on the tree (to 3e-5:
    Optax rounds its bias correction, see above)."""
    params = model_params()
    matrices = lambda p: jax.tree.map(lambda x: "w" if x.ndim > 1 else "rest", p)  # noqa: E731
    flat, view = fnopt.flat_params(params, matrices)

    def injected(factory, lr):
        tx = optax.inject_hyperparams(factory)(learning_rate=0.05)
        init = tx.init

        def init_fn(p):
            state = init(p)
            state.hyperparams["learning_rate"] = jnp.asarray(lr, F)
            return state
        return optax.GradientTransformation(init_fn, tx.update)

    cases = [  # (on the flat groups, on the tree)
        (optax.MultiSteps(fnopt.adam(0.05), 2), optax.MultiSteps(optax.adam(0.05), 2)),
        (injected(fnopt.adam, 0.02), injected(optax.adam, 0.02)),
        (optax.partition({"w": fnopt.adam(0.05), "rest": optax.set_to_zero()}, {"w": "w", "rest": "rest"}),
         optax.partition({"w": optax.adam(0.05), "rest": optax.set_to_zero()}, matrices)),
    ]
    for tx, ref in cases:
        a, b = (flat, tx.init(flat)), (params, ref.init(params))
        with jax.numpy_dtype_promotion("standard"):  # Optax mixes int32 counts and floats
            for _ in range(4):
                ua, sa = tx.update(jax.grad(lambda q: loss(view(q), X))(a[0]), a[1], a[0])
                ub, sb = ref.update(jax.grad(loss)(b[0], X), b[1], b[0])
                a, b = (optax.apply_updates(a[0], ua), sa), (optax.apply_updates(b[0], ub), sb)
        assert_trees_close(view(a[0]), b[0], rtol={"float32": 3e-5})
    frozen = view(a[0])
    np.testing.assert_array_equal(np.asarray(frozen["dense"]["b"]), np.asarray(params["dense"]["b"]))


def test_train_state_checkpoint_vmap_and_jit():
    """A flax TrainState holds the flat dict as its params (and trains as
    on the tree); the flat dict
    round-trips through a state dict; the view vmaps over a batch of flat
    dicts; equal layouts give equal views, so a jit keyed on the view
    compiles once."""
    params = model_params()
    flat, view = fnopt.flat_params(params)
    state = fnopt.flax.TrainState.create(apply_fn=None, params=flat, tx=fnopt.adam(0.05))
    ref = fnopt.flax.TrainState.create(apply_fn=None, params=params, tx=fnopt.adam(0.05))
    step = jax.jit(lambda st, v: st.apply_gradients(grads=jax.grad(lambda q: loss(v(q), X))(st.params)),
                   static_argnums=1)
    step_ref = jax.jit(lambda st: st.apply_gradients(grads=jax.grad(loss)(st.params, X)))
    with jax.numpy_dtype_promotion("standard"):  # Optax mixes int32 counts and floats
        for _ in range(3):
            state, ref = step(state, view), step_ref(ref)
    assert_trees_close(view(state.params), ref.params)

    saved = jax.tree.map(np.asarray, flax.serialization.to_state_dict(state.params))
    restored = flax.serialization.from_state_dict(flat, jax.tree.map(jnp.asarray, saved))
    assert_trees_close(view(restored), view(state.params), rtol={FN: 0.0})

    same_view = fnopt.flat_params(model_params())[1]
    assert same_view == view and hash(same_view) == hash(view)
    assert fnopt.flat_params(model_params(), lambda p: jax.tree.map(lambda _: "x", p))[1] != view
    traces = []

    @jax.jit
    def batched(f):
        traces.append(1)
        return jax.vmap(view)(f)

    members = [jax.tree.map(lambda x, s=s: x * s, flat) for s in (1.0, -2.0, 3.0)]
    out = batched(jax.tree.map(lambda *xs: jnp.stack(xs), *members))
    batched(jax.tree.map(lambda *xs: jnp.stack(xs), *members))
    assert len(traces) == 1
    for i, m in enumerate(members):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], out), view(m), rtol={FN: 0.0})
    traced = jax.jit(lambda p: fnopt.flat_params(p)[0])(params)  # traced leaves pack as well
    assert_trees_close(traced, flat, rtol={FN: 0.0})


def test_nnx_module_owning_its_layout():
    """An NNX module that keeps its weights as one flat ``nnx.Param`` and
    cuts them when called trains with ``nnx.Optimizer`` as Adam does on the
    tree; the optimizer state is one array per moment."""
    from flax import nnx

    params = model_params()
    flat, view = fnopt.flat_params(params)

    class Flat(nnx.Module):
        def __init__(self):
            self.buf = nnx.Param(flat[FN])

        def params(self):
            return view({FN: self.buf[...]})

    model = Flat()
    opt = nnx.Optimizer(model, fnopt.adam(0.05), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        opt.update(model, nnx.grad(lambda m: loss(m.params(), X))(model))

    ref_tx = fnopt.adam(0.05)  # on the tree
    p, s = params, ref_tx.init(params)
    for _ in range(3):
        step(model, opt)
        with jax.numpy_dtype_promotion("standard"):  # Optax mixes int32 counts and floats
            u, s = ref_tx.update(jax.grad(loss)(p, X), s, p)
        p = optax.apply_updates(p, u)
    assert_trees_close(model.params(), p)
    sizes = [x.size for x in jax.tree.leaves(nnx.state(opt, nnx.OptState)) if x.ndim == 1]
    assert sizes == [21, 21]  # mu and nu: one flat array each


@pytest.mark.parametrize("bad, err, match", [
    ({"w": "abc"}, TypeError, r"flat_params\(params=\.\.\.\): leaf 0 is str"),
    ({"w": object()}, TypeError, r"flat_params\(params=\.\.\.\): leaf 0 is object"),
])
def test_bad_params(bad, err, match):
    with pytest.raises(err, match=match):
        fnopt.flat_params(bad)


def test_bad_labels_and_layouts():
    params = model_params()
    with pytest.raises(ValueError, match=r"flat_params\(labels=\.\.\.\): the labels' structure"):
        fnopt.flat_params(params, {"dense": "a"})
    with pytest.raises(TypeError, match=r"flat_params\(labels=\.\.\.\): label 0 is 1, not a str"):
        fnopt.flat_params(params, jax.tree.map(lambda _: 1, params))
    with pytest.raises(TypeError, match=r"label 0 is True"):
        fnopt.flat_params(params, lambda p: jax.tree.map(lambda _: True, p))
    with pytest.raises(ValueError, match=r"flat_params\(labels=\.\.\.\): the labels' structure"):
        fnopt.flat_params(params, "decay")  # one label for a whole dict: give a tree or a function
    with pytest.raises(TypeError, match=r"flat_params\(labels=\.\.\.\): label 0 is \['a'\], not a str"):
        fnopt.flat_params({"w": jnp.ones(2)}, {"w": ["a"]})  # a list where one label belongs
    none_label = jax.tree.map(lambda _: "a", params)
    none_label["dense"]["b"] = None
    with pytest.raises(TypeError, match=r"flat_params\(labels=\.\.\.\): label 0 is None, not a str"):
        fnopt.flat_params(params, none_label)
    assert fnopt.flat_params(None)[0] == {} and fnopt.flat_params(None)[1]({}) is None  # None: an empty tree
    flat, view = fnopt.flat_params(params)
    wrong = [
        ({}, "structure"),
        ({FN: flat[FN], "int32": jnp.zeros(2, jnp.int32)}, "structure"),
        ({FN: flat[FN][:-1]}, "1-D"),
        ({FN: flat[FN].reshape(3, 7)}, "1-D"),
        ({FN: flat[FN].astype(jnp.bfloat16)}, "1-D"),
        ([flat[FN]], "structure"),
    ]
    for f, what in wrong:
        with pytest.raises(ValueError, match=rf"view\(flat=\.\.\.\).*{what}"):
            view(f)
    with pytest.raises(ValueError, match=r"view\.pack\(tree=\.\.\.\): the tree's structure"):
        view.pack({"dense": 1})
    not_an_array = jax.tree.map(lambda x: x, params)
    not_an_array["dense"]["b"] = "zeros"
    with pytest.raises(TypeError, match=r"view\.pack\(tree=\.\.\.\): leaf 0 is str"):
        view.pack(not_an_array)
    bad_shape = jax.tree.map(lambda x: x, params)
    bad_shape["dense"]["w"] = jnp.zeros((4, 3), F)
    with pytest.raises(ValueError, match=r"view\.pack\(tree=\.\.\.\): leaf 1 is"):
        view.pack(bad_shape)
    bad_dtype = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match=r"view\.pack\(tree=\.\.\.\): leaf 0 is bfloat16"):
        view.pack(bad_dtype)


def test_nonfinite_values_pass_through():
    """The view copies values, whatever they are: a NaN or inf param stays in
    its place (the optimizer's business), nothing else changes."""
    params = {"a": jnp.asarray([1.0, jnp.nan], F), "b": jnp.asarray([jnp.inf, -3e38], F)}
    flat, view = fnopt.flat_params(params)
    back = view(flat)
    np.testing.assert_array_equal(np.asarray(back["a"]), [1.0, np.nan])
    np.testing.assert_array_equal(np.asarray(back["b"]), np.asarray(params["b"]))


def test_bool_and_python_number_leaves_keep_their_own_buffers():
    """A bool flag or a Python number among the params is a leaf of its own
    dtype (NumPy's for the value): its own buffer, and the view gives it back."""
    params = {"flag": True, "n": 3, "w": jnp.asarray([0.5, -1.5], F)}
    flat, view = fnopt.flat_params(params)
    assert sorted(flat) == sorted({np.dtype(bool).name, np.dtype(jnp.result_type(3)).name, FN})
    np.testing.assert_array_equal(np.asarray(flat["bool"]), [True])
    back = view(flat)
    assert bool(back["flag"]) is True and int(back["n"]) == 3
    np.testing.assert_array_equal(np.asarray(back["w"]), [0.5, -1.5])
