"""Fused multi-tensor CPU kernels (issue 15).

XLA:CPU runs one loop per output array, with a fixed cost per loop and, on
an elementwise loop, one thread's share of the memory bandwidth; an
optimizer step costs a loop per leaf and buffer (params, moments) whatever
the leaf's size. The kernels in ``_kernels/multi_tensor.cc`` (registered
through ``jax.ffi``) work on 64 leaves of a dtype per custom call, in place
(``input_output_aliases``), split between XLA's intra-op threads, in the
arithmetic order of the XLA path:

* the state kernels (``scale_by_adam`` without ``amsgrad``, so ``adam`` and
  ``adamw``; ``scale_by_momentum``, so ``sgd(momentum=...)``) update the
  moments; the update direction stays in XLA, computed from the new state,
  which fuses it with the learning rate and ``apply_updates`` into the one
  loop per leaf that writes the params (``tx.update`` must return updates);
* the whole-step kernels, reached through :func:`fnopt.apply_gradients`,
  update the params too: a step is one call per 64 leaves and no XLA loop;
  their packed variants take the state of :func:`fnopt.packed` (one flat
  array per dtype and buffer) with the params' own leaves.

The library is built from C++ at first use, when a compiler exists, into a
cache directory (``$FNOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fnopt``, else
``~/.cache/fnopt``), keyed by a hash of the source, the jaxlib version, the
compiler and its flags, and the host CPU. Any failure leaves the XLA path in
place (a debug log line says why).

``FNOPT_FUSED`` chooses: unset, only :func:`fnopt.apply_gradients` (and
``fnopt.flax.TrainState``, which calls it) uses the whole-step kernels, where
they can be built, while ``tx.update`` keeps XLA's program; ``auto`` uses
every kernel where it can be built; ``1`` requires them (a build failure
raises); ``0`` keeps the XLA path everywhere. (A custom call is not
portable: a step traced with a kernel cannot go through ``jax.export``; and
the build costs seconds at first use. BENCHMARKS.md has what they buy.)

They are used only where they are exact: the CPU backend with a single
device (a sharded state keeps XLA's path and its sharding), float32/float64
leaves whose state buffers have the same dtype. Under ``vmap`` a group falls
back to a ``jax.numpy`` transcription of the kernel (``custom_vmap``), and so
does differentiation (``custom_jvp``). States stay the same pytrees either
way.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_log = logging.getLogger("fnopt.fused")

_SOURCE = pathlib.Path(__file__).with_name("_kernels") / "multi_tensor.cc"
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17", "-ffp-contract=fast", "-w")
_TARGETS = ("fnopt_adam_f32", "fnopt_adam_f64", "fnopt_momentum_f32", "fnopt_momentum_f64",
            "fnopt_adam_step_f32", "fnopt_adam_step_f64", "fnopt_momentum_step_f32", "fnopt_momentum_step_f64",
            "fnopt_adam_step_packed_f32", "fnopt_adam_step_packed_f64",
            "fnopt_momentum_step_packed_f32", "fnopt_momentum_step_packed_f64", "fnopt_negate_f32")
_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# Leaves per kernel call: XLA's compile time grows faster than linearly in
# the operands of one custom call with aliased results (measured: 600 leaves
# in one call compiled in 1.7x the per-leaf XLA path's time), while a call
# costs microseconds at run time.
CHUNK = int(os.environ.get("FNOPT_FUSED_CHUNK", "64"))

_lock = threading.Lock()
_local = threading.local()
_loaded: dict[str, Any] = {"done": False, "lib": None, "error": "not built yet"}


def _mode() -> str:
    """``FNOPT_FUSED``: ``"off"`` (``0``, ``false``, ``off``, ``no``), ``"on"``
    (``1``, ``true``, ``on``, ``yes``), ``"auto"``, or ``"default"`` (unset or
    empty; any other value reads as ``"off"``)."""
    value = os.environ.get("FNOPT_FUSED", "").strip().lower()
    if value in ("1", "true", "on", "yes"):
        return "on"
    if value == "auto":
        return "auto"
    if value == "":
        return "default"
    return "off"


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("FNOPT_CACHE_DIR")
    if root:
        return pathlib.Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "fnopt"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "")) if os.environ.get("CXX") else (
        shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"))


def _host() -> str:
    """The host CPU's model and features: ``-march=native`` builds for them
    (a cache shared between machines must not hand one's build to another)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(dict.fromkeys(lines))
    except OSError:
        import platform

        return platform.machine() + platform.processor()


def _build() -> ctypes.CDLL:
    """Compiles (or finds in the cache) and loads the kernel library."""
    import jaxlib

    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (g++, c++, clang++ or $CXX)")
    source = _SOURCE.read_bytes()
    include = jax.ffi.include_dir()
    key = hashlib.sha256(b"\0".join([source, jaxlib.__version__.encode(), cxx.encode(), " ".join(_FLAGS).encode(),
                                     include.encode(), _host().encode()])).hexdigest()[:20]
    directory = _cache_dir()
    path = directory / f"multi_tensor-{key}.so"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", tmp],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {_SOURCE.name} failed:\n{proc.stderr[-2000:]}")
            os.replace(tmp, path)  # atomic: concurrent builders agree on the result
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(path))
    for name in _TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    return lib


