"""``report``, ``should_stop`` and ``hyperparams`` reach the states they
need through NNX optimizers, Linen train states and Optax's wrappers, and
return plain arrays (issue 11, items 5 and 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import fnopt
import fnopt.flax
from fnopt import transforms as T

PARAMS = {"a": jnp.ones(2), "b": jnp.ones(3)}


def plateau_chain():
    return optax.chain(fnopt.sgd(0.1), T.reduce_on_plateau(patience=0), T.early_stopping(patience=1))


WRAPPERS = {
    "chain": plateau_chain,
    "MultiSteps": lambda: optax.MultiSteps(plateau_chain(), every_k_schedule=2),
    "masked": lambda: optax.masked(plateau_chain(), {"a": True, "b": False}),
    "partition": lambda: optax.partition({"x": plateau_chain(), "y": optax.sgd(0.1)}, {"a": "x", "b": "y"}),
    "inject_hyperparams": lambda: optax.inject_hyperparams(
        lambda learning_rate: optax.chain(fnopt.sgd(learning_rate), T.reduce_on_plateau(patience=0),
                                          T.early_stopping(patience=1)))(learning_rate=0.1),
    "apply_if_finite": lambda: optax.apply_if_finite(plateau_chain(), 3),
    "named_chain": lambda: optax.named_chain(("sgd", fnopt.sgd(0.1)), ("plateau", T.reduce_on_plateau(patience=0)),
                                             ("stop", T.early_stopping(patience=1))),
    "lookahead": lambda: T.lookahead(plateau_chain()),
    "skip_nonfinite": lambda: T.skip_nonfinite(plateau_chain()),
}


@pytest.mark.parametrize("name", WRAPPERS)
def test_report_reaches_plateau_and_early_stopping_through_every_wrapper(name):
    tx = WRAPPERS[name]()
    state = tx.init(PARAMS)
    state = jax.jit(fnopt.report)(state, 1.0)
    state = jax.jit(fnopt.report)(state, 2.0)  # no improvement: a cut (patience 0) and a stop (patience 1)
    hp = fnopt.hyperparams(state)
    assert float(hp["plateau_scale"] if "plateau_scale" in hp else hp["x/plateau_scale"]) == pytest.approx(0.1)
    assert bool(fnopt.should_stop(state))


class Tiny(nnx.Module):
    def __init__(self, rngs):
        self.body = nnx.Linear(2, 3, rngs=rngs)
        self.head = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.body(x)))


def nnx_optimizer(tx):
    return nnx.Optimizer(Tiny(nnx.Rngs(0)), tx, wrt=nnx.Param)


def test_report_should_stop_and_hyperparams_accept_an_nnx_optimizer_and_its_state():
    optimizer = nnx_optimizer(plateau_chain())
    assert fnopt.report(optimizer, 1.0) is optimizer  # in place, NNX style
    fnopt.report(optimizer.opt_state, 2.0)  # the state itself: also in place
    hp = fnopt.hyperparams(optimizer)
    assert all(type(v) is type(jnp.zeros(())) for v in hp.values()), {k: type(v) for k, v in hp.items()}
    assert float(hp["plateau_scale"]) == pytest.approx(0.1)
    assert float(fnopt.hyperparams(optimizer.opt_state)["effective_learning_rate"]) == pytest.approx(0.01)
    stopped = fnopt.should_stop(optimizer)
    assert isinstance(stopped, jax.Array) and bool(stopped)
    assert bool(fnopt.should_stop(optimizer.opt_state))


def test_report_on_an_nnx_optimizer_inside_nnx_jit():
    optimizer = nnx_optimizer(plateau_chain())

    @nnx.jit
    def observe(optimizer, value):
        fnopt.report(optimizer, value)
        return fnopt.should_stop(optimizer)

    assert not bool(observe(optimizer, jnp.float32(1.0)))
    assert bool(observe(optimizer, jnp.float32(3.0)))
    assert float(fnopt.hyperparams(optimizer)["plateau_scale"]) == pytest.approx(0.1)


def test_group_trees_match_nnx_state_keys():
    tx = fnopt.adamw({"body": 1e-3, "head": 1e-2}, weight_decay={"body": 0.1, "head": 0.0})
    x = jnp.ones((4, 2), jnp.float32)  # Flax params are float32, also under x64

    def loss(m):
        return jnp.mean(m(x) ** 2)

    m = Tiny(nnx.Rngs(0))
    optimizer = nnx.Optimizer(m, tx, wrt=nnx.Param)
    before = nnx.as_pure(nnx.state(m, nnx.Param))
    optimizer.update(m, nnx.grad(loss)(m))
    after = nnx.as_pure(nnx.state(m, nnx.Param))
    hp = fnopt.hyperparams(optimizer)
    assert float(hp["head/learning_rate"]) == pytest.approx(1e-2) and float(hp["body/weight_decay"]) == pytest.approx(0.1)
    # AdamW's first step moves every weight by about lr (sign of the gradient).
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), after, before)
    assert moved["head"]["kernel"] == pytest.approx(1e-2, rel=1e-3)
    assert moved["body"]["kernel"] == pytest.approx(1e-3, rel=0.1)


def test_report_should_stop_and_hyperparams_accept_a_linen_train_state():
    state = fnopt.flax.TrainState.create(apply_fn=None, params=PARAMS, tx=plateau_chain())
    new = fnopt.report(fnopt.report(state, 1.0), 2.0)
    assert isinstance(new, fnopt.flax.TrainState)
    assert bool(fnopt.should_stop(new)) and not bool(fnopt.should_stop(state))
    assert float(fnopt.hyperparams(new)["effective_learning_rate"]) == pytest.approx(0.01)


def test_writing_a_recorded_value_has_no_effect_on_the_next_update():
    """``tree_set`` on the record is pinned as a no-op: the record is what the
    last update used, not an input (README: "Changing a hyperparameter during
    a run")."""
    opt = fnopt.sgd(0.1, momentum=0.9)
    state = opt.init(PARAMS)
    edited = optax.tree_utils.tree_set(state, learning_rate=jnp.asarray(5.0))
    assert float(fnopt.hyperparams(edited)["learning_rate"]) == 5.0  # the record was written...
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    expected, _ = opt.update(grads, state, PARAMS)
    got, after = opt.update(grads, edited, PARAMS)
    jax.tree.map(np.testing.assert_array_equal, got, expected)  # ...and ignored by the update
    assert float(fnopt.hyperparams(after)["learning_rate"]) == pytest.approx(0.1)
    # The supported ways: a traced value, a schedule, or inject_hyperparams.
    tx = optax.inject_hyperparams(fnopt.sgd)(learning_rate=0.1)
    state = optax.tree_utils.tree_set(tx.init(PARAMS), learning_rate=jnp.asarray(0.5))
    updates, _ = tx.update(grads, state, PARAMS)
    np.testing.assert_allclose(updates["a"], -0.5)


def test_report_without_a_plateau_names_the_problem():
    with pytest.raises(ValueError, match="holds no `reduce_on_plateau`, `early_stopping` or `cooldown"):
        fnopt.report(nnx_optimizer(fnopt.sgd(0.1)), 1.0)
    with pytest.raises(ValueError, match="holds no `early_stopping`"):
        fnopt.should_stop(fnopt.sgd(0.1).init(PARAMS))


def averaging_chain():
    return fnopt.chain(fnopt.sgd(0.1), T.average_params("swa"))


AVERAGING_WRAPPERS = {
    "chain": averaging_chain,
    "MultiSteps": lambda: optax.MultiSteps(averaging_chain(), every_k_schedule=1),
    "masked": lambda: optax.masked(averaging_chain(), {"a": True, "b": False}),
    "partition": lambda: optax.partition({"x": averaging_chain(), "y": optax.sgd(0.1)}, {"a": "x", "b": "y"}),
    "inject_hyperparams": lambda: optax.inject_hyperparams(
        lambda learning_rate: fnopt.chain(fnopt.sgd(learning_rate), T.average_params("swa")))(learning_rate=0.1),
    "apply_if_finite": lambda: optax.apply_if_finite(averaging_chain(), 3),
    "named_chain": lambda: optax.named_chain(("sgd", fnopt.sgd(0.1)), ("swa", T.average_params("swa"))),
    "skip_nonfinite": lambda: T.skip_nonfinite(averaging_chain()),
    "accumulate_gradients": lambda: T.accumulate_gradients(averaging_chain(), 1),
}


@pytest.mark.parametrize("name", AVERAGING_WRAPPERS)
def test_averaged_params_reaches_the_average_through_every_wrapper(name):
    tx = AVERAGING_WRAPPERS[name]()
    params, state = PARAMS, tx.init(PARAMS)

    @jax.jit
    def step(params, state, k):
        grads = jax.tree.map(lambda p: jnp.full_like(p, k), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    seen = []
    with jax.numpy_dtype_promotion("standard"):  # MultiSteps divides by an int32 count
        for k in (1.0, 2.0, 4.0):
            params, state = step(params, state, jnp.asarray(k, params["a"].dtype))
            seen.append(np.asarray(params["a"], np.float64))
    averaged = fnopt.averaged_params(state, params)
    np.testing.assert_allclose(np.asarray(averaged["a"]), np.mean(seen, axis=0), rtol=1e-6)
    if name in ("masked", "partition"):  # "b" is not averaged: its params come back
        np.testing.assert_array_equal(np.asarray(averaged["b"]), np.asarray(params["b"]))
    else:
        assert not np.allclose(np.asarray(averaged["b"]), np.asarray(params["b"]))
