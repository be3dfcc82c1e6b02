"""The story of learning-rate schedules, replayed on MNIST-1D.

Trains the same small 1-D CNN with each recipe of the story, for the same step
budget and several seeds (the seeds train together, ``vmap``-ed, in one
compiled program per recipe):

1. SGD + momentum with ReduceLROnPlateau and early stopping (fed the
   validation loss every epoch),
2. Adam at its default learning rate,
3. SGD + cosine warm restarts (SGDR),
4. SGD + one-cycle with inverse momentum, peak LR from the LR range test
   (``LRFindResult.peak``),
5. Adam + one-cycle (b1 cycling), peak LR from the LR range test,
6. fastai's ``fit_one_cycle`` (AdamW, ``combined_cos`` for LR and b1), with
   Adam's range-test peak;

and the next chapter, on the same budget:

7. AdamW + warmup-stable-decay with a ``1-sqrt`` cooldown over the last 20 %
   (Hugging Face's WSD), peaking at Adam's range-test peak,
8. AdamW at a constant LR (a third of that peak) with a ``1-sqrt`` cooldown
   that starts when the validation loss stalls (``transforms.cooldown``,
   patience 2 epochs): no length fixed in advance,
9. Schedule-free AdamW at the range-test peak (evaluated at its averaged
   ``x``, ``schedule_free_eval_params``),
10. Prodigy (LR-free: ``learning_rate`` is only a cosine multiplier of its
    estimate ``d``).

It says what it does as it goes (data, the two LR range tests with their
suggestions, a progress bar per recipe; ``--no-progress`` prints one line per
recipe instead). Prints a table (final test accuracy mean +- std, steps to
reach 94% test accuracy — the CNN accuracy published for MNIST-1D —, wall
time; a row that stopped early says at which step, per seed) and writes to
``--out``: ``schedules.png`` (one panel per recipe, the plateau recipe showing
the LR cuts it really made), ``lr_find_sgd.png`` / ``lr_find_adam.png`` (the
range tests, the chosen peak marked) and ``accuracy.png`` (test accuracy vs
step, with a zoom on the last 30 % of the run). MNIST-1D is generated locally
by the ``mnist1d`` package.

    python examples/compare_schedules.py            # default: a few minutes on 2 CPU cores
    python examples/compare_schedules.py --full     # the longer, paper-sized run

Needs the ``examples`` extra (mnist1d, matplotlib, tqdm), which the README's
demo command installs.
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
    momentum_name: str = "momentum"  # "b1" for Adam
    stops: bool = False  # holds an early stopping
    records_lr: bool = False  # draw the effective LR it ran at (cuts, cooldown, Prodigy's d)
    eval_params: Callable | None = None  # (state, params) -> the params to evaluate


def make_recipes(total_steps: int, sgd_peak: float, adam_peak: float) -> list[Recipe]:
    T_ = total_steps
    sgdr_lr = S.cosine_warm_restarts(0.1, first_period=T_ / 7, period_mult=2)  # periods 1 + 2 + 4 = 7
    sgd_cycle = S.one_cycle(sgd_peak, T_)
    adam_cycle = S.one_cycle(adam_peak, T_)
    cycle_momentum = S.one_cycle_momentum(T_)
    fastai_lr = S.combined_cos(T_, 0.25, adam_peak / 25, adam_peak, adam_peak / 1e5)
    fastai_b1 = S.combined_cos(T_, 0.25, 0.95, 0.85, 0.95)
    wsd_lr = S.warmup_stable_decay(adam_peak, T_, warmup_steps=T_ // 10, decay_steps=T_ // 5)
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
            stops=True,
            records_lr=True,
        ),
        Recipe("Adam (lr 1e-3)", fnopt.adam(1e-3), S.constant(1e-3), S.constant(0.9), momentum_name="b1"),
        Recipe("SGD + SGDR", fnopt.sgd(sgdr_lr, momentum=0.9), sgdr_lr, S.constant(0.9)),
        Recipe(
            "SGD + one-cycle",
            fnopt.sgd(sgd_cycle, momentum=cycle_momentum),
            sgd_cycle,
            cycle_momentum,
        ),
        Recipe("Adam + one-cycle", fnopt.adam(adam_cycle, b1=cycle_momentum), adam_cycle, cycle_momentum,
               momentum_name="b1"),
        Recipe(
            "fastai fit_one_cycle",
            fnopt.adamw(fastai_lr, b1=fastai_b1, b2=0.99, eps=1e-5, weight_decay=0.01),
            fastai_lr,
            fastai_b1,
            momentum_name="b1",
        ),
        # The next chapter (2022-2024): WSD with a 1-sqrt cooldown, a cooldown
        # the run starts when the validation loss stalls, schedule-free and
        # LR-free training, on the same budget and peak.
        Recipe("AdamW + WSD (1-sqrt)", fnopt.adamw(wsd_lr, weight_decay=0.01), wsd_lr, S.constant(0.9),
               momentum_name="b1"),
        Recipe(
            "AdamW + plateau-triggered cooldown",
            fnopt.chain(fnopt.adamw(adam_peak / 3, weight_decay=0.01),
                        T.cooldown(decay_steps=T_ // 5, shape="1-sqrt", patience=2)),
            S.constant(adam_peak / 3),
            S.constant(0.9),
            reports=True,
            records_lr=True,
            momentum_name="b1",
        ),
        Recipe("Schedule-free AdamW", fnopt.schedule_free_adamw(adam_peak, warmup_steps=T_ // 20, weight_decay=0.01),
               S.warmup(adam_peak, T_ // 20), S.constant(0.9), momentum_name="b1",
               eval_params=fnopt.schedule_free_eval_params),
        Recipe("Prodigy (LR-free)", fnopt.prodigy(S.cosine_decay(1.0, T_)), None, S.constant(0.9),
               records_lr=True, momentum_name="b1"),
    ]


# ---------------------------------------------------------------- training


def epoch_batches(key, num_examples: int, batch_size: int):
    steps = num_examples // batch_size
    return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)


def train(recipe: Recipe, data, seeds, epochs: int, batch_size: int, progress: bool = True):
    """Trains one model per seed (vmapped) and returns accuracy curves, the step
    at which each seed stopped early (None if it did not), and for recipes that
    report a metric the effective learning rate after each epoch."""
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
        at = params if recipe.eval_params is None else recipe.eval_params(state, params)
        val_loss, _ = evaluate(at, x_val, y_val)
        test_loss, test_acc = evaluate(at, x_te, y_te)
        if recipe.reports:
            state = fnopt.report(state, val_loss)
        return params, state, test_acc

    run_epoch = jax.jit(jax.vmap(run_epoch))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    params = jax.vmap(init_cnn)(keys)
    state = jax.vmap(opt.init)(params)
    steps_per_epoch = len(data["train"][0]) // batch_size
    curve, steps, lrs = [], [], []
    stopped_at = [None] * len(seeds)
    bar = _progress(epochs, recipe.name, progress)
    start = time.perf_counter()
    for epoch in range(epochs):
        epoch_keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)
        order = jax.vmap(lambda k: epoch_batches(k, len(data["train"][0]), batch_size))(epoch_keys)
        params, state, acc = run_epoch(params, state, order)
        curve.append(np.asarray(acc))
        steps.append((epoch + 1) * steps_per_epoch)
        bar.update(1)
        bar.set_postfix_str(f"test acc {100 * curve[-1].mean():.1f} %")
        if recipe.records_lr:
            lrs.append(np.asarray(fnopt.hyperparams(state)["effective_learning_rate"]))
        if recipe.stops:
            stop = np.asarray(fnopt.should_stop(state))
            for i in np.flatnonzero(stop):
                if stopped_at[i] is None:
                    stopped_at[i] = steps[-1]
            if stop.all():
                bar.set_postfix_str(f"early-stopped, test acc {100 * curve[-1].mean():.1f} %")
                break
    jax.block_until_ready(params)
    bar.close()
    return {
        "steps": np.asarray(steps),
        "accuracy": np.stack(curve, axis=1),
        "seconds": time.perf_counter() - start,
        "stopped_at": stopped_at,
        "effective_lr": np.stack(lrs, axis=1) if lrs else None,
    }


class _Quiet:
    """Stands in for a tqdm bar under ``--no-progress`` (or without tqdm)."""

    def __init__(self, name):
        self.name, self.start, self.last = name, time.perf_counter(), ""
        print(f"  {name} ...", flush=True)

    def update(self, n):
        pass

    def set_postfix_str(self, text):
        self.last = text

    def close(self):
        print(f"  {self.name}: done in {time.perf_counter() - self.start:.1f} s ({self.last})", flush=True)


def _progress(epochs: int, name: str, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the examples extra
            pass
        else:
            return tqdm(total=epochs, desc=f"  {name}", unit="epoch", leave=True, dynamic_ncols=True)
    return _Quiet(name)


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
        if any(s is not None for s in r["stopped_at"]):  # per seed; "—" for a seed that ran to the end
            name += f" (stopped at step {' / '.join('—' if s is None else str(s) for s in r['stopped_at'])})"
        lines.append(
            f"| {name} | {100 * final.mean():.2f} ± {100 * final.std():.2f} % | {reach} | {r['seconds']:.1f} s |"
        )
    return "\n".join(lines)


def plot_schedules(recipes, results, total_steps: int, steps_per_epoch: int, path: str):
    """One panel per recipe (fnopt.plot.schedule_panels); a recipe that reports
    a metric shows the learning rate it really ran at, after plateau cuts."""
    from fnopt import plot

    panels = {}
    for recipe in recipes:
        lr = {"learning rate": recipe.lr}
        recorded, stopped_at = results[recipe.name]["effective_lr"], results[recipe.name]["stopped_at"]
        if recorded is not None:  # each seed's LR per epoch, up to its early stop
            lr = {f"effective LR, seed {i}": _per_epoch(lrs[: (stop or total_steps) // steps_per_epoch], steps_per_epoch)
                  for i, (lrs, stop) in enumerate(zip(recorded, stopped_at))}
        momentum = recipe.momentum
        if any(stopped_at):  # drawn up to the last early stop, as the LR is
            last = max(stop or total_steps for stop in stopped_at)
            momentum = lambda step, m=recipe.momentum, last=last: np.where(step <= last, m(step), np.nan)  # noqa: E731
        panels[recipe.name] = (lr, {recipe.momentum_name: momentum})
    plot.schedule_panels(
        panels, total_steps, title="Learning rate (solid, left axis) and momentum / Adam b1 (dashed, right axis)",
        path=path,
    )


def _per_epoch(values, steps_per_epoch: int):
    """A piecewise-constant schedule from one value per epoch (NaN after the last)."""
    values = np.asarray(values, np.float64)

    def schedule(step):
        epoch = np.asarray(step) // steps_per_epoch
        inside = epoch < len(values)
        return np.where(inside, values[np.minimum(epoch, len(values) - 1).astype(int)], np.nan)

    return schedule


def plot_accuracy(results, path, zoom_from: float = 0.7):
    """Test accuracy (mean ± std over seeds) against step, with the 94 % target;
    the right panel zooms on the last ``1 - zoom_from`` of the run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.5, 4.2), layout="constrained")  # room for the legend's notes
    full, zoom = fig.subplots(1, 2, width_ratios=(1.6, 1.0))
    last = max(int(r["steps"][-1]) for r in results.values())
    tails = {}  # name -> (lowest, highest, final) mean accuracy in the zoomed range
    outside = {}  # recipes the zoom does not show -> what the legend says of them
    for k, (name, r) in enumerate(results.items()):
        mean, std = r["accuracy"].mean(0), r["accuracy"].std(0)
        for ax in (full, zoom):
            ax.plot(r["steps"], mean, color=f"C{k}", label=name)
            ax.fill_between(r["steps"], mean - std, mean + std, color=f"C{k}", alpha=0.2)
        if any(s is not None for s in r["stopped_at"]):
            for ax in (full, zoom):
                ax.plot(r["steps"][-1:], mean[-1:], "X", color=f"C{k}", ms=8)
        tail = mean[r["steps"] >= zoom_from * last]
        if tail.size:
            tails[name] = (float(tail.min()), float(tail.max()), float(mean[-1]))
        else:
            outside[name] = f"{100 * mean[-1]:.1f} %, stopped at step {r['steps'][-1]}"
    for ax in (full, zoom):
        ax.axhline(TARGET_ACCURACY, color="k", lw=0.9, ls=":")
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    full.text(0.02, TARGET_ACCURACY + 0.005, f"target {100 * TARGET_ACCURACY:.0f} % (MNIST-1D's published CNN)",
              transform=full.get_yaxis_transform(), fontsize="small", va="bottom")
    full.set(ylabel="test accuracy", ylim=(0.5, 1.0), title="whole run")
    # The zoom shows the recipes that end near the target; the legend names the others.
    floor = TARGET_ACCURACY - 0.02
    near = [low for low, high, _ in tails.values() if high >= floor] or [floor]
    top = max([high for _, high, _ in tails.values()] + [TARGET_ACCURACY])
    zoom.set(xlim=(zoom_from * last, last), ylim=(max(min(near), floor) - 0.005, top + 0.01),
             title=f"zoom: last {100 * (1 - zoom_from):.0f} % of the steps")
    outside.update({name: f"{100 * final:.1f} %, below the zoom" for name, (_, high, final) in tails.items()
                    if high < floor})
    handles, labels = full.get_legend_handles_labels()
    # Recipes the zoom leaves out say so in the legend, where they hide no curve.
    labels = [f"{name} ({outside[name]})" if name in outside else name for name in labels]
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="k", ls=":"), Line2D([], [], color="gray", marker="X", ls="")]
    labels += [f"target {100 * TARGET_ACCURACY:.0f} %", "early-stopped here"]
    fig.legend(handles, labels, loc="outside right center", fontsize="small")
    fig.suptitle("MNIST-1D test accuracy by LR recipe (mean ± std over seeds)")
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compare LR schedules on MNIST-1D.")
    parser.add_argument("--full", action="store_true", help="paper-sized run (more epochs and seeds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default="out")
    parser.add_argument("--find-steps", type=int, default=100, help="steps of each LR range test")
    parser.add_argument("--no-progress", action="store_true", help="one line per recipe instead of progress bars")
    parser.add_argument("--recipes", default=None,
                        help="comma-separated parts of recipe names to run (default: all ten), e.g. 'one-cycle,WSD'")
    args = parser.parse_args(argv)
    epochs = args.epochs or (170 if args.full else 60)
    num_seeds = args.seeds or (5 if args.full else 3)
    os.makedirs(args.out, exist_ok=True)

    clock = time.perf_counter()
    print("Generating MNIST-1D locally (mnist1d.make_dataset) ...", flush=True)
    data = load_mnist1d()
    steps_per_epoch = len(data["train"][0]) // args.batch_size
    total = epochs * steps_per_epoch
    print(f"MNIST-1D: {len(data['train'][0])} train / {len(data['val'][0])} val / {len(data['test'][0])} test "
          f"({time.perf_counter() - clock:.1f} s); each recipe trains {total} steps ({epochs} epochs x "
          f"{steps_per_epoch}) for {num_seeds} seeds at once", flush=True)

    found = {}
    for key, label, make in (("sgd", "SGD (momentum 0.9)", lambda lr: fnopt.sgd(lr, momentum=0.9)),
                             ("adam", "Adam", lambda lr: fnopt.adam(lr))):
        print(f"LR range test, {label}: {args.find_steps} steps from 1e-5 to 10 ...", end=" ", flush=True)
        clock = time.perf_counter()
        result = range_test(data, make, args.batch_size, args.find_steps)
        rules = ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items())
        print(f"{time.perf_counter() - clock:.1f} s: {rules}; one-cycle peak (result.peak) {result.peak:.3g}", flush=True)
        result.plot(os.path.join(args.out, f"lr_find_{key}.png"), title=f"LR range test: {label}, MNIST-1D CNN",
                    mark=result.peak)
        found[key] = result
    sgd_peak, adam_peak = found["sgd"].peak, found["adam"].peak

    recipes = make_recipes(total, sgd_peak, adam_peak)
    if args.recipes:
        wanted = [w.strip().lower() for w in args.recipes.split(",") if w.strip()]
        recipes = [r for r in recipes if any(w in r.name.lower() for w in wanted)]
        if not recipes:
            parser.error(f"--recipes {args.recipes!r} matches no recipe")
    print(f"Training {len(recipes)} recipes:", flush=True)
    results = {}
    for recipe in recipes:
        results[recipe.name] = train(recipe, data, list(range(num_seeds)), epochs, args.batch_size,
                                     progress=not args.no_progress)

    text = table(results)
    print(text)
    plot_schedules(recipes, results, total, steps_per_epoch, os.path.join(args.out, "schedules.png"))
    plot_accuracy(results, os.path.join(args.out, "accuracy.png"))
    summary = {
        "epochs": epochs, "seeds": num_seeds, "total_steps": total,
        "lr_find": {key: result.suggestions for key, result in found.items()},
        "one_cycle_peak": {"sgd": sgd_peak, "adam": adam_peak},
        "recipes": {
            name: {
                "final_accuracy": r["accuracy"][:, -1].tolist(),
                "steps_to_94": steps_to_target(r["steps"], r["accuracy"]),
                "seconds": r["seconds"],
                "steps_run": int(r["steps"][-1]),
                "stopped_at": r["stopped_at"],
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
