"""The story of learning-rate schedules, replayed on MNIST-1D.

Trains the same small 1-D CNN with each recipe of the story, for the same step
budget and several seeds (the seeds train together, ``vmap``-ed, in one
compiled program per recipe):

1. SGD + momentum with ReduceLROnPlateau and early stopping (fed the
   validation loss every epoch),
2. Adam at its default learning rate,
3. SGD + cosine warm restarts (SGDR),
4. SGD + one-cycle with inverse momentum, peak LR from the LR range test,
5. Adam + one-cycle (b1 cycling), peak LR from the LR range test,
6. fastai's ``fit_one_cycle`` (AdamW, ``combined_cos`` for LR and b1).

Prints a table (final test accuracy mean +- std, steps to reach 94% test
accuracy — the CNN accuracy published for MNIST-1D —, wall time) and writes
PNGs of the schedules, the LR range tests and test accuracy vs step to
``--out``. MNIST-1D is generated locally by the ``mnist1d`` package.

    python examples/compare_schedules.py            # default: a few minutes on 2 CPU cores
    python examples/compare_schedules.py --full     # the longer, paper-sized run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import fnopt
from fnopt import schedules as S
from fnopt import transforms as T

TARGET_ACCURACY = 0.94


# ---------------------------------------------------------------- data and model


def load_mnist1d(num_val: int = 500, seed: int = 42):
    """MNIST-1D generated locally (``make_dataset``, never a download); the last
    ``num_val`` training examples are held out for validation."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    x, y = data["x"].astype(np.float32)[..., None], data["y"].astype(np.int32)
    return {
        "train": (x[:-num_val], y[:-num_val]),
        "val": (x[-num_val:], y[-num_val:]),
        "test": (data["x_test"].astype(np.float32)[..., None], data["y_test"].astype(np.int32)),
    }


# MNIST-1D's reference CNN: three stride-2 convolutions (25 channels) and a
# linear read-out; (kernel width, in channels, out channels).
CONVS = ((5, 1, 25), (3, 25, 25), (3, 25, 25))


def init_cnn(key):
    """PyTorch's default init: uniform(+-1/sqrt(fan_in)) for weights and biases."""
    params = {}
    keys = jax.random.split(key, 2 * len(CONVS) + 2)
    shapes = [(f"conv{i}", (w, c_in, c_out), w * c_in) for i, (w, c_in, c_out) in enumerate(CONVS)]
    shapes.append(("dense", (5 * 25, 10), 5 * 25))
    for i, (name, shape, fan_in) in enumerate(shapes):
        bound = 1.0 / np.sqrt(fan_in)
        params[name] = {
            "w": jax.random.uniform(keys[2 * i], shape, jnp.float32, -bound, bound),
            "b": jax.random.uniform(keys[2 * i + 1], shape[-1:], jnp.float32, -bound, bound),
        }
    return params


def cnn(params, x):
    h = x
    for i in range(len(CONVS)):
        layer = params[f"conv{i}"]
        h = jax.lax.conv_general_dilated(h, layer["w"], (2,), [(1, 1)], dimension_numbers=("NWC", "WIO", "NWC"))
        h = jax.nn.relu(h + layer["b"])
    return h.reshape(h.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]


def loss_fn(params, batch):
    x, y = batch
    logits = cnn(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def evaluate(params, x, y):
    logits = cnn(params, x)
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return loss, jnp.mean(jnp.argmax(logits, axis=1).astype(y.dtype) == y)


# ---------------------------------------------------------------- recipes


class Recipe(NamedTuple):
    name: str
    optimizer: object  # optax.GradientTransformation
    lr: Callable | None  # schedules for the picture
    momentum: Callable | None
    reports: bool = False  # fed the validation loss each epoch


def make_recipes(total_steps: int, sgd_peak: float, adam_peak: float) -> list[Recipe]:
    T_ = total_steps
    sgdr_lr = S.cosine_warm_restarts(0.1, first_period=T_ / 7, period_mult=2)  # periods 1 + 2 + 4 = 7
    sgd_cycle = S.one_cycle(sgd_peak, T_)
    adam_cycle = S.one_cycle(adam_peak, T_)
    cycle_momentum = S.one_cycle_momentum(T_)
    fastai_lr = S.combined_cos(T_, 0.25, adam_peak / 25, adam_peak, adam_peak / 1e5)
    fastai_b1 = S.combined_cos(T_, 0.25, 0.95, 0.85, 0.95)
    return [
        Recipe(
            "SGD + plateau + early stop",
            fnopt.chain(
                fnopt.sgd(0.1, momentum=0.9),
                T.reduce_on_plateau(factor=0.3, patience=3),
                T.early_stopping(patience=10, min_delta=1e-4),
            ),
            S.constant(0.1),
            S.constant(0.9),
            reports=True,
        ),
        Recipe("Adam (lr 1e-3)", fnopt.adam(1e-3), S.constant(1e-3), S.constant(0.9)),
        Recipe("SGD + SGDR", fnopt.sgd(sgdr_lr, momentum=0.9), sgdr_lr, S.constant(0.9)),
        Recipe(
            "SGD + one-cycle",
            fnopt.sgd(sgd_cycle, momentum=cycle_momentum),
            sgd_cycle,
            cycle_momentum,
        ),
        Recipe("Adam + one-cycle", fnopt.adam(adam_cycle, b1=cycle_momentum), adam_cycle, cycle_momentum),
        Recipe(
            "fastai fit_one_cycle",
            fnopt.adamw(fastai_lr, b1=fastai_b1, b2=0.99, eps=1e-5, weight_decay=0.01),
            fastai_lr,
            fastai_b1,
        ),
    ]


# ---------------------------------------------------------------- training


def epoch_batches(key, num_examples: int, batch_size: int):
    steps = num_examples // batch_size
    return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)


