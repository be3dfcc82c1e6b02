"""Checkpointing: an optimizer state with a one-cycle schedule, plateau,
early-stopping and SWA-average state saves and restores with Orbax, and the restored run
continues bit-identically to an uninterrupted one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ocp = pytest.importorskip("orbax.checkpoint")
nn = pytest.importorskip("flax.linen")

import fnopt  # noqa: E402
import fnopt.flax  # noqa: E402
from fnopt.transforms import average_params, early_stopping, reduce_on_plateau  # noqa: E402

EPOCHS, STEPS = 8, 5
# validation metric per epoch: improves twice, then plateaus
VAL = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]

x = jnp.linspace(-1.0, 1.0, 4 * STEPS * 3, dtype=jnp.float32).reshape(STEPS, 4, 3)  # Flax params are float32
y = jnp.sum(x * jnp.array([1.0, -2.0, 0.5], jnp.float32), axis=-1, keepdims=True)


MODEL = nn.Dense(1)
TX = optax.chain(
    fnopt.sgd(fnopt.schedules.one_cycle(0.1, EPOCHS * STEPS), momentum=0.9),
    reduce_on_plateau(0.5, patience=1, cooldown=1, window=3),
    early_stopping(patience=3),
    average_params("swa", start=3, every=2),
)


def fresh_state():
    """What a (re)started program builds (the same model and tx objects, so
    the jitted epoch compiles once)."""
    params = MODEL.init(jax.random.key(0), x[0])["params"]
    return fnopt.flax.TrainState.create(apply_fn=MODEL.apply, params=params, tx=TX)


@jax.jit
def train_epoch(state, val):
    def step(state, batch):
        xb, yb = batch
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((state.apply_fn({"params": p}, xb) - yb) ** 2))(state.params)
        return state.apply_gradients(grads=grads, value=loss), loss

    state, losses = jax.lax.scan(step, state, (x, y))
    return state.report(val), losses


def run(state, epochs):
    losses = []
    for e in epochs:
        state, loss = train_epoch(state, VAL[e])
        losses.append(np.asarray(loss))
    return state, np.concatenate(losses)


def assert_bit_identical(a, b):
    if isinstance(a, fnopt.flax.TrainState):  # (its static fields hold model and tx objects)
        a, b = (a.step, a.params, a.opt_state), (b.step, b.params, b.opt_state)
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        assert u.tobytes() == v.tobytes()


@pytest.mark.parametrize("resume_at", [3, 6])
def test_restored_run_continues_bit_identically(tmp_path, resume_at):
    full, full_losses = run(fresh_state(), range(EPOCHS))
    # the run exercises every part of the state: a plateau cut and a stop
    plateau = full.opt_state[1]
    assert float(plateau.scale) < 1.0
    assert bool(full.should_stop)

    first, first_losses = run(fresh_state(), range(resume_at))
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, first)
    del first
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh_state())
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, target)
    assert isinstance(restored, fnopt.flax.TrainState)
    assert isinstance(restored.opt_state[1], fnopt.transforms.ReduceOnPlateauState)
    assert isinstance(restored.opt_state[2], fnopt.transforms.EarlyStoppingState)
    resumed, rest_losses = run(restored, range(resume_at, EPOCHS))
    assert_bit_identical(resumed, full)
    np.testing.assert_array_equal(np.concatenate([first_losses, rest_losses]), full_losses)


def test_bare_optimizer_state_round_trip(tmp_path):
    tx = optax.chain(fnopt.adam(1e-3), reduce_on_plateau(patience=0), early_stopping(patience=1))
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.bfloat16)}
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params, value=2.0)
    state = fnopt.report(state, 3.0)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "opt", state)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(tmp_path / "opt", jax.tree.map(ocp.utils.to_shape_dtype_struct, tx.init(params)))
    assert_bit_identical(restored, state)
    assert bool(fnopt.should_stop(restored))
    assert float(fnopt.hyperparams(restored)["plateau_scale"]) == pytest.approx(0.1)
