"""Quickstart: a schedule, an optimizer, a jitted training step.

Fits a small two-layer network to a noisy sine with SGD + one-cycle learning
rate and inverse momentum, prints the loss (from about 0.11 to under 0.01), and writes a picture of the
schedules to ``out/quickstart_schedules.png``.

    python examples/quickstart.py

Needs the ``plot`` extra for its picture (matplotlib), which the README's demo
command installs.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

import fnopt
from fnopt import schedules


def init_params(key, hidden=32):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (1, hidden)) * 1.0,
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(1),
    }


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)

    key_x, key_noise, key_init = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.uniform(key_x, (256, 1), minval=-3.0, maxval=3.0)
    y = jnp.sin(x) + 0.05 * jax.random.normal(key_noise, x.shape)

    # 1. Schedules are plain functions of the step. The peak 0.03 sits below
    #    where this full-batch problem blows up (about 0.05 with momentum 0.95;
    #    `fnopt.lr_find` finds that edge, see the README).
    lr = schedules.one_cycle(max_value=0.03, total_steps=args.steps)
    momentum = schedules.one_cycle_momentum(total_steps=args.steps)  # 0.95 -> 0.85 -> 0.95

    # 2. Any hyperparameter takes a number, an array or a schedule.
    optimizer = fnopt.sgd(lr, momentum=momentum, nesterov=True)

    # 3. A jitted step; Optax-style init/update.
    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return fnopt.apply_updates(params, updates), opt_state, loss

    params = init_params(key_init)
    opt_state = optimizer.init(params)
    for step in range(args.steps):
        params, opt_state, loss = train_step(params, opt_state)
        if not jnp.isfinite(loss):
            raise FloatingPointError(f"the loss diverged at step {step}: lower the peak learning rate")
        if step % (args.steps // 6) == 0 or step == args.steps - 1:
            hp = fnopt.hyperparams(opt_state)
            print(
                f"step {step:4d}  loss {float(loss):.5f}  "
                f"lr {float(hp['learning_rate']):.4f}  momentum {float(hp['momentum']):.3f}"
            )

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "quickstart_schedules.png")
    from fnopt import plot  # needs matplotlib (the `plot` or `examples` extra)

    plot.schedules({"one-cycle lr": lr}, args.steps, momentum={"momentum": momentum}, path=path)
    print(f"wrote {path}")
    final = float(loss_fn(params, x, y))
    print(f"final loss {final:.5f} (the noise floor is 0.0025)")
    return final


if __name__ == "__main__":
    main()