def train(recipe: Recipe, data, seeds, epochs: int, batch_size: int, progress=None):
    """Trains one model per seed (vmapped) and returns accuracy curves."""
    x_tr, y_tr = (jnp.asarray(a) for a in data["train"])
    x_val, y_val = (jnp.asarray(a) for a in data["val"])
    x_te, y_te = (jnp.asarray(a) for a in data["test"])
    opt = recipe.optimizer

    def run_epoch(params, state, order):
        def step(carry, idx):
            params, state = carry
            grads = jax.grad(loss_fn)(params, (x_tr[idx], y_tr[idx]))
            updates, state = opt.update(grads, state, params)
            return (fnopt.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, state), order)
        val_loss, _ = evaluate(params, x_val, y_val)
        test_loss, test_acc = evaluate(params, x_te, y_te)
        if recipe.reports:
            state = fnopt.report(state, val_loss)
        return params, state, test_acc

    run_epoch = jax.jit(jax.vmap(run_epoch))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    params = jax.vmap(init_cnn)(keys)
    state = jax.vmap(opt.init)(params)
    steps_per_epoch = len(data["train"][0]) // batch_size
    curve, steps = [], []
    start = time.perf_counter()
    for epoch in range(epochs):
        epoch_keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)
        order = jax.vmap(lambda k: epoch_batches(k, len(data["train"][0]), batch_size))(epoch_keys)
        params, state, acc = run_epoch(params, state, order)
        curve.append(np.asarray(acc))
        steps.append((epoch + 1) * steps_per_epoch)
        if progress is not None:
            progress.update(1)
        if recipe.reports and bool(np.all(np.asarray(fnopt.should_stop(state)))):
            if progress is not None:
                progress.update(epochs - epoch - 1)
            break
    jax.block_until_ready(params)
    return {"steps": np.asarray(steps), "accuracy": np.stack(curve, axis=1), "seconds": time.perf_counter() - start}


def steps_to_target(steps, accuracy):
    """Per seed: first evaluated step with test accuracy >= the target (or None)."""
    out = []
    for curve in accuracy:
        hit = np.flatnonzero(curve >= TARGET_ACCURACY)
        out.append(int(steps[hit[0]]) if hit.size else None)
    return out


