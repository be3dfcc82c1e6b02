"""A whole training step (forward, backward, optimizer) on a model of many small leaves.

``step_time.py`` times the optimizer step alone, with the gradients given.
Here the gradients come from a model, so the layout's cost on the model side
counts too: the model is a residual MLP of ``--blocks`` blocks,
``h <- h + tanh(h @ w + b) @ v``, each block three leaves (``w``, ``v``: d x d,
``b``: d), trained on a fixed random batch with a squared loss. One jitted,
donated call per step:

- ``optax``: the params as a tree, Optax's optimizer (``update`` + ``apply_updates``);
- ``fnopt``: the tree, ``fnopt.apply_gradients`` (the fused kernel's whole step);
- ``fnopt_packed``: the tree, ``fnopt.packed`` (the state one array per dtype);
- ``fnopt_flat``: ``fnopt.flat_params``, the params one array per dtype, the loss on ``view(flat)``;
- ``optax_flat``: the same flat params stepped by Optax's optimizer (the layout without fnopt's kernel);
- ``grad_tree``, ``grad_flat``: the forward and backward pass alone (no optimizer), in each layout: the
  model's share (``grad_tree`` also returns every gradient leaf, a cost the whole steps do not pay);
- ``torch``: the same model in PyTorch, ``torch.optim``'s fused optimizer (foreach where fused is
  missing), when torch imports.

All run interleaved in one process, the order alternating, and the medians
are reported with the ratios.

    python benchmarks/train_step.py --blocks 1000 --reps 15 --json out.json --md out.md
    python benchmarks/train_step.py --tiny      # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fnopt
from step_time import report, torch_importable  # this script's folder is on sys.path

CASES: dict[str, tuple[Callable[[], Any], Callable[[], Any], tuple[str, dict]]] = {
    "adam": (lambda: fnopt.adam(1e-3), lambda: optax.adam(1e-3), ("Adam", dict(lr=1e-3))),
    "adamw": (lambda: fnopt.adamw(1e-3, weight_decay=1e-2), lambda: optax.adamw(1e-3, weight_decay=1e-2),
              ("AdamW", dict(lr=1e-3, weight_decay=1e-2))),
    "sgd_momentum": (lambda: fnopt.sgd(1e-2, momentum=0.9), lambda: optax.sgd(1e-2, momentum=0.9),
                     ("SGD", dict(lr=1e-2, momentum=0.9))),
}


def init_model(blocks: int, d: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``{"block_0000": {"w", "v", "b"}, ...}`` in float32 NumPy; ``v`` scaled
    by ``1 / sqrt(blocks)`` so the residual stream stays finite at any depth."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(blocks):
        out[f"block_{i:04d}"] = {
            "w": (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32),
            "v": (rng.standard_normal((d, d)) / np.sqrt(d * blocks)).astype(np.float32),
            "b": np.zeros(d, np.float32),
        }
    return out


def loss_fn(params, x, y):
    h = x
    for name in sorted(params):
        p = params[name]
        h = h + jnp.tanh(h @ p["w"] + p["b"]) @ p["v"]
    return jnp.mean((h - y) ** 2)


def make_step(tx, layout: str, view, whole: bool):
    """One training step ``(params, state, x, y) -> (params, state, loss)``."""
    def step(params, state, x, y):
        loss = (lambda f, a, b: loss_fn(view(f), a, b)) if layout == "flat" else loss_fn
        value, grads = jax.value_and_grad(loss)(params, x, y)
        if whole:
            params, state = fnopt.apply_gradients(tx, grads, state, params)
        else:
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params, state, value
    return step


class JaxRunner:
    def __init__(self, step, params, state, x, y, donate=(0, 1)):
        self.x, self.y = x, y
        t0 = time.perf_counter()
        self.compiled = jax.jit(step, donate_argnums=donate).lower(params, state, x, y).compile()
        self.compile_s = time.perf_counter() - t0
        self.params, self.state, self.donate = params, state, donate
        for _ in range(2):
            self.run()

    def run(self) -> float:
        t0 = time.perf_counter()
        out = self.compiled(self.params, self.state, self.x, self.y)
        jax.block_until_ready(out)
        if self.donate:
            self.params, self.state = out[0], out[1]
        return time.perf_counter() - t0

    def close(self):
        del self.params, self.state, self.compiled


def grad_only(view):
    """The forward and backward pass alone, ``view`` None for the tree layout."""
    def run(params, state, x, y):
        del state
        return jax.value_and_grad(lambda f: loss_fn(f if view is None else view(f), x, y))(params)
    return run


class TorchRunner:
    def __init__(self, model0, x, y, spec):
        import torch

        self.torch = torch
        self.params = [{k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in blk.items()}
                       for _, blk in sorted(model0.items())]
        self.x, self.y = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
        cls_name, kwargs = spec
        flat = [p for blk in self.params for p in blk.values()]
        try:
            self.opt = getattr(torch.optim, cls_name)(flat, **kwargs, fused=True)
            self.kind = "fused"
            self.run()
        except Exception:
            self.opt = getattr(torch.optim, cls_name)(flat, **kwargs, foreach=True)
            self.kind = "foreach"
        self.compile_s = 0.0
        for _ in range(2):
            self.run()

    def run(self) -> float:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        h = self.x
        for p in self.params:
            h = h + self.torch.tanh(h @ p["w"] + p["b"]) @ p["v"]
        loss = ((h - self.y) ** 2).mean()
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0

    def close(self):
        del self.opt, self.params


def bench_case(case: str, blocks: int, d: int, batch: int, reps: int, use_torch: bool, seed: int = 0) -> dict:
    fn_make, ox_make, tspec = CASES[case]
    model0 = init_model(blocks, d, seed)
    rng = np.random.default_rng(seed + 1)
    x = jnp.asarray(rng.standard_normal((batch, d)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((batch, d)), jnp.float32)

    def tree():
        return jax.tree.map(jnp.asarray, model0)

    impls = {  # name: (layout, tx maker, fnopt.apply_gradients?)
        "optax": ("tree", ox_make, False),
        "fnopt": ("tree", fn_make, True),
        "fnopt_packed": ("tree", lambda: fnopt.packed(fn_make()), True),
        "fnopt_flat": ("flat", fn_make, True),
        "optax_flat": ("flat", ox_make, False),
    }
    runners: dict[str, Any] = {}
    for name, (layout, make, whole) in impls.items():
        params, view = fnopt.flat_params(tree()) if layout == "flat" else (tree(), None)
        tx = make()
        runners[name] = JaxRunner(make_step(tx, layout, view, whole), params, tx.init(params), x, y)
    flat, view = fnopt.flat_params(tree())
    runners["grad_tree"] = JaxRunner(grad_only(None), tree(), (), x, y, donate=())
    runners["grad_flat"] = JaxRunner(grad_only(view), flat, (), x, y, donate=())
    if use_torch:
        runners["torch"] = TorchRunner(model0, x, y, tspec)

    times: dict[str, list[float]] = {n: [] for n in runners}
    names = list(runners)
    for r in range(reps):
        for n in names if r % 2 == 0 else names[::-1]:
            times[n].append(runners[n].run())
    ms = {n: statistics.median(v) * 1e3 for n, v in times.items()}
    out = {"case": case, "blocks": blocks, "leaves": 3 * blocks, "d": d, "batch": batch, "reps": reps,
           "params": blocks * (2 * d * d + d), "impls": {}}
    for n, r_ in runners.items():
        out["impls"][n] = {"ms": ms[n], "ms_min": min(times[n]) * 1e3, "compile_s": r_.compile_s}
        if n == "torch":
            out["torch_kind"] = r_.kind
        r_.close()
    out["over_optax"] = {n: ms[n] / ms["optax"] for n in ms}
    out["over_torch"] = {n: ms[n] / ms["torch"] for n in ms} if "torch" in ms else None
    # what the step adds to the forward and backward pass of its layout
    out["optimizer_ms"] = {n: ms[n] - ms["grad_flat" if impls[n][0] == "flat" else "grad_tree"]
                           for n in impls}
    return out


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def markdown(results) -> str:
    names = ["optax", "fnopt", "fnopt_packed", "fnopt_flat", "optax_flat", "grad_tree", "grad_flat", "torch"]
    lines = ["| case | leaves | " + " | ".join(f"{n} ms" for n in names)
             + " | packed / Optax | flat / Optax | flat / torch | flat compile s | Optax compile s |",
             "|---" * (len(names) + 7) + "|"]
    for r in results:
        im, ot = r["impls"], r["over_torch"]
        lines.append(
            f"| {r['case']} | {r['leaves']} | "
            + " | ".join(fmt(im[n]["ms"]) if n in im else "-" for n in names)
            + f" | {fmt(r['over_optax']['fnopt_packed'])} | {fmt(r['over_optax']['fnopt_flat'])}"
            f" | {fmt(ot and ot['fnopt_flat'])}"
            f" | {fmt(im['fnopt_flat']['compile_s'], '.1f')} | {fmt(im['optax']['compile_s'], '.1f')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=1000, help="residual blocks, 3 leaves each (default 1000)")
    ap.add_argument("--d", type=int, default=64, help="width (default 64: 64x64 and 64-vector leaves)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--tiny", action="store_true", help="3 blocks of width 8, 2 reps: the smoke test")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--md", dest="md_path")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}")
    for flag in ("blocks", "d", "batch", "reps"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    blocks, d, reps = (3, 8, 2) if args.tiny else (args.blocks, args.d, args.reps)
    use_torch = not args.no_torch and torch_importable()

    results = []
    for case in cases:
        r = bench_case(case, blocks, d, args.batch, reps, use_torch)
        results.append(r)
        print(f"# {case:14s} " + "  ".join(f"{n} {v['ms']:.2f}" for n, v in r["impls"].items()) + " ms",
              file=sys.stderr, flush=True)
    report(markdown(results), results, args.json_path, args.md_path)

if __name__ == "__main__":
    main()
