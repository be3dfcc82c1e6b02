"""Data-parallel training over a mesh of (simulated) devices.

Trains a small MLP classifier on synthetic data with the batch sharded over
the "data" axis of an 8-device mesh and the parameters replicated: one
``jax.jit`` step, the optimizer state laid out like the parameters, gradient
clipping, AdamW on a one-cycle schedule, and plateau reduction fed the
validation loss once per epoch with ``fnopt.report``. On a CPU-only machine
the 8 devices are simulated (``XLA_FLAGS`` is set before JAX starts).

    python examples/data_parallel.py               # 8 epochs
    python examples/data_parallel.py --epochs 2    # quick

Needs only fnopt itself (no extra).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import fnopt  # noqa: E402
from fnopt import schedules  # noqa: E402
from fnopt import transforms as T  # noqa: E402

N_FEATURES, N_CLASSES = 20, 4


def make_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy nonlinear ``N_CLASSES``-way classification problem."""
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    teacher = np.random.default_rng(1234).standard_normal((N_FEATURES, N_CLASSES))
    logits = np.sin(x @ teacher / np.sqrt(N_FEATURES)) * 3 + 0.3 * rng.standard_normal((n, N_CLASSES))
    return x, logits.argmax(axis=1).astype(np.int32)


def init_params(key: jax.Array, hidden: int = 64) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (N_FEATURES, hidden)) / np.sqrt(N_FEATURES),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, N_CLASSES)) / np.sqrt(hidden),
        "b2": jnp.zeros(N_CLASSES),
    }


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jax.nn.gelu(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256, help="global; split over the devices")
    args = parser.parse_args(argv)

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",))
    replicated = NamedSharding(mesh, P())
    by_rows = NamedSharding(mesh, P("data"))  # each device holds batch_size / n rows
    print(f"{len(devices)} devices, mesh {dict(mesh.shape)}, global batch {args.batch_size}")

    rng = np.random.default_rng(0)
    x_train, y_train = make_data(rng, args.steps_per_epoch * args.batch_size)
    x_val, y_val = jax.device_put(make_data(rng, 8 * 256), by_rows)

    total_steps = args.epochs * args.steps_per_epoch
    optimizer = fnopt.chain(
        T.clip_by_global_norm(1.0),
        fnopt.adamw(schedules.one_cycle(1e-2, total_steps), weight_decay=1e-4),
        T.reduce_on_plateau(factor=0.5, patience=1),
    )
    params = jax.device_put(init_params(jax.random.key(0)), replicated)
    opt_state = jax.jit(optimizer.init)(params)  # laid out like params

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return fnopt.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def end_epoch(params, opt_state, x, y):
        val_loss = loss_fn(params, x, y)
        return fnopt.report(opt_state, val_loss), val_loss

    history = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(args.steps_per_epoch):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x, y = jax.device_put((x_train[idx], y_train[idx]), by_rows)
            params, opt_state, loss = train_step(params, opt_state, x, y)
            losses.append(loss)
        opt_state, val_loss = end_epoch(params, opt_state, x_val, y_val)
        train_loss = float(np.mean(jax.device_get(losses)))
        scale = float(fnopt.hyperparams(opt_state)["plateau_scale"])
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": float(val_loss), "scale": scale})
        print(f"epoch {epoch:2d}  train loss {train_loss:.4f}  val loss {float(val_loss):.4f}  plateau scale {scale:g}")

    state_devices = sorted({len(leaf.sharding.device_set) for leaf in jax.tree.leaves(opt_state)})
    print(
        f"done in {time.perf_counter() - start:.1f} s: val loss {history[0]['val_loss']:.4f} -> "
        f"{history[-1]['val_loss']:.4f}; params on {len(params['w1'].sharding.device_set)} devices, "
        f"optimizer state on {state_devices} devices, {args.batch_size // len(devices)} rows per device"
    )
    return {"history": history}


if __name__ == "__main__":
    main()