def range_test(data, make_optimizer, batch_size: int, num_steps: int = 100):
    x_tr, y_tr = data["train"]
    order = np.asarray(epoch_batches(jax.random.PRNGKey(1234), len(x_tr), batch_size))
    order = np.concatenate([order] * (num_steps // len(order) + 1))[:num_steps]
    batches = (x_tr[order], y_tr[order])
    params = init_cnn(jax.random.PRNGKey(0))
    return fnopt.lr_find(loss_fn, params, batches, make_optimizer, start_lr=1e-5, end_lr=10.0, num_steps=num_steps)


def one_cycle_peak(result) -> float:
    """The one-cycle peak read off an LR range test: fastai's ``steep`` rule
    (largest fall of the smoothed loss per log-LR) applied to the part of the
    curve before the loss minimum, skipping the first tenth as fastai does.

    Smith's advice is a peak where the loss still falls fastest, before it
    turns up; fastai's ``valley``/``minimum`` are meant for fine-tuning and
    land an order of magnitude lower here, and plain ``steep`` can pick the
    noise after divergence.
    """
    lrs, losses = np.asarray(result.lrs), np.asarray(result.losses)
    start = len(lrs) // 10
    stop = start + int(np.argmin(losses[start:])) + 1
    lrs, losses = lrs[start:stop], losses[start:stop]
    if len(lrs) < 2:
        return float(result.suggestions["valley"])
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


# ---------------------------------------------------------------- report


def table(results) -> str:
    lines = [
        "| recipe | final test acc (mean ± std) | steps to 94% (mean, reached) | wall time |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        final = r["accuracy"][:, -1]
        hits = [s for s in steps_to_target(r["steps"], r["accuracy"]) if s is not None]
        n = len(r["accuracy"])
        reach = f"{np.mean(hits):.0f} ({len(hits)}/{n})" if hits else f"— (0/{n})"
        lines.append(
            f"| {name} | {100 * final.mean():.2f} ± {100 * final.std():.2f} % | {reach} | {r['seconds']:.1f} s |"
        )
    return "\n".join(lines)


def plot_accuracy(results, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for name, r in results.items():
        mean, std = r["accuracy"].mean(0), r["accuracy"].std(0)
        ax.plot(r["steps"], mean, label=name)
        ax.fill_between(r["steps"], mean - std, mean + std, alpha=0.2)
    ax.axhline(TARGET_ACCURACY, color="k", lw=0.8, ls=":")
    ax.set(xlabel="step", ylabel="test accuracy", ylim=(0.5, 1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compare LR schedules on MNIST-1D.")
    parser.add_argument("--full", action="store_true", help="paper-sized run (more epochs and seeds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default="out")
    parser.add_argument("--find-steps", type=int, default=100, help="steps of each LR range test")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    epochs = args.epochs or (170 if args.full else 60)
    num_seeds = args.seeds or (5 if args.full else 3)
    os.makedirs(args.out, exist_ok=True)

    data = load_mnist1d()
    steps_per_epoch = len(data["train"][0]) // args.batch_size
    total = epochs * steps_per_epoch
    print(f"MNIST-1D: {len(data['train'][0])} train / {len(data['val'][0])} val / {len(data['test'][0])} test; "
          f"{total} steps ({epochs} epochs x {steps_per_epoch}), {num_seeds} seeds per recipe")

    sgd_find = range_test(data, lambda lr: fnopt.sgd(lr, momentum=0.9), args.batch_size, args.find_steps)
    adam_find = range_test(data, lambda lr: fnopt.adam(lr), args.batch_size, args.find_steps)
    sgd_peak, adam_peak = one_cycle_peak(sgd_find), one_cycle_peak(adam_find)
    for name, found in (("SGD", sgd_find), ("Adam", adam_find)):
        rules = ", ".join(f"{k} {v:.3g}" for k, v in found.suggestions.items())
        print(f"LR range test {name}: {rules}; one-cycle peak (steep before minimum) {one_cycle_peak(found):.3g}")
    sgd_find.plot(os.path.join(args.out, "lr_find_sgd.png"))
    adam_find.plot(os.path.join(args.out, "lr_find_adam.png"))

    recipes = make_recipes(total, sgd_peak, adam_peak)
    from fnopt import plot

    plot.schedules(
        {r.name + (" (before cuts)" if r.reports else ""): r.lr for r in recipes}, total, momentum={f"{r.name} (momentum/b1)": r.momentum for r in recipes[2:]},
        log_scale=True, title="learning rate (solid, log) and momentum / b1 (dashed)",
        path=os.path.join(args.out, "schedules.png"),
    )

    try:
        from tqdm import tqdm

        progress = None if args.no_progress else tqdm(total=epochs * len(recipes), unit="epoch")
    except ImportError:  # pragma: no cover
        progress = None
    results = {}
    for recipe in recipes:
        if progress is not None:
            progress.set_description(recipe.name)
        results[recipe.name] = train(recipe, data, list(range(num_seeds)), epochs, args.batch_size, progress)
    if progress is not None:
        progress.close()

    text = table(results)
    print(text)
    plot_accuracy(results, os.path.join(args.out, "accuracy.png"))
    summary = {
        "epochs": epochs, "seeds": num_seeds, "total_steps": total,
        "lr_find": {"sgd": sgd_find.suggestions, "adam": adam_find.suggestions},
        "one_cycle_peak": {"sgd": sgd_peak, "adam": adam_peak},
        "recipes": {
            name: {
                "final_accuracy": r["accuracy"][:, -1].tolist(),
                "steps_to_94": steps_to_target(r["steps"], r["accuracy"]),
                "seconds": r["seconds"],
                "steps_run": int(r["steps"][-1]),
            }
            for name, r in results.items()
        },
    }
    with open(os.path.join(args.out, "compare_schedules.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.out, "compare_schedules.md"), "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.out}/schedules.png, lr_find_sgd.png, lr_find_adam.png, accuracy.png, compare_schedules.json")
    return summary


if __name__ == "__main__":
    main()
