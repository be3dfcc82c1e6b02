"""Update-step time of fnopt vs Optax (vs torch.optim) vs the memory limit.

Every case is a jitted step with params and optimizer state donated::

    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)

fnopt, Optax, the roofline kernel (same arrays read and written, trivial
math), a plain copy kernel over as many bytes as a minimal step moves (the
measured bandwidth) and, when torch is importable, ``torch.optim`` (foreach /
fused) are run interleaved in one process, round-robin, and the medians are
reported. The minimal traffic of a single streaming pass is
``(params + grads + k state) read + (params + k state) written``; the
physical limit of a case is that traffic at the measured bandwidth.

    python benchmarks/step_time.py --tree all --reps 15 --json out.json --md out.md
    python benchmarks/step_time.py --tiny          # smoke test
    python benchmarks/step_time.py --tiny --tree many --cases adam
    python benchmarks/step_time.py --tree many --cases adam --loop 10 --marginal 40   # the step without the call

``--loop K`` runs K steps per call in a ``lax.fori_loop``; ``--marginal N``
also runs every JAX step N per call and reports the slope between the two
lengths, the cost of one more step in a long jit-compiled loop.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

import fnopt
from fnopt import schedules, transforms

# ----------------------------------------------------------------- trees


def resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision ResNet-50 parameter shapes (HWIO convs): 161 leaves, 25,557,032 params."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(name, k, cin, cout):
        shapes[f"{name}/conv"] = (k, k, cin, cout)
        shapes[f"{name}/bn_scale"] = (cout,)
        shapes[f"{name}/bn_bias"] = (cout,)

    conv_bn("stem", 7, 3, 64)
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(blocks):
            name = f"layer{stage + 1}/block{b}"
            conv_bn(f"{name}/conv1", 1, cin, width)
            conv_bn(f"{name}/conv2", 3, width, width)
            conv_bn(f"{name}/conv3", 1, width, width * 4)
            if b == 0:
                conv_bn(f"{name}/downsample", 1, cin, width * 4)
            cin = width * 4
    shapes["fc/w"] = (2048, 1000)
    shapes["fc/b"] = (1000,)
    return shapes


def transformer_shapes(blocks: int = 12, d: int = 256, mlp: int = 1024, vocab: int = 8192, seq: int = 512):
    """A pre-LN transformer with many small leaves: 34 per block, 402 in all (17.1M params)."""
    shapes: dict[str, tuple[int, ...]] = {"embed": (vocab, d), "pos": (seq, d)}
    for b in range(blocks):
        p = f"block{b:02d}"
        for ln in ("ln1", "ln2", "q_norm", "k_norm"):
            shapes[f"{p}/{ln}/scale"] = (d,)
            shapes[f"{p}/{ln}/bias"] = (d,)
        for proj in ("q", "k", "v", "o"):
            shapes[f"{p}/attn/{proj}/w"] = (d, d)
            shapes[f"{p}/attn/{proj}/b"] = (d,)
        for proj in ("gate", "up"):
            shapes[f"{p}/mlp/{proj}/w"] = (d, mlp)
            shapes[f"{p}/mlp/{proj}/b"] = (mlp,)
        shapes[f"{p}/mlp/down/w"] = (mlp, d)
        shapes[f"{p}/mlp/down/b"] = (d,)
        shapes[f"{p}/ls1"] = (d,)
        shapes[f"{p}/ls2"] = (d,)
        shapes[f"{p}/rel_pos"] = (32, 8)
        for a in ("adapter_in", "adapter_out"):
            shapes[f"{p}/{a}/w"] = (d, 16) if a == "adapter_in" else (16, d)
            shapes[f"{p}/{a}/b"] = (16,) if a == "adapter_in" else (d,)
        shapes[f"{p}/attn/temperature"] = (8,)
        shapes[f"{p}/attn/sink"] = (8,)
        shapes[f"{p}/attn/alibi"] = (8,)
        shapes[f"{p}/mlp/act_scale"] = (mlp,)
    shapes["final_ln/scale"] = (d,)
    shapes["final_ln/bias"] = (d,)
    shapes["head/w"] = (d, vocab)
    shapes["head/b"] = (vocab,)
    return shapes


def many_shapes(square: int = 2000, column: int = 1000, d: int = 64):
    """Many small leaves (issue 15): ``square`` leaves of d x d and ``column``
    of d x 1; 3000 leaves, 8.26M params by default. Here XLA:CPU's fixed
    cost per fused loop, not the bytes, sets the step time."""
    shapes: dict[str, tuple[int, ...]] = {f"w{i:04d}": (d, d) for i in range(square)}
    shapes.update({f"b{i:04d}": (d, 1) for i in range(column)})
    return shapes


def tiny_shapes():
    return {"a": (64, 32), "b": (32,), "c": (3, 3, 8, 16), "d": (16,)}


def tiny_many_shapes():
    """The many-leaf layout at smoke-test size (40 + 20 leaves)."""
    return many_shapes(40, 20, 8)


TREES = {"resnet": resnet50_shapes, "transformer": transformer_shapes, "many": many_shapes, "tiny": tiny_shapes,
         "tiny_many": tiny_many_shapes}


def make_tree(shapes: dict[str, tuple[int, ...]], seed: int, scale: float = 0.02):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.standard_normal(s, dtype=np.float32) * scale) for k, s in shapes.items()}


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------- cases

TOTAL_STEPS, WARMUP = 10_000, 500


def fn_chain(plateau: bool):
    lr = schedules.warmup(schedules.cosine_decay(1e-3, TOTAL_STEPS - WARMUP, 1e-5), WARMUP, 0.0)
    parts = [transforms.clip_by_global_norm(1.0), fnopt.adamw(lr, weight_decay=1e-2)]
    if plateau:
        parts.append(transforms.reduce_on_plateau())
    return fnopt.chain(*parts)


def ox_chain(plateau: bool):
    lr = optax.warmup_cosine_decay_schedule(0.0, 1e-3, WARMUP, TOTAL_STEPS, 1e-5)
    parts = [optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=1e-2)]
    if plateau:
        parts.append(optax.contrib.reduce_on_plateau())
    return optax.chain(*parts)


# name -> (fnopt factory, optax factory, number of per-param state buffers, needs value=, torch spec)
CASES: dict[str, tuple[Callable, Callable, int, bool, tuple]] = {
    "sgd_momentum": (lambda: fnopt.sgd(1e-2, momentum=0.9), lambda: optax.sgd(1e-2, momentum=0.9), 1, False,
                     ("SGD", dict(lr=1e-2, momentum=0.9), False, False)),
    "adam": (lambda: fnopt.adam(1e-3), lambda: optax.adam(1e-3), 2, False, ("Adam", dict(lr=1e-3), False, False)),
    "adamw": (lambda: fnopt.adamw(1e-3, weight_decay=1e-2), lambda: optax.adamw(1e-3, weight_decay=1e-2), 2, False,
              ("AdamW", dict(lr=1e-3, weight_decay=1e-2), False, False)),
    "rmsprop": (lambda: fnopt.rmsprop(1e-2), lambda: optax.rmsprop(1e-2), 1, False,
                ("RMSprop", dict(lr=1e-2), False, False)),
    "adagrad": (lambda: fnopt.adagrad(1e-2), lambda: optax.adagrad(1e-2), 1, False,
                ("Adagrad", dict(lr=1e-2), False, False)),
    # issue 13 / 12: the newer optimizers against their Optax counterparts
    "lion": (lambda: fnopt.lion(1e-4), lambda: optax.lion(1e-4), 1, False, None),
    "lamb": (lambda: fnopt.lamb(1e-3), lambda: optax.lamb(1e-3), 2, False, None),
    "lars": (lambda: fnopt.lars(1e-2), lambda: optax.lars(1e-2), 1, False, None),
    "adabelief": (lambda: fnopt.adabelief(1e-3), lambda: optax.adabelief(1e-3), 2, False, None),
    "schedule_free_adamw": (lambda: fnopt.schedule_free_adamw(1e-3), lambda: optax.contrib.schedule_free_adamw(1e-3),
                            2, False, None),
    "prodigy": (lambda: fnopt.prodigy(), lambda: optax.contrib.prodigy(), 4, False, None),
    # torch-parity optimizers: Optax's namesakes do the same work per element
    # (their numerics differ in details; the cost is what is compared).
    "nadam": (lambda: fnopt.nadam(2e-3), lambda: optax.nadam(2e-3), 2, False, ("NAdam", dict(lr=2e-3), False, False)),
    "adamax": (lambda: fnopt.adamax(2e-3), lambda: optax.adamax(2e-3), 2, False, ("Adamax", dict(lr=2e-3), False, False)),
    "adadelta": (lambda: fnopt.adadelta(), lambda: optax.adadelta(1.0), 2, False, ("Adadelta", dict(), False, False)),
    "rprop": (lambda: fnopt.rprop(), lambda: optax.rprop(1e-2), 2, False, ("Rprop", dict(), False, False)),
    "adafactor": (lambda: fnopt.adafactor(), lambda: optax.adafactor(1e-2), 1, False, ("Adafactor", dict(), False, False)),
    "clip+adamw(warmup_cos)": (lambda: fn_chain(False), lambda: ox_chain(False), 2, False,
                               ("AdamW", dict(lr=1e-3, weight_decay=1e-2), True, False)),
    "clip+adamw(warmup_cos)+plateau": (lambda: fn_chain(True), lambda: ox_chain(True), 2, True,
                                       ("AdamW", dict(lr=1e-3, weight_decay=1e-2), True, True)),
}


def make_step(tx, with_value: bool):
    if with_value:
        def step(params, state, grads, value):
            updates, state = tx.update(grads, state, params, value=value)
            return optax.apply_updates(params, updates), state
    else:
        def step(params, state, grads, value):
            del value
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state
    return step


def make_whole_step(tx, with_value: bool):
    """``fnopt.apply_gradients``: the whole step, the fused kernel's route for
    the params too where the alias has one (issue 15)."""
    def step(params, state, grads, value):
        extra = {"value": value} if with_value else {}
        return fnopt.apply_gradients(tx, grads, state, params, **extra)
    return step


def has_whole_step(tx) -> bool:
    """Whether ``fnopt.apply_gradients(tx, ...)`` takes the whole-step kernel now."""
    from fnopt import _fused, _step

    return _step._route_of(tx) is not None and _fused.enabled(whole_step=True)


def looped(step, k: int):
    """``step`` run ``k`` times in a ``lax.fori_loop`` inside one call (a
    jit-compiled training loop): no per-call dispatch between the steps."""
    if k <= 1:
        return step

    def run(params, state, grads, value):
        return jax.lax.fori_loop(0, k, lambda i, c: step(c[0], c[1], grads, value), (params, state))
    return run


def roofline_step(params, state, grads, value):
    """Reads params, grads and k state buffers; writes params and k state buffers."""
    del value
    new_params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
    new_state = tuple(jax.tree.map(lambda s, g, c=i: s * 0.5 + (1.0 + c) * g, s_tree, grads)
                      for i, s_tree in enumerate(state))
    return new_params, new_state


def hlo_stats(compiled) -> dict[str, int]:
    """Counts in the optimized HLO: fusions / ops in the entry computation, and reduce ops."""
    text = compiled.as_text()
    entry = text[text.find("ENTRY"):]
    entry = entry[: entry.find("\n}") if "\n}" in entry else len(entry)]
    entry_ops = [ln for ln in entry.splitlines()[1:] if "=" in ln]
    fusions = sum(1 for ln in entry_ops if re.search(r"=\s*\S+\s+fusion\(", ln) or " fusion(" in ln)
    return {
        "entry_ops": len(entry_ops),
        "entry_fusions": fusions,
        "fused_computations": len(re.findall(r"^%?fused_computation|^fused_computation|\nfused_", text)),
        "reduces": len(re.findall(r"\breduce\(", text)),
        "all_fusions": len(re.findall(r"\sfusion\(", text)),
    }


class JaxRunner:
    def __init__(self, step, params, state, grads, value, compiled=None, loop=1):
        self.grads, self.value, self.loop = grads, value, loop
        step = looped(step, loop)
        if compiled is None:
            jitted = jax.jit(step, donate_argnums=(0, 1))
            t0 = time.perf_counter()
            compiled = jitted.lower(params, state, grads, value).compile()
            self.compile_s = time.perf_counter() - t0
        else:
            self.compile_s = 0.0
        self.compiled = compiled
        self.hlo = hlo_stats(self.compiled)
        # Optax's contrib optimizers keep the params array itself in their
        # state (prodigy's x0): give the donated state its own buffers.
        param_ids = {id(x) for x in jax.tree.leaves(params)}
        state = jax.tree.map(lambda x: jnp.copy(x) if id(x) in param_ids else x, state)
        self.params, self.state = params, state
        for _ in range(2):  # warm-up
            self.run()

    def run(self) -> float:
        t0 = time.perf_counter()
        self.params, self.state = self.compiled(self.params, self.state, self.grads, self.value)
        jax.block_until_ready((self.params, self.state))
        return (time.perf_counter() - t0) / self.loop

    def close(self):
        del self.params, self.state, self.compiled


class TorchRunner:
    def __init__(self, shapes, spec, impl: str, seed: int):
        import torch

        cls_name, kwargs, clip, plateau = spec
        self.torch = torch
        rng = np.random.default_rng(seed)
        self.params = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s, dtype=np.float32) * 0.02))
                       for s in shapes.values()]
        for p in self.params:
            p.grad = torch.from_numpy(rng.standard_normal(p.shape, dtype=np.float32) * 0.02)
        cls = getattr(torch.optim, cls_name)
        flag = {"foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
        self.opt = cls(self.params, **kwargs, **flag)
        self.clip = clip
        self.sched = None
        if clip:
            def lam(t):
                if t < WARMUP:
                    return t / WARMUP
                frac = min((t - WARMUP) / (TOTAL_STEPS - WARMUP), 1.0)
                return 1e-2 + (1 - 1e-2) * 0.5 * (1 + np.cos(np.pi * frac))
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lam)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt) if plateau else None
        self.compile_s = 0.0
        self.hlo = {}
        for _ in range(2):
            self.run()

    def run(self) -> float:
        t0 = time.perf_counter()
        with self.torch.no_grad():
            if self.clip:
                self.torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            if self.plateau is not None:
                self.plateau.step(1.0)
        return time.perf_counter() - t0

    def close(self):
        del self.opt, self.params


def torch_importable() -> bool:
    """Whether torch, the optional oracle, imports here."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def torch_supports(spec, impl: str) -> bool:
    try:
        import torch
    except Exception:
        return False
    try:
        p = torch.nn.Parameter(torch.zeros(4))
        p.grad = torch.ones(4)
        opt = getattr(torch.optim, spec[0])([p], **spec[1], **{impl: True})
        opt.step()
        return True
    except Exception:
        return False


