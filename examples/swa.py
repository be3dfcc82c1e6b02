"""Weight averaging on MNIST-1D: SGD + SWA and an EMA of the weights, against
the plain run.

Two training runs of the 1-D CNN of ``compare_schedules.py`` (same data,
model and batches; several seeds trained together under ``vmap``):

1. SGD + momentum with a cosine decay over the whole run, carrying an EMA of
   its weights (``transforms.average_params("ema", warmup=True)``: the
   updates are unchanged, so the run itself *is* the plain run);
2. SGD + momentum with the same cosine until ``--swa-start`` of the run,
   then torch's ``SWALR`` (``schedules.swa``: annealed to ``--swa-lr`` over
   5 epochs, then held) and SWA, the running mean of the weights at the end
   of every epoch from the SWA start (``average_params("swa",
   start=..., every=steps_per_epoch)``).

Each run is evaluated at its last iterate and at its average
(``fnopt.averaged_params``). The CNN has no BatchNorm, so the averaged
weights need no recomputed statistics (see the README's "Weight averaging"
for models that have it). Prints a table (final test accuracy and loss, mean
+- std over seeds) and writes ``swa.png`` (test accuracy per epoch and the
two LR schedules) and ``swa.json`` to ``--out``.

    python examples/swa.py                 # about a minute on 2 CPU cores
    python examples/swa.py --epochs 5 --seeds 2

Needs the ``examples`` extra (mnist1d, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnopt
from fnopt import schedules as S
from fnopt import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_schedules import epoch_batches, evaluate, init_cnn, load_mnist1d, loss_fn

ANNEAL_EPOCHS = 5


def make_runs(lr: float, swa_lr: float, ema_decay: float, epochs: int, steps_per_epoch: int, swa_start: float):
    """The two runs: ``name -> (optimizer, LR schedule, SWA start step or None)``."""
    total = epochs * steps_per_epoch
    cosine = S.cosine_decay(lr, total)
    start_epoch = max(1, min(epochs - 1, round(swa_start * epochs)))
    b = start_epoch * steps_per_epoch
    # SWALR stepped per epoch: anneal over ANNEAL_EPOCHS epochs, counted in steps here.
    swa_lr_schedule = S.join([cosine, S.swa(float(cosine(b)), swa_lr, ANNEAL_EPOCHS * steps_per_epoch)], [b])
    # Snapshots at the end of each epoch from the SWA start: the updates with
    # counts b + k * steps_per_epoch - 1 leave the params of an epoch's end.
    swa_avg = T.average_params("swa", start=b + steps_per_epoch - 1, every=steps_per_epoch)
    return {
        "cosine": (fnopt.chain(fnopt.sgd(cosine, momentum=0.9), T.average_params("ema", decay=ema_decay, warmup=True)),
                   cosine, None),
        "cosine → SWA": (fnopt.chain(fnopt.sgd(swa_lr_schedule, momentum=0.9), swa_avg), swa_lr_schedule, b),
    }


def train(opt, data, seeds, epochs: int, batch_size: int):
    """Per epoch and seed: test accuracy and loss at the last iterate and at
    the average."""
    x_tr, y_tr = (jnp.asarray(a) for a in data["train"])
    x_te, y_te = (jnp.asarray(a) for a in data["test"])

    def run_epoch(params, state, order):
        def step(carry, idx):
            params, state = carry
            grads = jax.grad(loss_fn)(params, (x_tr[idx], y_tr[idx]))
            updates, state = opt.update(grads, state, params)
            return (fnopt.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, state), order)
        last = evaluate(params, x_te, y_te)
        averaged = evaluate(fnopt.averaged_params(state, params), x_te, y_te)
        return params, state, jnp.stack([last[1], averaged[1], last[0], averaged[0]])

    run_epoch = jax.jit(jax.vmap(run_epoch))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    params = jax.vmap(init_cnn)(keys)
    state = jax.vmap(opt.init)(params)
    curves = []
    for epoch in range(epochs):
        epoch_keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)
        order = jax.vmap(lambda k: epoch_batches(k, len(data["train"][0]), batch_size))(epoch_keys)
        params, state, metrics = run_epoch(params, state, order)
        curves.append(np.asarray(metrics))
    return np.stack(curves, axis=0)  # (epochs, seeds, 4): acc last, acc avg, loss last, loss avg


def table(rows) -> str:
    lines = [
        "| weights evaluated | final test acc (mean ± std) | final test loss (mean ± std) | test acc at half the run |",
        "|---|---|---|---|",
    ]
    for name, (acc, loss, half) in rows.items():
        lines.append(f"| {name} | {100 * acc.mean():.2f} ± {100 * acc.std():.2f} % | {loss.mean():.4f} ± {loss.std():.4f} "
                     f"| {100 * half.mean():.2f} ± {100 * half.std():.2f} % |")
    return "\n".join(lines)


def plot(results, runs, epochs: int, steps_per_epoch: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    epoch_axis = np.arange(1, epochs + 1)
    styles = {
        ("cosine", 0): ("plain SGD + cosine (last iterate)", "C0", "-"),
        ("cosine", 1): ("EMA of the same run", "C1", "-"),
        ("cosine → SWA", 0): ("SWA run, last iterate", "C2", ":"),
        ("cosine → SWA", 1): ("SWA (averaged weights)", "C3", "-"),
    }
    b = runs["cosine → SWA"][2]
    for (run, column), (label, color, ls) in styles.items():
        # The SWA average exists from the first snapshot (the end of the first SWA epoch) on.
        first = b // steps_per_epoch if (run, column) == ("cosine → SWA", 1) else 0
        acc = 100 * results[run][first:, :, column]
        ax_acc.plot(epoch_axis[first:], acc.mean(axis=1), color=color, ls=ls, label=label)
        ax_acc.fill_between(epoch_axis[first:], acc.min(axis=1), acc.max(axis=1), color=color, alpha=0.12)
    for ax in (ax_acc, ax_lr):
        ax.axvline(b / steps_per_epoch, color="gray", lw=0.8, ls="--")
    lo = np.percentile(100 * np.concatenate([results[r][epochs // 3:, :, :2].ravel() for r in results]), 2)
    ax_acc.set_ylim(max(lo - 1, 0), None)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%), mean and min-max over seeds")
    ax_acc.set_title("MNIST-1D CNN: SWA and EMA vs the plain run (dashed: SWA start)")
    ax_acc.legend(loc="lower right")
    steps = np.arange(epochs * steps_per_epoch)
    for name, (_, schedule, _) in runs.items():
        ax_lr.plot(steps / steps_per_epoch, np.asarray(schedule(jnp.asarray(steps))), label=name)
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("schedules (SWALR: schedules.swa)")
    ax_lr.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description="SGD + SWA / EMA against the plain run on MNIST-1D.")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1, help="peak LR of the cosine (SGD, momentum 0.9)")
    parser.add_argument("--swa-lr", type=float, default=0.02, help="SWALR's constant LR")
    parser.add_argument("--swa-start", type=float, default=0.75, help="fraction of the run before SWA")
    parser.add_argument("--ema-decay", type=float, default=0.998)
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    print("Generating MNIST-1D (mnist1d.make_dataset) ...", flush=True)
    data = load_mnist1d()
    steps_per_epoch = len(data["train"][0]) // args.batch_size
    runs = make_runs(args.lr, args.swa_lr, args.ema_decay, args.epochs, steps_per_epoch, args.swa_start)
    seeds = list(range(args.seeds))
    results, seconds = {}, {}
    for name, (opt, _, _) in runs.items():
        print(f"  {name} ...", flush=True)
        start = time.perf_counter()
        results[name] = train(opt, data, seeds, args.epochs, args.batch_size)
        seconds[name] = time.perf_counter() - start
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)

    final = {run: r[-1] for run, r in results.items()}  # (seeds, 4)
    half = {run: r[max(args.epochs // 2 - 1, 0)] for run, r in results.items()}

    def row(run, column):
        return final[run][:, column], final[run][:, column + 2], half[run][:, column]

    rows = {
        "plain SGD + cosine (last iterate)": row("cosine", 0),
        f"EMA (decay {args.ema_decay}, warmup) of the same run": row("cosine", 1),
        "SGD + cosine → SWALR, last iterate": row("cosine → SWA", 0),
        "SWA (mean of the epoch-end weights)": row("cosine → SWA", 1),
    }
    b = runs["cosine → SWA"][2]
    print(f"\n{args.epochs} epochs x {steps_per_epoch} steps, {args.seeds} seeds; SWA from epoch "
          f"{b // steps_per_epoch} (step {b}), swa_lr {args.swa_lr}\n")
    print(table(rows))
    plot(results, runs, args.epochs, steps_per_epoch, os.path.join(args.out, "swa.png"))
    summary = {
        "epochs": args.epochs,
        "seeds": args.seeds,
        "steps_per_epoch": steps_per_epoch,
        "swa_start_step": b,
        "seconds": seconds,
        "rows": {name: {"accuracy": acc.tolist(), "loss": loss.tolist(), "accuracy_at_half": mid.tolist()}
                 for name, (acc, loss, mid) in rows.items()},
    }
    with open(os.path.join(args.out, "swa.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
