"""The test problem shared by the optimizer parity tests, in NumPy (float64
reference), JAX (fnopt) and torch: a least-squares loss plus a quartic term,
so gradients depend on the params, over a two-leaf params dict.

``f(x) = |A x - y|^2 / (2 n) + 0.025 * sum(x^4)`` with ``x = concat(w, b)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

_rng = np.random.default_rng(0)
A = _rng.normal(size=(8, 6))
Y = _rng.normal(size=8)
W0 = _rng.normal(size=4)
B0 = _rng.normal(size=2)
X0 = np.concatenate([W0, B0])
N = len(Y)

X64 = bool(jax.config.jax_enable_x64)
DTYPE = jnp.float64 if X64 else jnp.float32
# fnopt in float64 vs a float64 oracle agrees to rounding; in float32, to
# float32 rounding accumulated over the run.
RTOL, ATOL = (1e-9, 1e-11) if X64 else (2e-4, 2e-5)


def grad_np(x):
    return A.T @ (A @ x - Y) / N + 0.1 * x**3


def params0(dtype=None):
    dtype = dtype or DTYPE
    return {"w": jnp.asarray(W0, dtype), "b": jnp.asarray(B0, dtype)}


def loss_jax(params):
    x = jnp.concatenate([params["w"], params["b"]])
    a, y = jnp.asarray(A, x.dtype), jnp.asarray(Y, x.dtype)
    r = a @ x - y
    return r @ r / (2 * N) + 0.025 * jnp.sum(x**4)


def flat(params):
    return np.concatenate([np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)], axis=-1)


def run_fnopt(opt, steps, params=None):
    """The params after each of ``steps`` updates, flattened: ``(steps, 6)``."""
    params = params0() if params is None else params

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss_jax)(p), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[1]

    return flat(run(params))


def run_reference(step_fn, steps, x0=X0):
    """A NumPy reference: ``step_fn(x, g, t) -> x_new`` for ``t = 0, 1, ...``."""
    x, out = np.array(x0, np.float64), []
    for t in range(steps):
        x = step_fn(x, grad_np(x), t)
        out.append(x)
    return np.stack(out)


def assert_close(actual, expected, rtol=None, atol=None):
    np.testing.assert_allclose(actual, expected, rtol=rtol or RTOL, atol=atol or ATOL)
