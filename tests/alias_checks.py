"""Checks every new optimizer family runs (issue 13, item 4), shared by the
family test files: parity runs against Optax on a two-leaf problem (real
and complex), group trees, vmap over a hyperparameter, empty params, and
the checkpoint round-trip.

Expected values always come from an independent run: Optax itself, or the
same fnopt optimizer on a *separate* problem (one group alone, one
hyperparameter value alone), never from the run under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from transforms_problem import DTYPE, X64, params0, run_fnopt

STEPS = 30
MASK = {"w": True, "b": False}
# float32: both libraries round differently (fnopt forms 1 - b in float32
# from the float32 b, Optax from the Python float; reciprocal bias
# corrections), ~1e-5 relative after 30 steps. x64: rounding only.
RTOL, ATOL = (1e-9, 1e-11) if X64 else (1e-4, 1e-5)
CDTYPE = jnp.complex128 if X64 else jnp.complex64

_rng = np.random.default_rng(7)
_A = _rng.normal(size=(8, 6)) + 1j * _rng.normal(size=(8, 6))
_Y = _rng.normal(size=8) + 1j * _rng.normal(size=8)
_Z0 = _rng.normal(size=6) + 1j * _rng.normal(size=6)


def run_optax(opt, steps=STEPS, params=None):
    """The Optax oracle on the same problem (Optax mixes int32 counts and
    Python floats: not strict-promotion clean)."""
    with jax.numpy_dtype_promotion("standard"):
        return run_fnopt(opt, steps, params)


def assert_parity(ours, theirs, steps=STEPS, params=None, rtol=None, atol=None):
    """fnopt and Optax trajectories (params after every step) agree."""
    a = run_fnopt(ours, steps, params)
    b = run_optax(theirs, steps, params)
    assert np.max(np.abs(b - b[0])) > 10 * (atol or ATOL), "the run must move the params"
    np.testing.assert_allclose(a, b, rtol=rtol or RTOL, atol=atol or ATOL)


def complex_params():
    return {"w": jnp.asarray(_Z0[:4], CDTYPE), "b": jnp.asarray(_Z0[4:], CDTYPE)}


def complex_loss(params):
    z = jnp.concatenate([params["w"], params["b"]])
    r = jnp.asarray(_A, z.dtype) @ z - jnp.asarray(_Y, z.dtype)
    return jnp.sum(jnp.real(r * jnp.conj(r))) / 16 + 0.01 * jnp.sum(jnp.abs(z) ** 4)


def run_complex(opt, steps=STEPS, standard=False):
    """Params after each step on a complex least-squares problem."""

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            g = jax.grad(complex_loss)(p)
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), jnp.concatenate([p["w"], p["b"]])

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[1]

    if standard:
        with jax.numpy_dtype_promotion("standard"):
            return np.asarray(run(complex_params()))
    return np.asarray(run(complex_params()))


def assert_complex_parity(ours, theirs, rtol=None, atol=None):
    a, b = run_complex(ours), run_complex(theirs, standard=True)
    assert np.iscomplexobj(a) and np.max(np.abs(b.imag - b[0].imag)) > 1e-3
    np.testing.assert_allclose(a, b, rtol=rtol or RTOL, atol=atol or ATOL)


def random_grads(steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(steps, 4)), DTYPE),
        "b": jnp.asarray(rng.normal(size=(steps, 2)), DTYPE),
    }


def run_on_grads(opt, params, grads):
    """Params after each of the fixed ``grads`` (leading axis: the step)."""

    def step(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    return jax.lax.scan(step, (params, opt.init(params)), grads)[1]


def check_group_tree(make, first: dict, second: dict):
    """``make(**{name: {"w": first[name], "b": second[name]}})`` on
    ``{"w", "b"}`` equals ``make(**first)`` on ``{"w"}`` and
    ``make(**second)`` on ``{"b"}`` run separately (fixed gradients, so the
    two leaves do not interact through the loss)."""
    grouped = {k: {"w": first[k], "b": second[k]} for k in first}
    params, grads = params0(), random_grads()
    both = run_on_grads(make(**grouped), params, grads)
    alone_w = run_on_grads(make(**first), {"w": params["w"]}, {"w": grads["w"]})
    alone_b = run_on_grads(make(**second), {"b": params["b"]}, {"b": grads["b"]})
    np.testing.assert_array_equal(both["w"], alone_w["w"])
    np.testing.assert_array_equal(both["b"], alone_b["b"])


def check_vmap(make, name: str, values):
    """A ``vmap`` over hyperparameter ``name`` equals one run per value."""
    params, grads = params0(), random_grads(10)

    @jax.vmap
    def sweep(value):
        return run_on_grads(make(**{name: value}), params, grads)

    swept = sweep(jnp.asarray(values, DTYPE))
    for i, value in enumerate(values):
        alone = run_on_grads(make(**{name: value}), params, grads)
        for k in params:
            np.testing.assert_allclose(swept[k][i], alone[k], rtol=1e-6 if not X64 else 1e-12, atol=1e-7)


def check_empty(opt):
    state = opt.init({})
    updates, state = opt.update({}, state, {})
    assert updates == {}
    updates, _ = jax.jit(opt.update)({}, state, {})
    assert updates == {}


def check_checkpoint_round_trip(opt, steps=5):
    """The state flattened to plain arrays and rebuilt continues the run bit
    for bit."""
    params, grads = params0(), random_grads(2 * steps)
    update = jax.jit(opt.update)
    state, p = opt.init(params), params
    for t in range(steps):
        u, state = update(jax.tree.map(lambda g: g[t], grads), state, p)
        p = optax.apply_updates(p, u)
    leaves, treedef = jax.tree.flatten(state)
    restored = jax.tree.unflatten(treedef, [np.asarray(x).copy() for x in leaves])
    runs = []
    for s in (state, restored):
        q = p
        for t in range(steps, 2 * steps):
            u, s = update(jax.tree.map(lambda g: g[t], grads), s, q)
            q = optax.apply_updates(q, u)
        runs.append((q, s))
    for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()



def check_optax_defaults(ours, theirs, renames=None):
    """Every argument the two signatures share (``renames``: Optax's name ->
    fnopt's) has the same default, and Optax's positional order is kept for
    them; a mask's ``None`` (every leaf) stands for Optax's ``True``."""
    import inspect

    renames = renames or {}
    mine = inspect.signature(ours).parameters
    shared = []
    for name, param in inspect.signature(theirs).parameters.items():
        ours_name = renames.get(name, name)
        assert ours_name in mine, (name, "missing")
        expected = None if "mask" in name and param.default is True else param.default
        assert mine[ours_name].default == expected or (
            mine[ours_name].default is inspect.Parameter.empty and expected is inspect.Parameter.empty
        ), name
        if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            shared.append(ours_name)
    positional = [n for n, p in mine.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional[: len(shared)] == shared
