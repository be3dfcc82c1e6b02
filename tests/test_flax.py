"""fnopt.flax: the Linen ``TrainState`` (``apply_gradients(value=...)``,
``report``, ``should_stop``) and ``flax.nnx.Optimizer`` with every fnopt
optimizer, plateau and early stopping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

flax = pytest.importorskip("flax")

import flax.linen as nn  # noqa: E402
from flax import nnx  # noqa: E402
from flax.training import train_state  # noqa: E402

import fnopt  # noqa: E402
import fnopt.flax  # noqa: E402
from fnopt.transforms import early_stopping, reduce_on_plateau  # noqa: E402

ALIASES = {
    "sgd": lambda: fnopt.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: fnopt.adam(0.01),
    "adamw": lambda: fnopt.adamw(0.01),
    "radam": lambda: fnopt.radam(0.01),
    "adagrad": lambda: fnopt.adagrad(0.1),
    "rmsprop": lambda: fnopt.rmsprop(0.01, momentum=0.5, centered=True),
    "ranger": lambda: fnopt.ranger(0.01),
}


def linen_state(tx):
    model = nn.Dense(1)
    params = model.init(jax.random.key(0), jnp.ones((1, 2), jnp.float32))["params"]
    return fnopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def test_linen_apply_gradients_forwards_value_to_the_plateau():
    # sgd(1) + plateau(patience 0, factor 0.5): every update is -scale * grad,
    # and the scale halves on each non-improving value (hand-worked).
    state = linen_state(optax.chain(fnopt.sgd(1.0), reduce_on_plateau(0.5, patience=0)))
    grads = jax.tree.map(jnp.ones_like, state.params)
    step = jax.jit(lambda s, v: s.apply_gradients(grads=grads, value=v))
    w0 = np.asarray(state.params["kernel"])
    moved = 0.0
    for value, scale in zip([3.0, 2.0, 2.0, 1.0, 4.0], [1, 1, 0.5, 0.5, 0.25]):
        state = step(state, value)
        moved += scale
        np.testing.assert_allclose(state.params["kernel"], w0 - moved, rtol=1e-6)
    assert int(state.step) == 5
    assert float(fnopt.hyperparams(state.opt_state)["effective_learning_rate"]) == 0.25


def test_linen_report_and_should_stop():
    tx = optax.chain(fnopt.sgd(0.1), reduce_on_plateau(0.1, patience=1), early_stopping(patience=3))
    state = linen_state(tx)
    grads = jax.tree.map(jnp.ones_like, state.params)
    report = jax.jit(lambda s, v: s.report(v))
    stops = []
    for val_loss in [1.0, 0.9, 0.95, 0.95, 0.95]:
        state = state.apply_gradients(grads=grads)  # no value: only report decides
        state = report(state, val_loss)
        stops.append(bool(state.should_stop))
    assert stops == [False, False, False, False, True]
    plateau = state.opt_state[1]
    assert float(plateau.scale) == pytest.approx(0.1)  # cut at the 2nd non-improvement
    params = state.params
    state = state.apply_gradients(grads=grads)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.params, params))


def test_linen_keywords_replace_fields_or_reach_the_optimizer():
    class BatchStatsState(fnopt.flax.TrainState):
        batch_stats: dict

    seen = {}

    def record_extra(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    # fnopt.chain sees the member that takes any keyword, so `rng` may pass
    # (in an optax.chain, fnopt.sgd cannot see it and rejects `rng`: the keyword rule)
    tx = fnopt.chain(optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), record_extra), fnopt.sgd(0.1))
    state = BatchStatsState.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=tx, batch_stats={"m": jnp.zeros(2)})
    state = state.apply_gradients(grads={"w": jnp.ones(2)}, batch_stats={"m": jnp.ones(2)}, value=1.5, rng=7)
    np.testing.assert_array_equal(state.batch_stats["m"], np.ones(2))
    assert seen == {"value": 1.5, "rng": 7}
    np.testing.assert_allclose(state.params["w"], 0.9 * np.ones(2))


def test_flax_own_train_state_still_works_without_value():
    """An update without ``value`` is legal, so Flax's unmodified TrainState
    runs a chain with a plateau (metric fed by ``fnopt.report`` only)."""
    tx = optax.chain(fnopt.sgd(1.0), reduce_on_plateau(0.5, patience=0))
    state = train_state.TrainState.create(apply_fn=None, params={"w": jnp.zeros(2)}, tx=tx)
    state = state.replace(opt_state=fnopt.report(fnopt.report(state.opt_state, 1.0), 1.0))
    state = state.apply_gradients(grads={"w": jnp.ones(2)})
    np.testing.assert_array_equal(state.params["w"], -0.5 * np.ones(2))
    # fnopt's TrainState also takes bare-array params (Flax's cannot)
    state = fnopt.flax.TrainState.create(apply_fn=None, params=jnp.zeros(2), tx=tx)
    state = state.apply_gradients(grads=jnp.ones(2), value=1.0)
    np.testing.assert_array_equal(state.params, -np.ones(2))


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.linear1 = nnx.Linear(3, 8, rngs=rngs)
        self.linear2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.linear2(jax.nn.tanh(self.linear1(x)))


X = jnp.linspace(-1.0, 1.0, 24, dtype=jnp.float32).reshape(8, 3)  # Flax params are float32
Y = jnp.sin(X.sum(axis=1, keepdims=True))


def mse(model):
    return jnp.mean((model(X) - Y) ** 2)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_nnx_optimizer_update_with_value_for_every_alias(name):
    """``nnx.Optimizer(...).update(model, grads, value=loss)`` runs every
    fnopt alias chained with plateau and early stopping, and matches the
    same optimizer driven functionally."""
    tx = optax.chain(ALIASES[name](), reduce_on_plateau(0.5, patience=1), early_stopping(patience=50))
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    ref_state = tx.init(params)

    # eager (cheaper than one compilation per alias); nnx.jit is covered below
    def step(model, optimizer, value):
        grads = nnx.grad(mse)(model)
        optimizer.update(model, grads, value=value)

    def ref_step(params, state, value):
        graphdef = nnx.graphdef(model)
        grads = jax.grad(lambda p: mse(nnx.merge(graphdef, p)))(params)
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    for value in [2.0, 1.0, 1.5, 1.5, 1.5, 0.5]:
        step(model, optimizer, jnp.float32(value))
        params, ref_state = ref_step(params, ref_state, jnp.float32(value))
    got = nnx.as_pure(nnx.state(model, nnx.Param))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, params)
    pure = nnx.as_pure(optimizer.opt_state)
    assert float(pure[1].scale) == 0.5  # 1.5 three times: the 2nd repeat cuts
    assert not bool(fnopt.should_stop(optimizer.opt_state))


def test_nnx_report_and_early_stopping_freeze_the_model():
    tx = optax.chain(fnopt.adam(0.01), reduce_on_plateau(0.5, patience=0), early_stopping(patience=2))
    model = MLP(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def epoch(model, optimizer, val_loss):
        optimizer.update(model, nnx.grad(mse)(model))
        fnopt.flax.report_nnx(optimizer, val_loss)
        return fnopt.should_stop(optimizer.opt_state)

    stops = [bool(epoch(model, optimizer, v)) for v in [1.0, 0.8, 0.9, 0.9]]
    assert stops == [False, False, False, True]
    pure = nnx.as_pure(optimizer.opt_state)
    assert float(pure[1].scale) == 0.25
    frozen = nnx.as_pure(nnx.state(model, nnx.Param))
    epoch(model, optimizer, 0.1)
    after = nnx.as_pure(nnx.state(model, nnx.Param))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), frozen, after))