def _library() -> ctypes.CDLL | None:
    with _lock:
        if not _loaded["done"]:
            _loaded["done"] = True
            try:
                _loaded["lib"], _loaded["error"] = _build(), None
            except Exception as err:  # no compiler, compile error, unloadable: the XLA path stays
                _loaded["error"] = f"{type(err).__name__}: {err}"
                _log.debug("fnopt fused kernel unavailable, using the XLA path: %s", _loaded["error"])
    return _loaded["lib"]


def enabled(whole_step: bool = False) -> bool:
    """Whether steps traced now use the kernels: the CPU backend with one
    device, the library built, and ``FNOPT_FUSED`` allowing it. ``1`` or
    ``auto`` switch on every kernel (with ``1`` a failed build raises
    ``RuntimeError``); by default (unset) only the whole-step kernels of
    :func:`fnopt.apply_gradients` (``whole_step=True``) are used, and
    ``tx.update`` keeps the XLA path; ``0`` switches every kernel off."""
    mode = _mode()
    if mode == "off" or (mode == "default" and not whole_step):
        return False
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        return False
    if _library() is None:
        if mode == "on":
            raise RuntimeError(f"FNOPT_FUSED=1 but the fused kernel could not be built: {_loaded['error']}")
        return False
    return True


def suspended() -> bool:
    """True while ``fnopt.apply_gradients`` traces an alias's own update:
    the whole-step kernel then writes the buffers, so the state-only kernels
    stand aside (two calls updating one buffer in place would cost copies)."""
    return getattr(_local, "suspended", False)


@contextlib.contextmanager
def suspend():
    """Within the block, :func:`suspended` is True (this thread)."""
    before = suspended()
    _local.suspended = True
    try:
        yield
    finally:
        _local.suspended = before


def status() -> str:
    """One line for benchmark records: whether the kernel is in use, and why not."""
    try:
        if enabled():
            return "on"
        if enabled(whole_step=True):
            return "whole steps only (fnopt.apply_gradients; FNOPT_FUSED unset)"
        return f"off ({_mode()}; {_loaded['error'] or 'gated: FNOPT_FUSED, backend or devices'})"
    except RuntimeError as err:
        return f"off ({err})"


# --------------------------------------------------------------- calls


def _eligible(leaf: Any, *state: Any) -> bool:
    """A leaf the kernels handle exactly: float32/float64, non-empty, state
    buffers of the same dtype (shapes are checked by the caller)."""
    dtype = np.dtype(jnp.result_type(leaf))
    if dtype not in _DTYPES or np.size(leaf) == 0:
        return False
    return all(s is not None and np.dtype(jnp.result_type(s)) == dtype for s in state)


def _with_fallback(kernel: Callable, reference: Callable) -> Callable:
    """``kernel`` whose batching (``vmap``) and differentiation use ``reference``."""

    @jax.custom_batching.custom_vmap
    def batched_ok(*args):
        return kernel(*args)

    @batched_ok.def_vmap
    def _rule(axis_size, in_batched, *args):
        del axis_size
        axes = [0 if b else None for b in in_batched]
        out = jax.vmap(reference, in_axes=axes)(*args)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def call(*args):
        return batched_ok(*args)

    @call.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(reference, primals, tangents)

    return call


def _adam_reference(c, *leaves):
    n = len(leaves) // 3
    g, m, v = leaves[:n], leaves[n:2 * n], leaves[2 * n:]
    return ([c[0] * m[i] + c[1] * g[i] for i in range(n)],
            [c[2] * v[i] + c[3] * (g[i] * g[i]) for i in range(n)])


