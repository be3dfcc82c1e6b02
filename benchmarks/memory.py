"""Peak resident memory of a short training loop, fnopt vs Optax.

Each run is its own subprocess; its peak RSS is the OS's ``ru_maxrss`` for
that child (``os.wait4``). The loop is a jitted, donated step on a
ResNet-50-shaped tree (25.6M float32 params): ``grads = grad(loss)(params)``,
``tx.update``, ``apply_updates``. A ``none`` run (plain SGD step, no state)
is the baseline; an optimizer should cost its state (``k x params``) above it.

    python benchmarks/memory.py --steps 20
    python benchmarks/memory.py --tiny          # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OPTS = {"adam": 2, "clip+adamw": 2}


def child(impl: str, opt: str, tree: str, steps: int) -> None:
    sys.path.insert(0, HERE)
    import jax
    import jax.numpy as jnp
    import optax

    import fnopt
    from fnopt import transforms
    from step_time import TREES, make_tree

    params = make_tree(TREES[tree](), 0)

    def loss(p):
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(p))

    if impl == "none":
        tx = optax.sgd(1e-3)
    elif impl == "fnopt":
        tx = fnopt.adam(1e-3) if opt == "adam" else fnopt.chain(
            transforms.clip_by_global_norm(1.0), fnopt.adamw(1e-3, weight_decay=1e-2))
    else:
        tx = optax.adam(1e-3) if opt == "adam" else optax.chain(
            optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=1e-2))
    state = tx.init(params)

    def step(params, state):
        g = jax.grad(loss)(params)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1)).lower(params, state).compile()
    analysis = step.memory_analysis()
    for _ in range(steps):
        params, state = step(params, state)
    jax.block_until_ready(params)
    nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    # XLA's own accounting, free of the compiler's heap that RSS includes: the
    # arrays alive after the loop (params + state) and the step's scratch.
    live = sum(x.nbytes for x in jax.live_arrays())
    print(json.dumps({"param_bytes": nbytes, "live_bytes": live, "temp_bytes": analysis.temp_size_in_bytes,
                      "unaliased_out_bytes": analysis.output_size_in_bytes - analysis.alias_size_in_bytes}))


def run_child(impl, opt, tree, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, opt, "--tree", tree, "--steps", str(steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait4 gives this child's own rusage; communicate() would reap it first.
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{err}")
    info = json.loads(out.strip().splitlines()[-1])
    kb = ru.ru_maxrss if sys.platform != "darwin" else ru.ru_maxrss / 1024
    return kb * 1024, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "OPT"), help=argparse.SUPPRESS)
    ap.add_argument("--tree", default="resnet", choices=["resnet", "transformer", "tiny"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="subprocesses per configuration (min taken)")
    ap.add_argument("--tiny", action="store_true", help="tiny tree, 2 steps")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.tree, args.steps)
        return
    tree = "tiny" if args.tiny else args.tree
    steps = 2 if args.tiny else args.steps
    mib = 1024 ** 2
    base = min(run_child("none", "-", tree, steps)[0] for _ in range(args.repeats))
    rows = []
    for opt, k in OPTS.items():
        for impl in ("fnopt", "optax"):
            peak, info = min((run_child(impl, opt, tree, steps) for _ in range(args.repeats)), key=lambda r: r[0])
            nbytes = info["param_bytes"]
            rows.append({"opt": opt, "impl": impl, "peak_bytes": peak, "baseline_bytes": base,
                         "state_bytes": k * nbytes, "param_bytes": nbytes, "tree": tree, "steps": steps,
                         "live_bytes": info["live_bytes"], "temp_bytes": info["temp_bytes"],
                         "unaliased_out_bytes": info["unaliased_out_bytes"]})
    lines = [f"### peak RSS, tree={tree} ({rows[0]['param_bytes'] / 4 / 1e6:.2f}M float32 params, "
             f"{rows[0]['param_bytes'] / mib:.1f} MiB), {steps} steps; baseline (plain SGD, no state) "
             f"{base / mib:.1f} MiB\n",
             "| optimizer | impl | peak RSS MiB | over baseline MiB | expected state MiB | extra (over - state) MiB "
             "| live arrays MiB (params + state) | XLA temp MiB | unaliased outputs MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        over = (r["peak_bytes"] - base) / mib
        lines.append(f"| {r['opt']} | {r['impl']} | {r['peak_bytes'] / mib:.1f} | {over:.1f} "
                     f"| {r['state_bytes'] / mib:.1f} | {over - r['state_bytes'] / mib:.1f} "
                     f"| {r['live_bytes'] / mib:.1f} | {r['temp_bytes'] / mib:.1f} | {r['unaliased_out_bytes'] / mib:.2f} |")
    md = "\n".join(lines)
    print(md)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