class BandwidthRunner:
    """The measured memory bandwidth: one contiguous float32 buffer negated
    in place (jitted, donated), reading and writing ``nbytes`` in all, i.e.
    a plain copy kernel over the bytes a minimal single-pass step moves. Its
    time is the physical limit of that step on this machine, in this run."""

    def __init__(self, nbytes: int, loop: int = 1, kernel: bool = False):
        self.nbytes = 8 * max(1, nbytes // 8)
        self.loop = loop
        x = jnp.zeros(self.nbytes // 8, jnp.float32)
        t0 = time.perf_counter()
        if kernel:  # fnopt's kernel: the same negation split between all threads
            from fnopt import _fused

            one = _fused.negate
        else:
            one = jnp.negative
        negate = one if loop <= 1 else (lambda y: jax.lax.fori_loop(0, loop, lambda i, z: one(z), y))
        self.compiled = jax.jit(negate, donate_argnums=0).lower(x).compile()
        self.compile_s = time.perf_counter() - t0
        self.hlo = {}
        self.x = x
        for _ in range(2):
            self.run()

    def run(self) -> float:
        t0 = time.perf_counter()
        self.x = self.compiled(self.x)
        jax.block_until_ready(self.x)
        return (time.perf_counter() - t0) / self.loop

    def close(self):
        del self.x, self.compiled


def compile_times(makers: dict[str, Callable[[], tuple]], reps: int, loop: int = 1) -> tuple[dict[str, float], dict[str, Any]]:
    """Median ``jit(step).lower(*args).compile()`` seconds (tracing included)
    for each ``maker() -> (step, args)``, compiled ``reps`` times round-robin
    with the order alternating, so neither side always pays the first, colder
    compile; and the last executable of each (the timed runs reuse it)."""
    times: dict[str, list[float]] = {n: [] for n in makers}
    compiled: dict[str, Any] = {}
    names = list(makers)
    for r in range(reps):
        for n in names if r % 2 == 0 else names[::-1]:
            step, args = makers[n]()
            t0 = time.perf_counter()
            compiled[n] = jax.jit(looped(step, loop), donate_argnums=(0, 1)).lower(*args).compile()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) for n, v in times.items()}, compiled


