"""Every alias inside Optax's wrappers and on partial trees: ``optax.partition``
(with an empty group), ``optax.masked`` (one leaf masked out), ``optax.MultiSteps``,
``optax.inject_hyperparams``, and params with a ``None`` leaf. Expected
values: a masked-out leaf passes through unchanged (Optax's rule); a frozen
partition group gets Optax's ``set_to_zero``; everything else stays finite and
keeps the params' structure."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sweeps
from test_state_buffers import ALIASES, make

import fnopt

PARAMS = {"w": jnp.full((3, 2), 0.5), "v": jnp.full((3, 4), -0.25)}  # matrices: Muon takes only those
GRADS = jax.tree.map(lambda p: jnp.cos(p + 1.0), PARAMS)


def finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sweeps.sweep(ALIASES, sweeps.OPTIMIZERS))
def test_alias_inside_optax_wrappers_and_on_partial_trees(name):
    opt = make(name)
    # masked: the masked-out leaf is passed through untouched.
    masked = optax.masked(opt, {"w": True, "v": False})
    u, _ = masked.update(GRADS, masked.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(u["v"], GRADS["v"])
    assert finite(u["w"])
    # partition with a group that holds no parameters, next to a frozen one.
    split = optax.partition({"train": opt, "frozen": optax.set_to_zero(), "empty": make(name)},
                            {"w": "train", "v": "frozen"})
    u, _ = split.update(GRADS, split.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(u["v"], 0.0)
    assert finite(u["w"])
    # MultiSteps: the first of two micro-steps emits zeros, the second a finite step.
    multi = optax.MultiSteps(opt, every_k_schedule=2)
    state = multi.init(PARAMS)
    with jax.numpy_dtype_promotion("standard"):  # Optax 0.2.8's MultiSteps mixes dtypes
        u1, state = multi.update(GRADS, state, PARAMS)
        u2, state = multi.update(GRADS, state, PARAMS)
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u1)) and finite(u2)
    # A None leaf (an absent part of the model) keeps its place.
    holey = {**PARAMS, "frozen": None}
    u, _ = opt.update({**GRADS, "frozen": None}, opt.init(holey), holey)
    assert u["frozen"] is None and finite(u)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "nadam", "lion", "prodigy", "schedule_free_adamw", "muon"])
def test_alias_under_inject_hyperparams_lists_each_name_once(name):
    alias = getattr(fnopt, name)
    tx = optax.inject_hyperparams(alias)(learning_rate=1e-3)
    state = tx.init(PARAMS)
    u, state = tx.update(GRADS, state, PARAMS)
    assert finite(u)
    hp = fnopt.hyperparams(state)
    assert not any(k.endswith("_1") for k in hp), sorted(hp)
    assert float(hp["learning_rate"]) == pytest.approx(1e-3)