def _momentum_reference(c, *leaves):
    n = len(leaves) // 2
    return [c[0] * leaves[n + i] + c[1] * leaves[i] for i in range(n)]


def _call(target: str, n_in_state: int, gs: Sequence[jax.Array]):
    """The kernel ``target`` on ``(coef, *gs, *states...)``, each state leaf
    updated in place."""
    n = len(gs)
    dtype = np.dtype(gs[0].dtype)
    shapes = [jax.ShapeDtypeStruct(g.shape, dtype) for g in gs] * n_in_state
    aliases = {1 + n + i: i for i in range(n_in_state * n)}
    return jax.ffi.ffi_call(f"{target}_{_DTYPES[dtype]}", shapes, input_output_aliases=aliases)


def adam_moments(coef: jax.Array, gs: Sequence[jax.Array], ms: Sequence[jax.Array],
                 vs: Sequence[jax.Array]) -> tuple[list, list]:
    """Adam's new moments for ``n`` leaves of one dtype in one kernel call,
    ``coef = (b1, 1 - b1, b2, 1 - b2)``: ``m' = b1 m + (1 - b1) g`` and
    ``v' = b2 v + (1 - b2) g g``."""
    n = len(gs)
    call = _call("fnopt_adam", 2, gs)

    def kernel(c, *leaves):
        out = call(c, *leaves)
        return list(out[:n]), list(out[n:])

    m, v = _with_fallback(kernel, _adam_reference)(coef, *gs, *ms, *vs)
    return list(m), list(v)


def momentum_buffers(coef: jax.Array, gs: Sequence[jax.Array], bufs: Sequence[jax.Array]) -> list:
    """The new momentum buffers ``b' = momentum b + take g`` for ``n`` leaves
    of one dtype in one kernel call, ``coef = (momentum, take)``."""
    call = _call("fnopt_momentum", 1, gs)

    def kernel(c, *leaves):
        return list(call(c, *leaves))

    return list(_with_fallback(kernel, _momentum_reference)(coef, *gs, *bufs))


def _adam_step_reference(c, *leaves):
    n = len(leaves) // 4
    g, p, m, v = (leaves[k * n:(k + 1) * n] for k in range(4))
    ps, ms, vs = [], [], []
    for i in range(n):
        gi = jnp.where(c[10] != 0, -g[i], g[i])
        gi = jnp.where(c[11] != 0, gi + c[8] * p[i], gi)
        mi = c[0] * m[i] + c[1] * gi
        vi = c[2] * v[i] + c[3] * (gi * gi)
        d = (mi * c[4]) / (jnp.sqrt(vi) * c[5] + c[6])
        d = jnp.where(c[12] != 0, d + c[9] * p[i], d)
        ps.append(p[i] + d * c[7])
        ms.append(mi)
        vs.append(vi)
    return ps, ms, vs


def _momentum_step_reference(c, *leaves):
    n = len(leaves) // 3
    g, p, b = (leaves[k * n:(k + 1) * n] for k in range(3))
    ps, bs = [], []
    for i in range(n):
        gi = jnp.where(c[4] != 0, -g[i], g[i])
        gi = jnp.where(c[5] != 0, gi + c[3] * p[i], gi)
        bi = c[0] * b[i] + c[1] * gi
        d = jnp.where(c[6] != 0, gi + c[0] * bi, bi)
        ps.append(p[i] + d * c[2])
        bs.append(bi)
    return ps, bs


_STEPS = {"adam_step": (13, 3, _adam_step_reference), "momentum_step": (7, 2, _momentum_step_reference)}


def whole_step(kind: str, coef: jax.Array, gs: Sequence[jax.Array], buffers: Sequence[Sequence[jax.Array]]) -> list[list]:
    """One in-place step for ``n`` leaves of one dtype: ``buffers`` is
    ``(params, *state buffers)``, each ``n`` leaves, all updated in place;
    returns their new values in the same layout. ``kind`` is ``"adam_step"``
    (``coef`` of 13, buffers params, mu, nu) or ``"momentum_step"`` (7;
    params, trace); the arithmetic is written out in
    ``_kernels/multi_tensor.cc`` and in the references above."""
    n_coef, n_buf, reference = _STEPS[kind]
    n = len(gs)
    if coef.shape != (n_coef,) or len(buffers) != n_buf:
        raise ValueError(f"fnopt._fused.whole_step({kind!r}): {coef.shape} coefficients, {len(buffers)} buffers")
    call = _call(f"fnopt_{kind}", n_buf, gs)

    def kernel(c, *leaves):
        out = call(c, *leaves)
        return tuple(list(out[k * n:(k + 1) * n]) for k in range(n_buf))

    out = _with_fallback(kernel, reference)(coef, *gs, *(x for b in buffers for x in b))
    return [list(o) for o in out]


