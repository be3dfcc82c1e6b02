"""Checkpoint and resume a Flax TrainState whose optimizer carries a one-cycle
schedule, plateau reduction and early stopping.

fnopt optimizer states are plain pytrees of arrays (step counters, momentum,
the plateau scale and counters, the early-stopping flag), so Orbax saves them
like parameters. This example trains a small regression model, saving a
checkpoint every epoch with ``orbax.checkpoint.CheckpointManager``; a second
run "crashes" part-way, a third restores the latest checkpoint into a freshly
built state and finishes. The resumed run ends bit-identical to an
uninterrupted one.

    python examples/checkpoint_resume.py

Needs the ``examples`` extra (Flax and Orbax): ``pip install -e ".[examples]"``,
which the README's demo command installs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import fnopt
import fnopt.flax
from fnopt import schedules
from fnopt import transforms as T

STEPS_PER_EPOCH = 20


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS_PER_EPOCH, 32, 8)).astype(np.float32)
    w = rng.normal(size=(8, 1)).astype(np.float32)
    y = np.tanh(x @ w) + 0.1 * rng.normal(size=(STEPS_PER_EPOCH, 32, 1)).astype(np.float32)
    x_val = rng.normal(size=(256, 8)).astype(np.float32)
    y_val = np.tanh(x_val @ w) + 0.1 * rng.normal(size=(256, 1)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(x_val), jnp.asarray(y_val)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(32)(x)))


def make_optimizer(epochs):
    total = epochs * STEPS_PER_EPOCH
    return fnopt.chain(
        fnopt.sgd(schedules.one_cycle(0.2, total), momentum=schedules.one_cycle_momentum(total)),
        T.reduce_on_plateau(factor=0.5, patience=2),
        T.early_stopping(patience=5, min_delta=1e-4),
    )


def fresh_state(model, tx):
    """What a (re)started program builds before anything is restored."""
    params = model.init(jax.random.key(0), jnp.ones((1, 8), jnp.float32))["params"]
    return fnopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def make_train_epoch(data):
    x, y, x_val, y_val = data

    def mse(state, params, xb, yb):
        return jnp.mean((state.apply_fn({"params": params}, xb) - yb) ** 2)

    @jax.jit
    def train_epoch(state):
        def step(state, batch):
            loss, grads = jax.value_and_grad(lambda p: mse(state, p, *batch))(state.params)
            return state.apply_gradients(grads=grads), loss

        state, _ = jax.lax.scan(step, state, (x, y))
        val_loss = mse(state, state.params, x_val, y_val)
        return state.report(val_loss), val_loss

    return train_epoch


def train(state, train_epoch, epochs, manager=None, crash_at=None, verbose=False):
    """Trains from ``state.step`` to ``epochs`` epochs (or until early
    stopping), saving a checkpoint after every epoch when given a manager."""
    start = int(state.step) // STEPS_PER_EPOCH
    for epoch in range(start, epochs):
        if epoch == crash_at:
            print(f"  ... simulated crash before epoch {epoch + 1}")
            return state
        state, val_loss = train_epoch(state)
        if manager is not None:
            manager.save(epoch + 1, args=ocp.args.StandardSave(state))
        if verbose:
            hp = fnopt.hyperparams(state.opt_state)
            print(f"  epoch {epoch + 1:3d}  val loss {float(val_loss):.5f}  "
                  f"lr {float(hp['effective_learning_rate']):.5f}  plateau scale {float(hp['plateau_scale']):.3f}"
                  f"{'  early stop' if state.should_stop else ''}")
        if state.should_stop:
            break
    return state


def leaves_identical(a, b):
    la, lb = jax.tree.leaves((a.step, a.params, a.opt_state)), jax.tree.leaves((b.step, b.params, b.opt_state))
    return len(la) == len(lb) and all(
        np.asarray(u).dtype == np.asarray(v).dtype and np.asarray(u).tobytes() == np.asarray(v).tobytes()
        for u, v in zip(la, lb)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--crash-at", type=int, default=15, help="epoch before which the second run dies")
    parser.add_argument("--out", default=None, help="checkpoint directory (default: a temporary one)")
    args = parser.parse_args(argv)

    train_epoch = make_train_epoch(make_data())
    # (reusing the model and optimizer objects lets every run share one compiled epoch)
    model, tx = MLP(), make_optimizer(args.epochs)
    print("uninterrupted run:")
    reference = train(fresh_state(model, tx), train_epoch, args.epochs, verbose=True)

    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.abspath(os.path.join(args.out or tmp, "checkpoints"))
        shutil.rmtree(directory, ignore_errors=True)  # a fresh run: no stale checkpoints
        options = ocp.CheckpointManagerOptions(max_to_keep=2)
        print(f"interrupted run, checkpoints in {directory}:")
        with ocp.CheckpointManager(directory, options=options) as manager:
            train(fresh_state(model, tx), train_epoch, args.epochs, manager, crash_at=args.crash_at)

        with ocp.CheckpointManager(directory, options=options) as manager:
            latest = manager.latest_step()
            target = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh_state(model, tx))
            restored = manager.restore(latest, args=ocp.args.StandardRestore(target))
            plateau, stopper = restored.opt_state[1], restored.opt_state[2]
            print(f"restored epoch {latest}: step {int(restored.step)}, plateau scale {float(plateau.scale):.3f}, "
                  f"best val loss {float(stopper.best):.5f}, wait {int(stopper.wait)}")
            resumed = train(restored, train_epoch, args.epochs, manager)

    identical = leaves_identical(resumed, reference)
    print(f"resumed run stopped at step {int(resumed.step)} (uninterrupted: {int(reference.step)}); "
          f"bit-identical: {identical}")
    return {"identical": identical, "steps": int(resumed.step), "stopped": bool(resumed.should_stop)}


if __name__ == "__main__":
    main()