def marginal_step(t_short: float, short: int, t_long: float, long: int) -> float:
    """The cost of one more step: the slope between two calls of ``short`` and
    ``long`` steps, each timed per step (call time / steps), so that a fixed
    cost per call drops out."""
    return (t_long * long - t_short * short) / (long - short)


def bench_case(tree_name, shapes, case, reps, use_torch, seed=0, compile_reps=3, loop=1, marginal=0):
    fn_make, ox_make, k, with_value, tspec = CASES[case]
    params0 = make_tree(shapes, seed)
    grads = make_tree(shapes, seed + 1)
    value = jnp.asarray(1.0, jnp.float32)
    nbytes = tree_bytes(params0)
    traffic = nbytes * ((2 + k) + (1 + k))

    def fresh_params():
        return jax.tree.map(jnp.copy, params0)

    # each JAX implementation: how to build its tx, and its step function
    fn_tx = fn_make()
    # each JAX implementation: how to build its tx, its step function, and
    # whether it steps the params as a tree or flat (fnopt.flat_params)
    impls = {"fnopt": (fn_make, make_step, False), "optax": (ox_make, make_step, False)}
    if has_whole_step(fn_tx):  # fnopt.apply_gradients takes the whole-step kernel
        impls["fnopt_step"] = (fn_make, make_whole_step, False)
        # the same alias with its state packed into one array per dtype
        impls["fnopt_packed"] = (lambda: fnopt.packed(fn_make()), make_whole_step, False)
        # the params and grads themselves one array per dtype (the model owns the layout)
        impls["fnopt_flat"] = (fn_make, make_whole_step, True)
        impls["optax_flat"] = (ox_make, make_step, True)  # the anchor in the same layout
    flat_grads = fnopt.flat_params(grads)[0]

    def layout(params, flat):
        return (fnopt.flat_params(params)[0], flat_grads) if flat else (params, grads)

    def maker(make, stepper, flat):
        def build():
            tx = make()
            p, g = layout(params0, flat)
            return stepper(tx, with_value), (p, tx.init(p), g, value)
        return build

    makers = {n: maker(*impl) for n, impl in impls.items()}
    compile_s, compiled = compile_times(makers, compile_reps, loop)
    runners: dict[str, Any] = {}

    def add_runners(executables, steps_per_call, suffix=""):
        for n, exe in executables.items():
            make, stepper, flat = impls[n]
            tx = make()
            p, g = layout(fresh_params(), flat)
            runners[n + suffix] = JaxRunner(stepper(tx, with_value), p, tx.init(p), g, value, exe, steps_per_call)

    add_runners(compiled, loop)
    del compiled
    if marginal:  # the same steps, `marginal` per call: the slope between the two is the step without the call
        add_runners(compile_times(makers, 1, marginal)[1], marginal, f"@{marginal}")
    p = fresh_params()
    roof_state = tuple(jax.tree.map(jnp.zeros_like, p) for _ in range(k))
    runners["roofline"] = JaxRunner(roofline_step, p, roof_state, grads, value, loop=loop)
    runners["copy"] = BandwidthRunner(traffic, loop)
    if fused_on():
        runners["copy_threads"] = BandwidthRunner(traffic, loop, kernel=True)
    del params0
    if use_torch:
        for impl in ("foreach", "fused"):
            if torch_supports(tspec, impl):
                runners[f"torch_{impl}"] = TorchRunner(shapes, tspec, impl, seed)
        if "fnopt_flat" in impls and torch_supports(tspec, "fused"):  # torch's step on one flat tensor too
            runners["torch_fused_flat"] = TorchRunner({"flat": (sum(math.prod(s) for s in shapes.values()),)},
                                                      tspec, "fused", seed)

    times: dict[str, list[float]] = {n: [] for n in runners}
    names = list(runners)
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]  # alternate the order as well
        for n in order:
            times[n].append(runners[n].run())
    out = {"tree": tree_name, "case": case, "state_buffers": k, "param_bytes": nbytes, "traffic_bytes": traffic,
           "reps": reps, "loop": loop, "impls": {}}
    for n, r_ in runners.items():
        med = statistics.median(times[n])
        if n in compile_s:
            r_.compile_s = compile_s[n]
        out["impls"][n] = {
            "ms": med * 1e3,
            "gbps": traffic / med / 1e9,
            "ms_min": min(times[n]) * 1e3,
            "compile_s": r_.compile_s,
            "hlo": r_.hlo,
        }
        r_.close()
    ms = {n: v["ms"] for n, v in out["impls"].items()}
    if marginal:  # per rep, the slope between the two loop lengths (paired: timed next to each other)
        out["marginal"] = marginal
        for n in impls:
            slope = [marginal_step(t_short, loop, t_long, marginal)
                     for t_short, t_long in zip(times[n], times[f"{n}@{marginal}"])]
            out["impls"][n]["marginal_ms"] = statistics.median(slope) * 1e3
    # the faster of the two copy kernels: XLA's (one thread) and, with the fused
    # kernel built, fnopt's (all threads)
    copy_ms = min(ms["copy"], ms.get("copy_threads", float("inf")))
    out["xla_copy_gbps"] = traffic / (ms["copy"] / 1e3) / 1e9
    out["bandwidth_gbps"] = traffic / (copy_ms / 1e3) / 1e9
    out["limit_ms"] = copy_ms  # traffic / bandwidth: the same bytes, one pass
    out["fnopt_over_optax"] = ms["fnopt"] / ms["optax"]
    out["fnopt_over_roofline"] = ms["fnopt"] / ms["roofline"]
    out["optax_over_roofline"] = ms["optax"] / ms["roofline"]
    out["fnopt_over_limit"] = ms["fnopt"] / out["limit_ms"]
    out["optax_over_limit"] = ms["optax"] / out["limit_ms"]
    torch_ms = ms.get("torch_fused", ms.get("torch_foreach"))
    out["torch_ref"] = "torch_fused" if "torch_fused" in ms else ("torch_foreach" if torch_ms else None)
    out["fnopt_over_torch"] = ms["fnopt"] / torch_ms if torch_ms else None
    step_ms = ms.get("fnopt_step")
    out["step_over_optax"] = step_ms / ms["optax"] if step_ms else None
    out["step_over_limit"] = step_ms / out["limit_ms"] if step_ms else None
    out["step_over_torch"] = step_ms / torch_ms if step_ms and torch_ms else None
    packed_ms = ms.get("fnopt_packed")
    out["packed_over_optax"] = packed_ms / ms["optax"] if packed_ms else None
    out["packed_over_limit"] = packed_ms / out["limit_ms"] if packed_ms else None
    out["packed_over_torch"] = packed_ms / torch_ms if packed_ms and torch_ms else None
    flat_ms = ms.get("fnopt_flat")
    out["flat_over_optax"] = flat_ms / ms["optax"] if flat_ms else None
    out["flat_over_limit"] = flat_ms / out["limit_ms"] if flat_ms else None
    out["flat_over_torch"] = flat_ms / torch_ms if flat_ms and torch_ms else None
    out["flat_over_optax_flat"] = flat_ms / ms["optax_flat"] if flat_ms else None
    out["flat_over_torch_flat"] = flat_ms / ms["torch_fused_flat"] if flat_ms and "torch_fused_flat" in ms else None
    if marginal:  # the marginal step against Optax's marginal step, the limit and torch (no call boundary)
        out["marginal_ratios"] = {
            n: {"optax": im["marginal_ms"] / out["impls"]["optax"]["marginal_ms"],
                "limit": im["marginal_ms"] / out["limit_ms"],
                "torch": im["marginal_ms"] / torch_ms if torch_ms else None}
            for n, im in out["impls"].items() if "marginal_ms" in im}
    return out


