"""Parameter groups: group trees, weight-decay masks, empty and partial
trees, and group-aware logging (issue 11, items 1-4).

Oracles: separate single-group runs of the same optimizer on each group's
parameters, Optax's own transforms (``optax.masked``, ``optax.partition``)
and hand-written values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt import schedules as S
from fnopt import transforms as T

PARAMS = {
    "backbone": {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.asarray([0.1, -0.2])},
    "head": {"w": jnp.asarray([[0.5], [-0.5]])},
}


def grads_at(step, params):
    """Deterministic, step-dependent gradients shaped like ``params``."""
    leaves, treedef = jax.tree.flatten(params)
    out = [jnp.sin(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) + 1.3 * step + i) + 0.1 * x
           for i, x in enumerate(leaves)]
    return treedef.unflatten(out)


def run(opt, params, steps=6):
    state = opt.init(params)
    for t in range(steps):
        updates, state = opt.update(grads_at(t, params), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def run_groups_separately(make, groups, steps=6):
    """Each group with its own optimizer; the gradients are computed on the
    whole tree, as in the grouped run."""
    params = PARAMS
    states = {g: make(g).init(params[g]) for g in groups}
    for t in range(steps):
        grads = grads_at(t, params)
        new = dict(params)
        for g in groups:
            updates, states[g] = make(g).update(grads[g], states[g], params[g])
            new[g] = optax.apply_updates(params[g], updates)
        params = new
    return params


ONE_CYCLE = S.one_cycle(1e-2, 20)

# alias: (grouped optimizer, per-group factory)
GROUPED = {
    "sgd": (
        lambda: fnopt.sgd({"backbone": 0.05, "head": ONE_CYCLE}, momentum={"backbone": 0.9, "head": 0.5},
                          weight_decay={"backbone": 1e-2, "head": 0.0}),
        lambda g: fnopt.sgd({"backbone": 0.05, "head": ONE_CYCLE}[g], momentum={"backbone": 0.9, "head": 0.5}[g],
                            weight_decay={"backbone": 1e-2, "head": 0.0}[g]),
    ),
    "adam": (
        lambda: fnopt.adam({"backbone": 1e-3, "head": ONE_CYCLE}, b1={"backbone": 0.9, "head": 0.8}),
        lambda g: fnopt.adam({"backbone": 1e-3, "head": ONE_CYCLE}[g], b1={"backbone": 0.9, "head": 0.8}[g]),
    ),
    "adamw": (
        lambda: fnopt.adamw({"backbone": 1e-4, "head": ONE_CYCLE}, weight_decay={"backbone": 0.05, "head": 0.0}),
        lambda g: fnopt.adamw({"backbone": 1e-4, "head": ONE_CYCLE}[g], weight_decay={"backbone": 0.05, "head": 0.0}[g]),
    ),
    "radam": (
        lambda: fnopt.radam({"backbone": 1e-3, "head": 3e-3}, b2={"backbone": 0.999, "head": 0.9}),
        lambda g: fnopt.radam({"backbone": 1e-3, "head": 3e-3}[g], b2={"backbone": 0.999, "head": 0.9}[g]),
    ),
    "adagrad": (
        lambda: fnopt.adagrad({"backbone": 0.1, "head": 0.01}, initial_accumulator_value={"backbone": 0.0, "head": 0.5}),
        lambda g: fnopt.adagrad({"backbone": 0.1, "head": 0.01}[g],
                                initial_accumulator_value={"backbone": 0.0, "head": 0.5}[g]),
    ),
    "rmsprop": (
        lambda: fnopt.rmsprop(1e-2, alpha={"backbone": 0.99, "head": 0.9}, momentum={"backbone": 0.0, "head": 0.9}),
        lambda g: fnopt.rmsprop(1e-2, alpha={"backbone": 0.99, "head": 0.9}[g], momentum={"backbone": 0.0, "head": 0.9}[g]),
    ),
    "ranger": (
        lambda: fnopt.ranger({"backbone": 1e-3, "head": 1e-2}, alpha={"backbone": 0.5, "head": 0.8}, sync_period=3),
        lambda g: fnopt.ranger({"backbone": 1e-3, "head": 1e-2}[g], alpha={"backbone": 0.5, "head": 0.8}[g], sync_period=3),
    ),
}


@pytest.mark.parametrize("alias", GROUPED)
def test_a_group_tree_equals_one_optimizer_per_group(alias):
    grouped, single = GROUPED[alias]
    got, _ = run(grouped(), PARAMS)
    expected = run_groups_separately(single, ("backbone", "head"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, expected)


def test_group_trees_may_stop_at_any_depth_and_differ_per_hyperparameter():
    # lr split at the top, weight decay split one level down (no decay on the bias).
    opt = fnopt.sgd({"backbone": 0.1, "head": 0.2},
                    weight_decay={"backbone": {"w": 0.5, "b": 0.0}, "head": 0.5})
    params = PARAMS
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, state = opt.update(grads, opt.init(params), params)
    # Hand-written: update = -lr * (g + wd * p) with g = 0.
    np.testing.assert_allclose(updates["backbone"]["w"], -0.1 * 0.5 * params["backbone"]["w"], rtol=1e-6)
    np.testing.assert_allclose(updates["backbone"]["b"], 0.0)
    np.testing.assert_allclose(updates["head"]["w"], -0.2 * 0.5 * params["head"]["w"], rtol=1e-6)
    hp = fnopt.hyperparams(state)
    assert float(hp["backbone.w/weight_decay"]) == 0.5 and float(hp["backbone.b/weight_decay"]) == 0.0
    assert float(hp["head/effective_learning_rate"]) == pytest.approx(0.2)


def test_group_names_join_key_paths_with_dots():
    params = {"encoder": [jnp.ones(2), jnp.ones(3)], "decoder": jnp.ones(1)}
    opt = fnopt.adamw(1e-3, weight_decay={"encoder": [0.1, 0.0], "decoder": 0.01})
    hp = fnopt.hyperparams(opt.init(params))
    assert {"encoder.0/weight_decay", "encoder.1/weight_decay", "decoder/weight_decay"} <= set(hp)
    assert float(hp["encoder.0/weight_decay"]) == pytest.approx(0.1)
    assert "learning_rate" in hp and "effective_learning_rate" in hp  # no groups: names as before


def test_a_tree_that_is_not_a_prefix_raises_at_init_naming_call_argument_and_path():
    opt = fnopt.adamw(learning_rate={"backbone": 1e-4, "neck": 1e-3})
    with pytest.raises(ValueError, match=r"`adamw\(learning_rate=...\)` is not a prefix.*'head'.*'neck'"):
        opt.init(PARAMS)
    opt = fnopt.sgd(0.1, weight_decay={"backbone": {"w": 0.1}, "head": 0.0})
    with pytest.raises(ValueError, match=r"`sgd\(weight_decay=...\)` is not a prefix.*\['backbone'\].*'b'"):
        opt.init(PARAMS)
    with pytest.raises(ValueError, match=r"`scale_by_adam\(b1=...\)` is not a prefix.*single array"):
        T.scale_by_adam(b1={"w": 0.9}).init(jnp.ones(3))


def test_group_tree_leaves_are_validated_at_construction_with_their_path():
    with pytest.raises(ValueError, match=r"`adamw\(learning_rate\['head'\]=...\)` must be >= 0, got -1"):
        fnopt.adamw({"backbone": 1e-3, "head": -1.0})
    with pytest.raises(ValueError, match=r"`adam\(b1\['x'\]=...\)` must be in \[0, 1\)"):
        fnopt.adam(b1={"x": 1.5})
    with pytest.raises(TypeError, match=r"`sgd\(momentum\['a'\]=...\)` must be a number"):
        fnopt.sgd(0.1, momentum={"a": "0.9"})
    # Global decisions take one value.
    with pytest.raises(ValueError, match=r"`clip_by_global_norm\(max_norm=...\)`.*group tree is not supported"):
        T.clip_by_global_norm({"a": 1.0})
    with pytest.raises(ValueError, match=r"`ranger\(sync_period=...\)`.*group tree is not supported"):
        fnopt.ranger(sync_period={"a": 5})


def test_vmap_over_one_groups_learning_rate():
    def final_params(head_lr):
        opt = fnopt.adamw({"backbone": 1e-3, "head": head_lr}, weight_decay={"backbone": 0.05, "head": 0.0})
        return run(opt, PARAMS, steps=3)[0]

    lrs = jnp.asarray([1e-3, 1e-2, 1e-1])
    batched = jax.vmap(final_params)(lrs)
    for i, lr in enumerate([1e-3, 1e-2, 1e-1]):
        expected = final_params(lr)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7), batched, expected)
    # Only the head moves differently.
    np.testing.assert_allclose(batched["backbone"]["w"][0], batched["backbone"]["w"][2], rtol=1e-6)
    assert not np.allclose(batched["head"]["w"][0], batched["head"]["w"][2])


def test_group_tree_under_jit_compiles_once_and_matches_a_flax_frozen_dict():
    from flax.core import FrozenDict, unfreeze

    opt = fnopt.sgd({"backbone": 0.1, "head": 0.2}, momentum=0.9)
    frozen = FrozenDict(PARAMS)
    traces = []

    @jax.jit
    def step(params, state, t):
        traces.append(1)
        updates, state = opt.update(grads_at(t, params), state, params)
        return optax.apply_updates(params, updates), state

    p, s = frozen, opt.init(frozen)
    for t in range(3):
        p, s = step(p, s, t)
    assert len(traces) == 1
    expected, _ = run(opt, PARAMS, steps=3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), unfreeze(p), expected)


# ------------------------------------------------------------------ masks


def no_bias(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


@pytest.mark.parametrize("mask", [
    {"backbone": {"w": True, "b": False}, "head": True},   # full tree
    {"backbone": {"w": True, "b": False}, "head": True},   # (same, via callable below)
    no_bias,
])
@pytest.mark.parametrize("make", [T.add_weight_decay, T.add_decayed_weights])
def test_weight_decay_mask_equals_optax_masked(make, mask):
    params = PARAMS
    grads = grads_at(0, params)
    ours = make(0.3, mask=mask)
    theirs = optax.masked(optax.add_decayed_weights(0.3), mask)
    got, _ = ours.update(grads, ours.init(params), params)
    expected, _ = theirs.update(grads, theirs.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7), got, expected)
    # Hand-written: the masked-out bias is untouched.
    np.testing.assert_array_equal(got["backbone"]["b"], grads["backbone"]["b"])


def test_a_prefix_mask_decays_whole_subtrees():
    tx = T.add_decayed_weights(1.0, mask={"backbone": False, "head": True})
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    got, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(got["backbone"]["w"], 0.0)
    np.testing.assert_array_equal(got["head"]["w"], PARAMS["head"]["w"])


@pytest.mark.parametrize("alias", ["sgd", "adam", "adamw", "radam", "adagrad", "rmsprop", "ranger"])
def test_alias_mask_equals_a_run_without_decay_on_the_masked_leaves(alias):
    make = getattr(fnopt, alias)
    masked, _ = run(make(1e-2, weight_decay=0.1, mask=no_bias), PARAMS)
    decayed, _ = run(make(1e-2, weight_decay=0.1), PARAMS)
    undecayed, _ = run(make(1e-2, weight_decay=0.0), PARAMS)
    np.testing.assert_allclose(masked["backbone"]["w"], decayed["backbone"]["w"], rtol=1e-6)
    np.testing.assert_allclose(masked["backbone"]["b"], undecayed["backbone"]["b"], rtol=1e-6)
    assert not np.allclose(decayed["backbone"]["b"], undecayed["backbone"]["b"])


def test_bad_masks_raise_naming_the_call():
    with pytest.raises(TypeError, match=r"`adamw\(mask=...\)`"):
        fnopt.adamw(mask={"backbone": 1.0, "head": True})
    with pytest.raises(TypeError, match=r"`add_weight_decay\(mask=...\)`"):
        T.add_weight_decay(0.1, mask="bias")


# ------------------------------------------------- empty and partial trees

ALL = {
    "sgd": lambda: fnopt.sgd(0.1, momentum=0.9, weight_decay=0.1),
    "adam": lambda: fnopt.adam(0.1, amsgrad=True, weight_decay=0.1),
    "adamw": lambda: fnopt.adamw(0.1),
    "radam": lambda: fnopt.radam(0.1),
    "adagrad": lambda: fnopt.adagrad(0.1, initial_accumulator_value=0.1),
    "rmsprop": lambda: fnopt.rmsprop(0.1, momentum=0.9, centered=True),
    "ranger": lambda: fnopt.ranger(0.1),
    "clip": lambda: T.clip_by_global_norm(1.0),
    "skip_nonfinite": lambda: T.skip_nonfinite(fnopt.adam(0.1)),
    "lookahead": lambda: T.lookahead(fnopt.sgd(0.1, momentum=0.9)),
    "plateau": lambda: optax.chain(fnopt.adam(0.1), T.reduce_on_plateau()),
    "early_stopping": lambda: optax.chain(fnopt.sgd(0.1), T.early_stopping()),
    "grouped": lambda: fnopt.adamw({"a": 0.1, "b": 0.2}, mask={"a": True, "b": False}),
}


@pytest.mark.parametrize("name", ALL)
def test_every_optimizer_works_on_empty_and_partial_trees(name):
    opt = ALL[name]()
    # An empty tree.
    if name != "grouped":
        updates, _ = jax.jit(opt.update)({}, opt.init({}), {})
        assert updates == {}
    # None leaves (a frozen or absent part of the model): updates keep them.
    params = {"a": jnp.ones(2), "b": None}
    if name == "grouped":
        params = {"a": jnp.ones(2), "b": {"x": None, "y": jnp.ones(1)}}
    grads = jax.tree.map(lambda x: 0.5 * x, params)
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    # An all-False optax.masked and a partition group without parameters: as Optax's own.
    if name == "grouped":
        return  # its group tree needs the keys "a" and "b": covered above
    full = {"a": jnp.ones(2), "b": jnp.ones(3)}
    masked = optax.masked(opt, {"a": False, "b": False})
    updates, _ = jax.jit(masked.update)(full, masked.init(full), full)
    jax.tree.map(np.testing.assert_array_equal, updates, full)  # masked-out leaves pass through
    split = optax.partition({"frozen": opt, "train": optax.sgd(0.1)}, {"a": "train", "b": "train"})
    updates, _ = jax.jit(split.update)(full, split.init(full), full)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -0.1 * g), updates, full)


# --------------------------------------------------------------- logging


def test_partition_labels_name_the_groups_and_scope_the_plateau():
    labels = {"backbone": "bb", "head": "hd"}
    inner = optax.partition(
        {"bb": optax.chain(fnopt.sgd(0.05), T.reduce_on_plateau(patience=0)), "hd": fnopt.adam(0.1)}, labels
    )
    tx = optax.chain(inner, T.reduce_on_plateau(factor=0.5, patience=0))
    state = tx.init(PARAMS)
    state = fnopt.report(fnopt.report(state, 1.0), 2.0)  # one cut in each plateau
    hp = fnopt.hyperparams(state)
    assert float(hp["bb/learning_rate"]) == pytest.approx(0.05)
    assert float(hp["hd/learning_rate"]) == pytest.approx(0.1)
    assert {"hd/b1", "hd/b2", "hd/eps", "bb/plateau_scale", "plateau_scale"} <= set(hp)
    # The inner plateau (x0.1) acts on the backbone only; the outer (x0.5) on both.
    assert float(hp["bb/effective_learning_rate"]) == pytest.approx(0.05 * 0.1 * 0.5)
    assert float(hp["hd/effective_learning_rate"]) == pytest.approx(0.1 * 0.5)
    assert "effective_learning_rate" not in hp and "learning_rate_1" not in hp


def test_optax_contrib_plateau_scale_enters_the_effective_learning_rate():
    tx = optax.chain(fnopt.sgd({"backbone": 0.1, "head": 0.2}), optax.contrib.reduce_on_plateau(factor=0.5))
    state = tx.init(PARAMS)
    state = optax.tree_utils.tree_set(state, scale=jnp.asarray(0.5))  # as if it had cut once
    hp = fnopt.hyperparams(state)
    assert float(hp["plateau_scale"]) == 0.5
    assert float(hp["backbone/effective_learning_rate"]) == pytest.approx(0.05)
    assert float(hp["head/effective_learning_rate"]) == pytest.approx(0.1)


def test_inject_hyperparams_of_an_fnopt_optimizer_lists_each_name_once():
    tx = optax.inject_hyperparams(fnopt.adam)(learning_rate=0.1, b1=0.8)
    state = tx.init(PARAMS)
    _, state = tx.update(grads_at(0, PARAMS), state, PARAMS)
    hp = fnopt.hyperparams(state)
    assert not any(k.endswith("_1") for k in hp), sorted(hp)
    assert float(hp["learning_rate"]) == pytest.approx(0.1) and float(hp["b1"]) == pytest.approx(0.8)
    assert float(hp["effective_learning_rate"]) == pytest.approx(0.1)
    # An Optax optimizer under inject_hyperparams is still logged.
    state = optax.inject_hyperparams(optax.sgd)(learning_rate=0.3).init(PARAMS)
    assert float(fnopt.hyperparams(state)["learning_rate"]) == pytest.approx(0.3)


def test_hyperparams_inside_jit_with_groups():
    opt = fnopt.sgd({"backbone": S.step_decay(1.0, 1, 0.5), "head": 0.1})
    _, state = run(opt, PARAMS, steps=3)
    hp = jax.jit(fnopt.hyperparams)(state)
    # The last update used step 2: 1.0 * 0.5**2.
    assert float(hp["backbone/learning_rate"]) == 0.25 and float(hp["head/learning_rate"]) == pytest.approx(0.1)