def whole_step_packed(kind: str, coef: jax.Array, gs: Sequence[jax.Array], ps: Sequence[jax.Array],
                      flats: Sequence[jax.Array], offset: int) -> tuple[list, list]:
    """:func:`whole_step` for a packed state (:func:`fnopt.packed`): each state
    buffer is one flat array ``flats[k]`` holding the ``n`` leaves back to back
    from element ``offset``. Returns the new params and flat arrays (all
    updated in place)."""
    n_coef, n_buf, reference = _STEPS[kind]
    n = len(gs)
    if coef.shape != (n_coef,) or len(flats) != n_buf - 1 or len(ps) != n:
        raise ValueError(f"fnopt._fused.whole_step_packed({kind!r}): {coef.shape} coefficients, {len(flats)} buffers")
    dtype = np.dtype(gs[0].dtype)
    sizes = [int(np.size(g)) for g in gs]
    shapes = [jax.ShapeDtypeStruct(g.shape, dtype) for g in gs] + [jax.ShapeDtypeStruct(f.shape, dtype) for f in flats]
    aliases = {1 + n + i: i for i in range(n + len(flats))}
    call = jax.ffi.ffi_call(f"fnopt_{kind}_packed_{_DTYPES[dtype]}", shapes, input_output_aliases=aliases)

    def kernel(c, *leaves):
        out = call(c, *leaves, offset=np.int64(offset))
        return list(out[:n]), list(out[n:])

    def packed_reference(c, *leaves):
        g, p, fl = leaves[:n], leaves[n:2 * n], leaves[2 * n:]
        starts = np.cumsum([offset, *sizes[:-1]])
        state = [[jax.lax.dynamic_slice(f, (int(a),), (z,)).reshape(g[i].shape) for i, (a, z) in
                  enumerate(zip(starts, sizes))] for f in fl]
        out = reference(c, *g, *p, *(x for b in state for x in b))
        new_fl = []
        for f, leaves_k in zip(fl, out[1:]):
            for a, leaf in zip(starts, leaves_k):
                f = jax.lax.dynamic_update_slice(f, leaf.reshape(-1), (int(a),))
            new_fl.append(f)
        return list(out[0]), new_fl

    new_p, new_flats = _with_fallback(kernel, packed_reference)(coef, *gs, *ps, *flats)
    return list(new_p), list(new_flats)


def negate(x: jax.Array) -> jax.Array:
    """``-x`` for a float32 array, in place, split between threads like the
    optimizer kernels: the bandwidth probe of ``benchmarks/step_time.py``
    (requires the kernel: :func:`enabled`)."""
    return jax.ffi.ffi_call("fnopt_negate_f32", jax.ShapeDtypeStruct(x.shape, x.dtype),
                            input_output_aliases={0: 0})(x)


def run_groups(fn: Callable, values: list, leaves: list, others: list[list], group_call: Callable) -> list:
    """``[fn(values[i], leaves[i], *others_i)]`` for every leaf, except that
    the eligible leaves (:func:`_eligible`) are batched by hyperparameter
    group and dtype into ``group_call(values, idx) -> per-leaf results``."""
    results: list[Any] = [None] * len(leaves)
    groups: dict[tuple, list[int]] = {}
    owners: dict[int, Any] = {}
    for i, leaf in enumerate(leaves):
        state = [o[i] for o in others]
        if _eligible(leaf, *state):
            key = (id(values[i]), np.dtype(jnp.result_type(leaf)))
            owners[id(values[i])] = values[i]
            groups.setdefault(key, []).append(i)
        else:
            results[i] = fn(values[i], leaf, *state)
    for (vid, _), idx in groups.items():
        for start in range(0, len(idx), CHUNK):
            chunk = idx[start:start + CHUNK]
            for i, r in zip(chunk, group_call(owners[vid], chunk)):
                results[i] = r
    return results