def fused_on() -> bool:
    """Whether fnopt's kernel library is built here (for the threaded copy
    probe, whatever FNOPT_FUSED says about the optimizers)."""
    try:
        from fnopt import _fused
    except ImportError:
        return False
    return jax.default_backend() == "cpu" and jax.device_count() == 1 and _fused._library() is not None


def fused_status() -> str:
    """Whether fnopt's fused CPU kernel was in use (issue 15), for the record."""
    try:
        from fnopt import _fused
    except ImportError:
        return "absent"
    return _fused.status()


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def markdown(results) -> str:
    lines = []
    for tree in dict.fromkeys(r["tree"] for r in results):
        rs = [r for r in results if r["tree"] == tree]
        r0 = rs[0]
        leaves = r0["leaves"]
        loop = r0.get("loop", 1)
        where = f"{loop} steps per call in a lax.fori_loop, per-step times" if loop > 1 else "one step per call"
        lines.append(f"### {tree}: {leaves} leaves, {r0['param_bytes'] / 4 / 1e6:.2f}M float32 params, "
                     f"{r0['reps']} reps (medians), {where}\n")
        lines.append("| case | fnopt ms | fnopt apply_gradients ms | fnopt packed ms | optax ms | torch fused ms "
                     "| torch foreach ms | XLA roofline ms | limit ms | bandwidth GB/s | fnopt/optax | step/optax "
                     "| packed/optax | fnopt/torch | step/torch | packed/torch | fnopt/limit | step/limit "
                     "| packed/limit | optax/limit | compile fnopt s | compile step s | compile packed s "
                     "| compile optax s | fusions fnopt/optax |")
        lines.append("|" + "---|" * 25)
        for r in rs:
            im = r["impls"]
            g = lambda n, key: im[n][key] if n in im else None  # noqa: E731
            key = "all_fusions" if loop > 1 else "entry_fusions"  # a loop's fusions are in its body
            fus = f"{im['fnopt']['hlo'].get(key, '-')}/{im['optax']['hlo'].get(key, '-')}"
            lines.append(
                f"| {r['case']} | {fmt(g('fnopt', 'ms'))} | {fmt(g('fnopt_step', 'ms'))} "
                f"| {fmt(g('fnopt_packed', 'ms'))} | {fmt(g('optax', 'ms'))} "
                f"| {fmt(g('torch_fused', 'ms'))} | {fmt(g('torch_foreach', 'ms'))} | {fmt(g('roofline', 'ms'))} "
                f"| {fmt(r['limit_ms'])} | {fmt(r['bandwidth_gbps'], '.1f')} | {r['fnopt_over_optax']:.2f} "
                f"| {fmt(r.get('step_over_optax'))} | {fmt(r.get('packed_over_optax'))} | {fmt(r['fnopt_over_torch'])} "
                f"| {fmt(r.get('step_over_torch'))} | {fmt(r.get('packed_over_torch'))} "
                f"| {r['fnopt_over_limit']:.2f} | {fmt(r.get('step_over_limit'))} | {fmt(r.get('packed_over_limit'))} "
                f"| {r['optax_over_limit']:.2f} | {fmt(g('fnopt', 'compile_s'))} | {fmt(g('fnopt_step', 'compile_s'))} "
                f"| {fmt(g('fnopt_packed', 'compile_s'))} | {fmt(g('optax', 'compile_s'))} | {fus} |")
        lines.append("")
    flat = [r for r in results if "fnopt_flat" in r["impls"]]
    for tree in dict.fromkeys(r["tree"] for r in flat):
        rs = [r for r in flat if r["tree"] == tree]
        lines.append(f"### {tree}: the step on flat params (`fnopt.flat_params`: params, grads and state one "
                     "array per dtype; the model's side, slices and a concatenation, is `train_step.py`'s)\n")
        lines.append("| case | flat ms | packed ms | optax ms | optax flat ms | torch fused ms | torch fused flat ms "
                     "| limit ms | flat/optax | flat/optax flat | flat/limit | flat/torch | flat/torch flat "
                     "| compile flat s | compile optax s |")
        lines.append("|" + "---|" * 15)
        for r in rs:
            im = r["impls"]
            t = lambda n: fmt(im[n]["ms"] if n in im else None)  # noqa: E731
            lines.append(
                f"| {r['case']} | {t('fnopt_flat')} | {t('fnopt_packed')} | {t('optax')} | {t('optax_flat')} "
                f"| {t('torch_fused')} | {t('torch_fused_flat')} | {fmt(r['limit_ms'])} | {fmt(r['flat_over_optax'])} "
                f"| {fmt(r['flat_over_optax_flat'])} | {fmt(r['flat_over_limit'])} | {fmt(r['flat_over_torch'])} "
                f"| {fmt(r['flat_over_torch_flat'])} | {fmt(im['fnopt_flat']['compile_s'])} "
                f"| {fmt(im['optax']['compile_s'])} |")
        lines.append("")
    marg = [r for r in results if r.get("marginal")]
    for tree in dict.fromkeys(r["tree"] for r in marg):
        rs = [r for r in marg if r["tree"] == tree]
        lines.append(f"### {tree}: marginal per-step times, the slope between {rs[0]['loop']} and "
                     f"{rs[0]['marginal']} steps per call (the call boundary taken out)\n")
        lines.append("| case | fnopt ms | step ms | packed ms | optax ms | torch fused ms | limit ms | fnopt/optax "
                     "| step/optax | packed/optax | step/limit | packed/limit | step/torch | packed/torch |")
        lines.append("|" + "---|" * 14)
        for r in rs:
            im, mr = r["impls"], r["marginal_ratios"]
            m = lambda n: im[n].get("marginal_ms") if n in im else None  # noqa: E731
            q = lambda n, k: mr[n][k] if n in mr else None  # noqa: E731
            lines.append(
                f"| {r['case']} | {fmt(m('fnopt'))} | {fmt(m('fnopt_step'))} | {fmt(m('fnopt_packed'))} "
                f"| {fmt(m('optax'))} | {fmt(im['torch_fused']['ms'] if 'torch_fused' in im else None)} "
                f"| {fmt(r['limit_ms'])} | {fmt(q('fnopt', 'optax'))} | {fmt(q('fnopt_step', 'optax'))} "
                f"| {fmt(q('fnopt_packed', 'optax'))} | {fmt(q('fnopt_step', 'limit'))} "
                f"| {fmt(q('fnopt_packed', 'limit'))} | {fmt(q('fnopt_step', 'torch'))} "
                f"| {fmt(q('fnopt_packed', 'torch'))} |")
        lines.append("")
    lines.append("fnopt: `tx.update` + `optax.apply_updates`; fnopt apply_gradients: `fnopt.apply_gradients` "
                 "(the fused kernel's whole step, where it applies: FNOPT_FUSED unset, auto or 1); "
                 "step/...: its ratios; fnopt packed: the same step with `fnopt.packed(tx)` (the state as one array "
                 "per dtype), packed/...: its ratios; flat: `fnopt.apply_gradients` on `fnopt.flat_params` "
                 "(params, grads and state one array per dtype), next to Optax and torch's fused step on the same "
                 "flat layout (optax flat, torch fused flat). ")
    lines.append("limit: the minimal single-pass bytes (params + grads + k state read, params + k state written) "
                 "at the bandwidth of a plain copy kernel over as many bytes, measured in the same run (the faster "
                 "of XLA's negation, one thread, and fnopt's kernel negation, all threads, when it is built); "
                 "XLA roofline: the same arrays read and written by a trivial per-leaf XLA kernel; "
                 "fnopt/torch: against torch's fused step (foreach where fused is missing).\n")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", choices=["resnet", "transformer", "many", "both", "all"], default="both",
                    help="both: resnet + transformer; all: resnet + transformer + many (3000 small leaves)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--tiny", action="store_true",
                    help="tiny trees, 2 reps, for the smoke test (--tree many/all: also a 60-leaf many-leaf tree)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--compile-reps", type=int, default=3,
                    help="compiles per implementation for the compile-time median (order alternating)")
    ap.add_argument("--loop", type=int, default=1,
                    help="steps per jitted call, in a lax.fori_loop (a jit-compiled training loop); times are "
                         "per step. 1 (default): one step per call, JAX's per-array call overhead included")
    ap.add_argument("--marginal", type=int, default=0,
                    help="also run every JAX step this many steps per call (more than --loop) and report the "
                         "marginal per-step time, the slope between the two (what a step costs in a long "
                         "jit-compiled loop, JAX's per-array call cost taken out); 0 (default): off")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--md", dest="md_path")
    args = ap.parse_args(argv)

    groups = {"both": ["resnet", "transformer"], "all": ["resnet", "transformer", "many"]}
    trees = groups.get(args.tree, [args.tree])
    if args.tiny:  # the smoke-test sizes: resnet/transformer -> tiny, many -> tiny_many
        trees = list(dict.fromkeys("tiny_many" if t == "many" else "tiny" for t in trees))
    reps = 2 if args.tiny else args.reps
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}")
    if args.marginal and args.marginal <= max(1, args.loop):
        ap.error(f"--marginal {args.marginal} must exceed --loop {args.loop}")
    use_torch = not args.no_torch and torch_importable()

    results = []
    for tree in trees:
        shapes = TREES[tree]()
        for case in cases:
            r = bench_case(tree, shapes, case, reps, use_torch, compile_reps=1 if args.tiny else args.compile_reps,
                           loop=max(1, args.loop), marginal=args.marginal)
            r["leaves"] = len(shapes)
            results.append(r)
            print(f"# {tree:12s} {case:32s} fnopt {r['impls']['fnopt']['ms']:8.2f} ms  "
                  f"optax {r['impls']['optax']['ms']:8.2f} ms  limit {r['limit_ms']:8.2f} ms  "
                  f"fnopt/limit {r['fnopt_over_limit']:.2f}"
                  + (f"  apply_gradients {r['impls']['fnopt_step']['ms']:8.2f} ms" if "fnopt_step" in r["impls"] else ""),
                  file=sys.stderr, flush=True)

    report(markdown(results), results, args.json_path, args.md_path)


def report(md: str, results: list, json_path: str | None, md_path: str | None) -> None:
    """Prints the markdown tables; writes them to ``md_path`` and, with the
    run's versions, machine and kernel status, the results to ``json_path``."""
    meta = {
        "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
        "jax": jax.__version__, "optax": optax.__version__, "fnopt": fnopt.__version__,
        "backend": jax.default_backend(), "devices": str(jax.devices()), "platform": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "fused_kernel": fused_status(),
    }
    print(md)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    if md_path:
        with open(md_path, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
