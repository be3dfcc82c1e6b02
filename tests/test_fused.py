"""The fused multi-tensor CPU kernel (issue 15) against fnopt's XLA path.

Each test runs the same optimizer twice, once with ``FNOPT_FUSED=0`` (the
per-leaf XLA path) and once with ``FNOPT_FUSED=1`` (the kernel), and
requires the same params and states. The XLA path itself is checked against
Optax and torch elsewhere (test_aliases.py, test_transforms_*.py), and those
files are also run with the kernel forced on. Skipped when no kernel can be
built (no C++ compiler).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sweeps

import fnopt
from fnopt import _fused, schedules, transforms

X64 = bool(jax.config.jax_enable_x64)


def _kernel_builds() -> bool:
    return jax.default_backend() == "cpu" and jax.device_count() == 1 and _fused._library() is not None


pytestmark = pytest.mark.skipif(not _kernel_builds(), reason="no fused kernel here (no C++ compiler, or not one CPU)")


def mixed_tree():
    """float32 leaves of several shapes (one large enough for the kernel to
    split it between threads), a scalar, a 0-size leaf, a None leaf, a
    bfloat16 leaf (XLA path inside the same update) and, under x64,
    float64 leaves (their own kernel call)."""
    rng = np.random.default_rng(0)

    def arr(shape, dtype=np.float32):
        return jnp.asarray(rng.standard_normal(shape), dtype)

    tree = {"w": arr((7, 5)), "b": arr((5,)), "s": arr(()), "empty": arr((0, 3)), "none": None,
            "deep": [arr((3, 3, 2)), arr((64,)), arr((700, 400))], "half": arr((6,), jnp.bfloat16)}
    if X64:
        tree["w64"] = arr((4, 3), np.float64)
        tree["s64"] = arr((), np.float64)
    return tree


def grads_at(params, t):
    return jax.tree.map(lambda p: jnp.sin(p * jnp.asarray(t + 1, p.dtype) + 0.5).astype(p.dtype), params)


def run(make, mode, monkeypatch, steps=25, jit=True, params=None):
    monkeypatch.setenv("FNOPT_FUSED", mode)
    tx = make()
    params = mixed_tree() if params is None else params
    state = tx.init(params)

    def step(p, s, t):
        u, s = tx.update(grads_at(p, t), s, p)
        return optax.apply_updates(p, u), s

    f = jax.jit(step) if jit else step
    for t in range(steps):
        params, state = f(params, state, jnp.asarray(t, jnp.float32))
    hlo = jax.jit(step).lower(params, state, jnp.asarray(0, jnp.float32)).as_text()
    return params, state, hlo


def assert_same(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        rtol = 1e-12 if x.dtype == jnp.float64 else 1e-6
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=rtol)


CASES = {
    "adam": lambda: fnopt.adam(1e-2),
    "adamw": lambda: fnopt.adamw(1e-2, weight_decay=0.1),
    "adam_eps0_root": lambda: transforms.scale_by_adam(eps=0.0, eps_root=1e-8),
    "adam_l2_maximize": lambda: fnopt.adam(1e-2, weight_decay=0.01, maximize=True),
    "sgd_momentum": lambda: fnopt.sgd(1e-2, momentum=0.9),
    "sgd_nesterov_decay": lambda: fnopt.sgd(1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_dampening": lambda: fnopt.sgd(1e-2, momentum=0.8, dampening=0.3),
    "scheduled": lambda: fnopt.adamw(schedules.cosine_decay(1e-2, 20), b1=schedules.one_cycle_momentum(20),
                                     weight_decay=0.01),
    "sgd_scheduled_momentum": lambda: fnopt.sgd(1e-2, momentum=schedules.one_cycle_momentum(20)),
    "groups": lambda: fnopt.adam({"w": 1e-2, "b": 1e-3, "s": 1e-2, "empty": 1e-2, "none": 1e-2, "deep": 2e-2,
                                  "half": 1e-2, **({"w64": 1e-2, "s64": 1e-3} if X64 else {})},
                                 b1={"w": 0.8, "b": 0.9, "s": 0.9, "empty": 0.9, "none": 0.9, "deep": 0.95,
                                     "half": 0.9, **({"w64": 0.9, "s64": 0.7} if X64 else {})}),
    "clip_chain": lambda: fnopt.chain(transforms.clip_by_global_norm(1.0), fnopt.adamw(1e-2)),
}


@pytest.mark.parametrize("name", sweeps.sweep(
    list(CASES), ["adam", "adamw", "sgd_nesterov_decay", "scheduled", "groups", "clip_chain"]))
def test_kernel_equals_xla_path(name, monkeypatch):
    p0, s0, hlo0 = run(CASES[name], "0", monkeypatch)
    p1, s1, hlo1 = run(CASES[name], "1", monkeypatch)
    assert "fnopt_" not in hlo0
    calls = hlo1.count("custom_call @fnopt_")
    # one call per dtype (float32, and float64 under x64); one per group with group trees
    assert calls == (4 + 2 * X64 if name == "groups" else 1 + X64)
    assert_same(p0, p1)
    assert_same(s0, s1)


def test_eager_and_amsgrad(monkeypatch):
    """Outside jit the kernel runs op by op; amsgrad keeps the XLA path."""
    p0, s0, _ = run(lambda: fnopt.adam(1e-2), "0", monkeypatch, steps=3, jit=False)
    p1, s1, _ = run(lambda: fnopt.adam(1e-2), "1", monkeypatch, steps=3, jit=False)
    assert_same(p0, p1)
    assert_same(s0, s1)
    _, _, hlo = run(lambda: fnopt.adam(1e-2, amsgrad=True), "1", monkeypatch, steps=1)
    assert "fnopt_" not in hlo


@pytest.mark.parametrize("name", ["adam", "sgd_nesterov_decay"])
def test_traced_hyperparameters_scan(name, monkeypatch):
    """Hyperparameters as traced arguments of a jitted scan: one compile
    serves every value (they are operands of the kernel)."""
    make = {"adam": lambda lr, b: fnopt.adam(lr, b1=b), "sgd_nesterov_decay":
            lambda lr, b: fnopt.sgd(lr, momentum=b, nesterov=True, weight_decay=1e-3)}[name]
    out = {}
    for mode in "01":
        monkeypatch.setenv("FNOPT_FUSED", mode)

        @jax.jit
        def train(params, lr, b):
            tx = make(lr, b)

            def body(carry, t):
                p, s = carry
                u, s = tx.update(grads_at(p, t), s, p)
                return (optax.apply_updates(p, u), s), None

            (p, s), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(15, dtype=jnp.float32))
            return p, s

        out[mode] = [train(mixed_tree(), jnp.asarray(lr, jnp.float32), jnp.asarray(b, jnp.float32))
                     for lr, b in ((1e-2, 0.9), (3e-2, 0.5))]
        assert ("fnopt_" in train.lower(mixed_tree(), 0.1, 0.9).as_text()) == (mode == "1")
    assert_same(out["0"], out["1"])


@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "sgd_nesterov_decay"])
def test_vmap(name, monkeypatch):
    """Under vmap (a batch of models, or a batch of learning rates) the kernel
    falls back to its jax.numpy transcription; the results stay those of the
    XLA path."""
    out = {}
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x, -x]), mixed_tree())
    for mode in "01":
        monkeypatch.setenv("FNOPT_FUSED", mode)
        tx = CASES[name]()

        def steps(p, lr_scale):
            s = tx.init(p)
            for t in range(3):
                u, s = tx.update(grads_at(p, t), s, p)
                p = optax.apply_updates(p, jax.tree.map(lambda x: x * lr_scale.astype(x.dtype), u))
            return p, s

        out[mode] = jax.jit(jax.vmap(steps))(batch, jnp.asarray([1.0, 0.5, 2.0], jnp.float32))
    assert_same(out["0"], out["1"])


def test_jvp_uses_the_reference(monkeypatch):
    """Differentiating through an update (meta-learning) follows the XLA
    formulas: the kernel has a jax.numpy JVP."""
    params = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)}
    out = {}
    for mode in "01":
        monkeypatch.setenv("FNOPT_FUSED", mode)
        tx = fnopt.adam(1e-2)
        state = tx.init(params)

        def f(g):
            u, _ = tx.update(g, state, params)
            return u

        out[mode] = jax.jvp(f, (params,), (jax.tree.map(jnp.ones_like, params),))
    assert_same(out["0"], out["1"])


def test_empty_tree(monkeypatch):
    monkeypatch.setenv("FNOPT_FUSED", "1")
    for tx in (fnopt.adam(1e-2), fnopt.sgd(1e-2, momentum=0.9)):
        state = tx.init({})
        u, state = jax.jit(tx.update)({}, state, {})
        assert u == {}


def test_kernel_absent(monkeypatch):
    """No compiler: the default (off) and `auto` use the XLA path silently,
    FNOPT_FUSED=1 raises, FNOPT_FUSED=0 never tries."""
    monkeypatch.setattr(_fused, "_loaded", {"done": False, "lib": None, "error": "not built yet"})
    monkeypatch.setattr(_fused, "_compiler", lambda: None)
    monkeypatch.setenv("FNOPT_CACHE_DIR", "/nonexistent/fnopt-test")
    monkeypatch.delenv("FNOPT_FUSED", raising=False)
    assert not _fused.enabled() and not _fused.enabled(whole_step=True)
    params0 = mixed_tree()
    p, _ = fnopt.apply_gradients(fnopt.adam(1e-2), params0, fnopt.adam(1e-2).init(params0), params0)  # XLA path
    assert jax.tree.structure(p) == jax.tree.structure(params0)
    monkeypatch.setenv("FNOPT_FUSED", "auto")
    assert not _fused.enabled()
    assert "no C++ compiler" in _fused.status()
    tx = fnopt.adam(1e-2)
    params = mixed_tree()
    hlo = jax.jit(lambda p, s: tx.update(p, s, p)).lower(params, tx.init(params)).as_text()
    assert "fnopt_" not in hlo
    monkeypatch.setenv("FNOPT_FUSED", "1")
    with pytest.raises(RuntimeError, match="FNOPT_FUSED=1 but the fused kernel could not be built"):
        tx.update(params, tx.init(params), params)
    monkeypatch.setenv("FNOPT_FUSED", "0")
    assert not _fused.enabled()


@pytest.mark.parametrize("name", ["adamw", "sgd_nesterov_decay"])
def test_chunked_calls(name, monkeypatch):
    """A group larger than the chunk size is split over several kernel calls."""
    p0, s0, _ = run(CASES[name], "0", monkeypatch, steps=5)
    monkeypatch.setattr(_fused, "CHUNK", 2)
    p1, s1, hlo = run(CASES[name], "1", monkeypatch, steps=5)
    assert hlo.count("custom_call @fnopt_") == 3 + X64  # 5 float32 leaves in chunks of 2 (+ 2 float64)
    assert_same(p0, p1)
    assert_same(s0, s1)
