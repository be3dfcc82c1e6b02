"""SGD + ReduceLROnPlateau + early stopping on a Flax model, fed the
validation loss each epoch.

Trains a small MLP on MNIST-1D (generated locally by ``mnist1d``, never
downloaded) with SGD + momentum. At the end of every epoch the validation
loss is reported to the optimizer: the plateau transform halves the step size
after ``--patience`` epochs without improvement, and early stopping zeroes
every update (and the loop breaks) after ``--stop-patience`` epochs without
improvement. The same training runs with the Linen ``fnopt.flax.TrainState``
(default) or with ``flax.nnx.Optimizer`` (``--api nnx``); both print the same
table. Takes well under a minute on 2 CPU cores.

    python examples/flax_plateau_early_stopping.py
    python examples/flax_plateau_early_stopping.py --api nnx

Needs the ``examples`` extra (Flax, mnist1d): ``pip install -e ".[examples]"``,
which the README's demo command installs.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnopt
import fnopt.flax
from fnopt import transforms as T


def load_data(num_samples: int, seed: int = 0):
    """MNIST-1D from ``make_dataset`` with a small config; the last fifth of
    the training split is held out for validation."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int32)
    n_val = len(x) // 5
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:]), (data["x_test"].astype(np.float32), data["y_test"].astype(np.int32))


def make_optimizer(lr: float, patience: int, stop_patience: int) -> optax.GradientTransformationExtraArgs:
    return fnopt.chain(
        fnopt.sgd(lr, momentum=0.9),
        T.reduce_on_plateau(factor=0.5, patience=patience, threshold=1e-3),
        T.early_stopping(patience=stop_patience, min_delta=1e-4),  # last: zero means zero
    )


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits, labels):
    return jnp.mean(jnp.argmax(logits, -1).astype(labels.dtype) == labels)


def batches(x, y, batch_size, epoch):
    """The epoch's shuffled minibatches, stacked on a leading step axis."""
    order = np.random.default_rng(epoch).permutation(len(x))
    steps = len(x) // batch_size
    idx = order[: steps * batch_size].reshape(steps, batch_size)
    return jnp.asarray(x[idx]), jnp.asarray(y[idx])


# ------------------------------------------------------------------- Linen


def train_linen(data, tx, epochs, batch_size, hidden):
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(hidden)(x))
            x = nn.relu(nn.Dense(hidden)(x))
            return nn.Dense(10)(x)

    (x, y), (x_val, y_val), _ = data
    model = MLP()
    params = model.init(jax.random.key(0), jnp.ones((1, x.shape[1]), jnp.float32))["params"]
    state = fnopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def train_epoch(state, xb, yb):
        def step(state, batch):
            loss, grads = jax.value_and_grad(
                lambda p: cross_entropy(state.apply_fn({"params": p}, batch[0]), batch[1])
            )(state.params)
            return state.apply_gradients(grads=grads), loss

        state, losses = jax.lax.scan(step, state, (xb, yb))
        logits = state.apply_fn({"params": state.params}, x_val)
        val_loss = cross_entropy(logits, y_val)
        state = state.report(val_loss)  # one observation per epoch
        return state, losses.mean(), val_loss, accuracy(logits, y_val)

    history = []
    for epoch in range(epochs):
        state, train_loss, val_loss, val_acc = train_epoch(state, *batches(x, y, batch_size, epoch))
        history.append(log(epoch, train_loss, val_loss, val_acc, state.opt_state))
        if state.should_stop:
            break
    predict = jax.jit(lambda x: model.apply({"params": state.params}, x))
    return history, predict


# --------------------------------------------------------------------- NNX


def train_nnx(data, tx, epochs, batch_size, hidden):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, n_in, rngs):
            self.l1 = nnx.Linear(n_in, hidden, rngs=rngs)
            self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
            self.l3 = nnx.Linear(hidden, 10, rngs=rngs)

        def __call__(self, x):
            return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))

    (x, y), (x_val, y_val), _ = data
    model = MLP(x.shape[1], nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_epoch(model, optimizer, xb, yb):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def step(carry, batch):
            model, optimizer = carry
            loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(batch[0]), batch[1]))(model)
            optimizer.update(model, grads)  # `value=loss` here would feed every step instead
            return (model, optimizer), loss

        _, losses = step((model, optimizer), (xb, yb))
        logits = model(x_val)
        val_loss = cross_entropy(logits, y_val)
        fnopt.flax.report_nnx(optimizer, val_loss)
        return losses.mean(), val_loss, accuracy(logits, y_val)

    history = []
    for epoch in range(epochs):
        train_loss, val_loss, val_acc = train_epoch(model, optimizer, *batches(x, y, batch_size, epoch))
        opt_state = nnx.as_pure(optimizer.opt_state)
        history.append(log(epoch, train_loss, val_loss, val_acc, opt_state))
        if fnopt.should_stop(opt_state):
            break
    return history, nnx.jit(lambda x: model(x))


# ------------------------------------------------------------------ driver


def log(epoch, train_loss, val_loss, val_acc, opt_state):
    hp = fnopt.hyperparams(opt_state)
    row = dict(epoch=epoch + 1, train_loss=float(train_loss), val_loss=float(val_loss), val_acc=float(val_acc),
               lr=float(hp["effective_learning_rate"]), stop=bool(fnopt.should_stop(opt_state)))
    print(f"{row['epoch']:5d}  {row['train_loss']:10.4f}  {row['val_loss']:8.4f}  {row['val_acc']:7.3f}  "
          f"{row['lr']:9.5f}{'  early stop' if row['stop'] else ''}")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=["linen", "nnx"], default="linen")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--patience", type=int, default=3, help="plateau patience (epochs)")
    parser.add_argument("--stop-patience", type=int, default=8, help="early-stopping patience (epochs)")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)

    data = load_data(args.samples)
    tx = make_optimizer(args.lr, args.patience, args.stop_patience)
    train = train_linen if args.api == "linen" else train_nnx
    print(f"{args.api}: SGD(lr={args.lr}, momentum=0.9) + reduce_on_plateau(patience={args.patience}) "
          f"+ early_stopping(patience={args.stop_patience})")
    print("epoch  train loss  val loss  val acc  effective lr")
    start = time.perf_counter()
    history, predict = train(data, tx, args.epochs, args.batch_size, args.hidden)
    x_test, y_test = data[2]
    test_acc = float(accuracy(predict(jnp.asarray(x_test)), jnp.asarray(y_test)))
    cuts = sum(b["lr"] < a["lr"] for a, b in zip(history, history[1:]))
    print(f"{len(history)} epochs in {time.perf_counter() - start:.1f}s, {cuts} plateau cuts, "
          f"{'stopped early' if history[-1]['stop'] else 'ran all epochs'}; test accuracy {test_acc:.3f}")
    return {"history": history, "test_accuracy": test_acc}


if __name__ == "__main__":
    main()
