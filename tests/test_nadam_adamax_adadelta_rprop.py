"""NAdam (NAdamW), Adamax, Adadelta and Rprop (issue 13, item 1).

Oracles: ``torch.optim`` 2.13 (single-tensor code path, ``foreach=False``)
step for step on a two-leaf problem whose gradients depend on the params,
every option; on complex params Rprop against torch (the same algorithm),
Adamax against Optax, NAdam and Adadelta against float64 NumPy transcriptions
of their formulas with Optax's ``|g|^2`` convention (torch's complex form
differs, see the docstrings). Tolerances: float32 runs agree with float32
torch to ``rtol=2e-4, atol=2e-5`` after 40 steps (float32 rounding
accumulated; measured worst 6e-7 absolute), float64 runs (``FNOPT_X64=1``)
to ``rtol=1e-9, atol=1e-11`` (measured worst 1.4e-15); Rprop agrees bit for
bit.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transforms_problem import A, B0, N, W0, X64, Y, assert_close

import fnopt
from fnopt import schedules
from fnopt import transforms as T

STEPS = 40
REAL = jnp.float64 if X64 else jnp.float32
COMPLEX = jnp.complex128 if X64 else jnp.complex64
_rng = np.random.default_rng(1)
W0_C = W0 + 1j * _rng.normal(size=W0.shape)
B0_C = B0 + 1j * _rng.normal(size=B0.shape)

# ------------------------------------------------------------ the problem
# The steepest-descent direction of f(x) = |A x - y|^2 / (2 n) + 0.025 sum |x|^4,
# x = concat(w, b): A^T (A x - y) / n + 0.1 |x|^2 x (torch's convention for
# complex params; the real gradient for real ones).


def _grad_jax(params, sign):
    x = jnp.concatenate([params["w"], params["b"]])
    a, y = jnp.asarray(A, x.dtype), jnp.asarray(Y, x.dtype)
    g = a.T @ (a @ x - y) / N + 0.1 * (x * jnp.conj(x)) * x
    return {"w": sign * g[:4], "b": sign * g[4:]}


def _grad_np(x):
    return A.T @ (A @ x - Y) / N + 0.1 * np.abs(x) ** 2 * x


def _params(complex_):
    if complex_:
        return {"w": jnp.asarray(W0_C, COMPLEX), "b": jnp.asarray(B0_C, COMPLEX)}
    return {"w": jnp.asarray(W0, REAL), "b": jnp.asarray(B0, REAL)}


def _flat(params):
    return np.concatenate([np.asarray(params["w"]), np.asarray(params["b"])], axis=-1).astype(
        np.complex128 if np.iscomplexobj(params["w"]) else np.float64
    )


def run_fnopt(opt, steps=STEPS, *, sign=1.0, complex_=False, params=None):
    """The params after each update, flattened ``(steps, 6)``; ``sign=-1``
    maximizes ``-f`` (so a ``maximize=True`` run descends ``f``)."""
    params = _params(complex_) if params is None else params

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(_grad_jax(p, sign), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[1]

    return _flat(run(params))


def run_torch(make_opt, *, sign=1.0, complex_=False, make_sched=None, steps=STEPS):
    torch = pytest.importorskip("torch")
    dtype = (torch.complex128 if X64 else torch.complex64) if complex_ else (torch.float64 if X64 else torch.float32)
    w0, b0 = (W0_C, B0_C) if complex_ else (W0, B0)
    # torch keeps NAdam's mu_product and every step count in the default dtype.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if X64 else torch.float32)
    try:
        w, b = torch.tensor(w0, dtype=dtype), torch.tensor(b0, dtype=dtype)
        a, y = torch.tensor(A, dtype=dtype), torch.tensor(Y, dtype=dtype)
        opt = make_opt([w, b])
        sched = make_sched(opt) if make_sched else None
        out = []
        for t in range(steps):
            x = torch.cat([w, b])
            g = a.T @ (a @ x - y) / N + 0.1 * (x * x.conj()) * x
            w.grad, b.grad = sign * g[:4], sign * g[4:]
            opt.step()
            if sched is not None and t + 1 < steps:
                sched.step()
            out.append(torch.cat([w, b]).numpy().astype(np.complex128 if complex_ else np.float64))
        return np.stack(out)
    finally:
        torch.set_default_dtype(previous)


def _torch(name, **kw):
    def make(params):
        import torch

        return getattr(torch.optim, name)(params, foreach=False, **kw)

    return make


# ------------------------------------------------------------ torch parity

PARITY = {
    # name: (fnopt optimizer, torch optimizer, sign: -1 for maximize runs)
    "nadam": (lambda: fnopt.nadam(0.05), _torch("NAdam", lr=0.05), 1.0),
    "nadam-defaults": (lambda: fnopt.nadam(), _torch("NAdam"), 1.0),
    "nadam-betas-eps-momentum_decay": (
        lambda: fnopt.nadam(0.05, 0.8, 0.95, 1e-2, 0.05),
        _torch("NAdam", lr=0.05, betas=(0.8, 0.95), eps=1e-2, momentum_decay=0.05),
        1.0,
    ),
    "nadam-weight_decay": (
        lambda: fnopt.nadam(0.05, weight_decay=0.1),
        _torch("NAdam", lr=0.05, weight_decay=0.1),
        1.0,
    ),
    "nadamw": (
        lambda: fnopt.nadam(0.05, weight_decay=0.5, decoupled_weight_decay=True),
        _torch("NAdam", lr=0.05, weight_decay=0.5, decoupled_weight_decay=True),
        1.0,
    ),
    "nadam-maximize-weight_decay": (
        lambda: fnopt.nadam(0.05, weight_decay=0.1, maximize=True),
        _torch("NAdam", lr=0.05, weight_decay=0.1, maximize=True),
        -1.0,
    ),
    "nadamw-maximize": (
        lambda: fnopt.nadam(0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
        _torch("NAdam", lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
        -1.0,
    ),
    "nadam-no_momentum_decay": (
        lambda: fnopt.nadam(0.05, momentum_decay=0.0),
        _torch("NAdam", lr=0.05, momentum_decay=0.0),
        1.0,
    ),
    "adamax": (lambda: fnopt.adamax(0.05), _torch("Adamax", lr=0.05), 1.0),
    "adamax-defaults": (lambda: fnopt.adamax(), _torch("Adamax"), 1.0),
    "adamax-betas-eps-weight_decay": (
        lambda: fnopt.adamax(0.05, 0.8, 0.9, 1e-2, weight_decay=0.1),
        _torch("Adamax", lr=0.05, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.1),
        1.0,
    ),
    "adamax-maximize-weight_decay": (
        lambda: fnopt.adamax(0.05, weight_decay=0.1, maximize=True),
        _torch("Adamax", lr=0.05, weight_decay=0.1, maximize=True),
        -1.0,
    ),
    "adadelta-defaults": (lambda: fnopt.adadelta(), _torch("Adadelta"), 1.0),
    "adadelta-rho-eps-weight_decay": (
        lambda: fnopt.adadelta(0.5, 0.8, 1e-3, weight_decay=0.1),
        _torch("Adadelta", lr=0.5, rho=0.8, eps=1e-3, weight_decay=0.1),
        1.0,
    ),
    "adadelta-maximize-weight_decay": (
        lambda: fnopt.adadelta(2.0, eps=1e-4, weight_decay=0.1, maximize=True),
        _torch("Adadelta", lr=2.0, eps=1e-4, weight_decay=0.1, maximize=True),
        -1.0,
    ),
    "rprop-defaults": (lambda: fnopt.rprop(), _torch("Rprop"), 1.0),
    "rprop-etas-step_sizes": (
        lambda: fnopt.rprop(0.05, 0.3, 1.5, 1e-3, 0.2),
        _torch("Rprop", lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
        1.0,
    ),
    "rprop-maximize": (
        lambda: fnopt.rprop(0.05, maximize=True),
        _torch("Rprop", lr=0.05, maximize=True),
        -1.0,
    ),
}


@pytest.mark.parametrize("name", PARITY)
def test_matches_torch(name):
    make, make_torch, sign = PARITY[name]
    expected = run_torch(make_torch, sign=sign)
    actual = run_fnopt(make(), sign=sign)
    assert np.abs(expected[-1] - expected[0]).max() > 0.05  # the run goes somewhere
    if name.startswith("rprop"):
        np.testing.assert_array_equal(actual, expected)
    else:
        assert_close(actual, expected)


SCHEDULED = {
    # torch's OneCycleLR cycles lr and betas[0]; fnopt schedules learning_rate and b1.
    "nadam-one_cycle-b1": (
        lambda: fnopt.nadam(schedules.one_cycle(0.05, STEPS), b1=schedules.one_cycle_momentum(STEPS)),
        _torch("NAdam", lr=0.05),
        lambda o: __import__("torch").optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=STEPS),
    ),
    "adamax-one_cycle-b1": (
        lambda: fnopt.adamax(schedules.one_cycle(0.05, STEPS), b1=schedules.one_cycle_momentum(STEPS, base_value=0.8)),
        _torch("Adamax", lr=0.05),
        lambda o: __import__("torch").optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=STEPS, base_momentum=0.8),
    ),
    "adadelta-step_decay": (
        lambda: fnopt.adadelta(schedules.step_decay(1.0, 10, 0.5)),
        _torch("Adadelta"),
        lambda o: __import__("torch").optim.lr_scheduler.StepLR(o, 10, 0.5),
    ),
    # torch reads Rprop's lr once, when the state is created (after the
    # scheduler set it to max_lr / div_factor): a schedule is read at step 0.
    "rprop-one_cycle": (
        lambda: fnopt.rprop(schedules.one_cycle(0.1, STEPS)),
        _torch("Rprop", lr=0.1),
        lambda o: __import__("torch").optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=STEPS, cycle_momentum=False),
    ),
}


@pytest.mark.parametrize("name", SCHEDULED)
def test_matches_torch_with_scheduler(name):
    make, make_torch, make_sched = SCHEDULED[name]
    expected = run_torch(make_torch, make_sched=make_sched)
    assert_close(run_fnopt(make()), expected)


def test_scheduled_b1_differs_from_constant():
    scheduled = run_fnopt(fnopt.nadam(0.05, b1=schedules.one_cycle_momentum(STEPS)))
    assert np.abs(scheduled - run_fnopt(fnopt.nadam(0.05))).max() > 1e-3


# ------------------------------------------------------------ complex params


def test_rprop_complex_matches_torch():
    """Real and imaginary parts are two real params with their own step sizes, as torch."""
    for kw, sign in (({"lr": 0.05}, 1.0), ({"lr": 0.05, "maximize": True}, -1.0)):
        expected = run_torch(_torch("Rprop", **kw), complex_=True, sign=sign)
        actual = run_fnopt(fnopt.rprop(0.05, maximize=kw.get("maximize", False)), complex_=True, sign=sign)
        assert_close(actual, expected)


def test_adamax_complex_matches_optax():
    """|g| is the modulus, Optax's convention (torch takes real and imaginary parts apart)."""
    opt = optax.adamax(0.05, 0.8, 0.9, 1e-3)
    params = _params(True)
    with jax.numpy_dtype_promotion("standard"):  # Optax keeps a complex nu and mixes dtypes
        expected = run_fnopt(opt, complex_=True, params=params)
    assert_close(run_fnopt(fnopt.adamax(0.05, 0.8, 0.9, 1e-3), complex_=True), expected)


def _nadam_np(lr, b1, b2, eps, psi, wd=0.0):
    state = {"m": 0.0, "v": 0.0, "prod": 1.0}

    def step(x, g, t):
        t += 1
        g = g + wd * x
        mu, mu_next = b1 * (1 - 0.5 * 0.96 ** (t * psi)), b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        state["prod"] *= mu
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * np.abs(g) ** 2
        d = np.sqrt(state["v"] / (1 - b2**t)) + eps
        return x - lr * ((1 - mu) / (1 - state["prod"]) * g + mu_next / (1 - state["prod"] * mu_next) * state["m"]) / d

    return step


def _adadelta_np(lr, rho, eps, wd=0.0):
    state = {"s": 0.0, "a": 0.0}

    def step(x, g, t):
        g = g + wd * x
        state["s"] = rho * state["s"] + (1 - rho) * np.abs(g) ** 2
        delta = np.sqrt(state["a"] + eps) / np.sqrt(state["s"] + eps) * g
        state["a"] = rho * state["a"] + (1 - rho) * np.abs(delta) ** 2
        return x - lr * delta

    return step


def _run_np(step, x0):
    x, out = np.array(x0), []
    for t in range(STEPS):
        x = step(x, _grad_np(x), t)
        out.append(x)
    return np.stack(out)


@pytest.mark.parametrize(
    "make, step",
    [
        pytest.param(lambda: fnopt.nadam(0.05, 0.8, 0.95, 1e-3, 0.05, weight_decay=0.1), _nadam_np(0.05, 0.8, 0.95, 1e-3, 0.05, 0.1), id="nadam"),
        pytest.param(lambda: fnopt.adadelta(0.5, 0.8, 1e-3, weight_decay=0.1), _adadelta_np(0.5, 0.8, 1e-3, 0.1), id="adadelta"),
    ],
)
def test_complex_matches_the_abs_squared_formula(make, step):
    expected = _run_np(step, np.concatenate([W0_C, B0_C]))
    assert_close(run_fnopt(make(), complex_=True), expected)
    # The same formula on real params is torch's (checked above): the oracle is sound.
    assert np.abs(expected[-1] - expected[0]).max() > 0.05


@pytest.mark.parametrize("make", [fnopt.nadam, fnopt.adamax, fnopt.adadelta])
def test_complex_second_moments_are_real(make):
    params = _params(True)
    state = make().init(params)
    real_buffers = [leaf for leaf in jax.tree.leaves(state) if jnp.ndim(leaf) == 1 and not jnp.iscomplexobj(leaf)]
    assert real_buffers and all(leaf.dtype == REAL for leaf in real_buffers)


# ------------------------------------------------------------ fnopt's promises

ALIASES = {
    "nadam": lambda **kw: fnopt.nadam(0.05, **kw),
    "nadamw": lambda **kw: fnopt.nadam(0.05, weight_decay=0.1, decoupled_weight_decay=True, **kw),
    "adamax": lambda **kw: fnopt.adamax(0.05, weight_decay=0.1, **kw),
    "adadelta": lambda **kw: fnopt.adadelta(**kw),
    "rprop": lambda **kw: fnopt.rprop(0.05, **kw),
}
# One hyperparameter per alias to group, schedule and vmap over, with two values.
SWEEP = {
    "nadam": ("b1", 0.8, 0.95),
    "nadamw": ("momentum_decay", 0.0, 0.05),
    "adamax": ("b2", 0.9, 0.99),
    "adadelta": ("rho", 0.5, 0.95),
    "rprop": ("eta_plus", 1.1, 1.5),
}


@pytest.mark.parametrize("name", ALIASES)
def test_group_tree_equals_separate_optimizers(name):
    """A two-group run equals ``optax.partition`` of two single-group optimizers."""
    make = ALIASES[name]
    key, first, second = SWEEP[name]
    grouped = make(**{key: {"w": first, "b": second}})
    labels = {"w": "w", "b": "b"}
    separate = optax.partition({"w": make(**{key: first}), "b": make(**{key: second})}, labels)
    np.testing.assert_allclose(run_fnopt(grouped), run_fnopt(separate), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ALIASES)
def test_vmap_over_a_hyperparameter_matches_separate_runs(name):
    make = ALIASES[name]
    key, first, second = SWEEP[name]
    params = _params(False)

    def final(value):
        opt = make(**{key: value})

        def step(carry, _):
            p, s = carry
            u, s = opt.update(_grad_jax(p, 1.0), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)[0][0]

    batched = jax.jit(jax.vmap(final))(jnp.asarray([first, second], REAL))
    for i, value in enumerate((first, second)):
        one = jax.jit(final)(jnp.asarray(value, REAL))
        for k in params:
            np.testing.assert_allclose(batched[k][i], one[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALIASES)
def test_scheduled_hyperparameter_is_used_and_recorded(name):
    make = ALIASES[name]
    key, first, second = SWEEP[name]
    switch = lambda t: jnp.where(t < 5, first, second)  # noqa: E731
    opt = make(**{key: switch})
    params = _params(False)

    @jax.jit
    def recorded(p):
        def step(s, _):
            s = opt.update(_grad_jax(p, 1.0), s, p)[1]
            return s, fnopt.hyperparams(s)[key]

        return jax.lax.scan(step, opt.init(p), None, length=7)[1]

    np.testing.assert_allclose(recorded(params), [first] * 5 + [second] * 2, rtol=1e-6)
    # The switch changes the run (a constant first value gives another trajectory).
    assert np.abs(run_fnopt(opt) - run_fnopt(make(**{key: first}))).max() > 1e-5


NAMES = {
    "nadam": (lambda: fnopt.nadam(), {"b1", "b2", "eps", "momentum_decay", "learning_rate"}),
    "nadamw": (
        lambda: fnopt.nadam(weight_decay=0.1, decoupled_weight_decay=True),
        {"b1", "b2", "eps", "momentum_decay", "weight_decay", "learning_rate"},
    ),
    "adamax": (lambda: fnopt.adamax(weight_decay=0.1), {"weight_decay", "b1", "b2", "eps", "learning_rate"}),
    "adadelta": (lambda: fnopt.adadelta(), {"rho", "eps", "learning_rate"}),
    "rprop": (
        lambda: fnopt.rprop(),
        {"learning_rate", "eta_minus", "eta_plus", "min_step_size", "max_step_size"},
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_records_every_hyperparameter_by_name(name):
    make, names = NAMES[name]
    params = {"w": jnp.ones(3)}
    opt = make()
    state = opt.init(params)
    _, state = opt.update({"w": jnp.ones(3)}, state, params)
    assert set(fnopt.hyperparams(state)) == names | {"effective_learning_rate"}


def test_rprop_reads_a_learning_rate_schedule_at_step_zero():
    opt = fnopt.rprop(schedules.exponential_decay(0.1, 0.5))
    params = jnp.zeros(2, REAL)
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update(jnp.asarray([1.0, -1.0], REAL), state, params)
    np.testing.assert_allclose(updates, [-0.1 * 1.2**2, 0.1 * 1.2**2], rtol=1e-6)
    assert float(fnopt.hyperparams(state)["learning_rate"]) == pytest.approx(0.1)


INVALID = [
    (lambda: fnopt.nadam(-1e-3), "`nadam(learning_rate=...)` must be >= 0"),
    (lambda: fnopt.nadam(b1=1.0), "`nadam(b1=...)` must be in [0, 1), got 1.0"),
    (lambda: fnopt.nadam(b2=-0.5), "`nadam(b2=...)` must be in [0, 1)"),
    (lambda: fnopt.nadam(eps=-1.0), "`nadam(eps=...)` must be >= 0"),
    (lambda: fnopt.nadam(momentum_decay=-0.1), "`nadam(momentum_decay=...)` must be >= 0"),
    (lambda: fnopt.nadam(weight_decay=-0.1), "`nadam(weight_decay=...)` must be >= 0"),
    (lambda: fnopt.nadam(decoupled_weight_decay="yes"), "`nadam(decoupled_weight_decay=...)` must be True or False"),
    (lambda: fnopt.nadam(maximize=1), "`nadam(maximize=...)` must be True or False"),
    (lambda: fnopt.nadam(mu_dtype="foo"), "`nadam(mu_dtype=...)` must be None or a floating dtype"),
    (lambda: fnopt.nadam(nu_dtype=jnp.int32), "`nadam(nu_dtype=...)` must be None or a floating dtype"),
    (lambda: T.scale_by_nadam(momentum_decay=float("nan")), "`scale_by_nadam(momentum_decay=...)` must be finite"),
    (lambda: fnopt.adamax(b2=1.0), "`adamax(b2=...)` must be in [0, 1), got 1.0"),
    (lambda: fnopt.adamax(nu_dtype="foo"), "`adamax(nu_dtype=...)` must be None or a floating dtype"),
    (lambda: T.scale_by_adamax(eps=-1.0), "`scale_by_adamax(eps=...)` must be >= 0"),
    (lambda: fnopt.adadelta(rho=1.5), "`adadelta(rho=...)` must be in [0, 1], got 1.5"),
    (lambda: fnopt.adadelta(learning_rate=-1.0), "`adadelta(learning_rate=...)` must be >= 0"),
    (lambda: T.scale_by_adadelta(rho=-0.1), "`scale_by_adadelta(rho=...)` must be in [0, 1]"),
    (lambda: fnopt.rprop(eta_minus=1.0), "`rprop(eta_minus=...)` must be in (0, 1), got 1.0"),
    (lambda: fnopt.rprop(eta_minus=0.0), "`rprop(eta_minus=...)` must be in (0, 1), got 0.0"),
    (lambda: fnopt.rprop(eta_plus=1.0), "`rprop(eta_plus=...)` must be > 1, got 1.0"),
    (lambda: fnopt.rprop(min_step_size=-1.0), "`rprop(min_step_size=...)` must be >= 0"),
    (lambda: fnopt.rprop(min_step_size=1.0, max_step_size=0.5), "`rprop(max_step_size=...)` must be >= min_step_size"),
    (lambda: fnopt.rprop(learning_rate="0.1"), "`rprop(learning_rate=...)` must be a number"),
    (lambda: T.scale_by_rprop(eta_plus=0.5), "`scale_by_rprop(eta_plus=...)` must be > 1"),
]


@pytest.mark.parametrize("make, message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_hyperparameters_raise(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize("name", ALIASES)
def test_empty_and_none_params(name):
    opt = ALIASES[name]()
    for params in ({}, {"w": None, "b": jnp.ones(2, REAL)}):
        state = opt.init(params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = jax.jit(opt.update)(grads, state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize("name", ALIASES)
def test_checkpoint_round_trip_continues_bit_for_bit(name):
    opt = ALIASES[name]()
    params = _params(False)
    step = jax.jit(lambda p, s: opt.update(_grad_jax(p, 1.0), s, p))
    state = opt.init(params)
    for _ in range(5):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    leaves, treedef = jax.tree.flatten(state)
    restored = jax.tree.unflatten(treedef, [np.array(leaf) for leaf in leaves])  # host copies, as saved
    a, b = (params, state), (params, restored)
    for _ in range(5):
        (ua, sa), (ub, sb) = step(*a), step(*b)
        a, b = (optax.apply_updates(a[0], ua), sa), (optax.apply_updates(b[0], ub), sb)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ALIASES)
def test_state_can_be_donated(name):
    """No array appears twice in the state (XLA refuses to donate one buffer twice)."""
    opt = ALIASES[name]()
    params = _params(False)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p), donate_argnums=1)
    state = opt.init(params)
    for _ in range(2):
        _, state = step(_grad_jax(params, 1.0), state, params)


@pytest.mark.parametrize("make", [fnopt.nadam, fnopt.adamax])
def test_bf16_moments_halve_the_state(make):
    params = {"w": jnp.ones((4, 4), jnp.float32)}
    state = make(mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16).init(params)
    buffers = [leaf for leaf in jax.tree.leaves(state) if jnp.shape(leaf) == (4, 4)]
    assert len(buffers) == 2 and all(b.dtype == jnp.bfloat16 for b in buffers)
    updates, _ = make(mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16).update(params, state, params)
    assert updates["w"].dtype == jnp.float32
    np.testing.assert_allclose(updates["w"], make().update(params, make().init(params), params)[0]["w"], rtol=1e-2)


def test_adadelta_nu_dtype_and_rprop_sign_state():
    params = {"w": jnp.ones(3, jnp.float32)}
    state = fnopt.adadelta(nu_dtype=jnp.bfloat16).init(params)
    assert {leaf.dtype for leaf in jax.tree.leaves(state) if jnp.shape(leaf) == (3,)} == {jnp.dtype(jnp.bfloat16)}
    rprop_state = fnopt.rprop().init(params)[0]
    assert rprop_state.prev_sign["w"].dtype == jnp.int8  # a quarter of torch's `prev`


@pytest.mark.parametrize(
    "make",
    [
        lambda: fnopt.nadam(eps=0.0),
        lambda: fnopt.adamax(eps=0.0),
        lambda: fnopt.adadelta(eps=0.0),
    ],
    ids=["nadam", "adamax", "adadelta"],
)
def test_eps_zero_with_zero_gradient_gives_zero(make):
    opt = make()
    params = jnp.ones(2, REAL)
    updates, _ = opt.update(jnp.zeros(2, REAL), opt.init(params), params)
    assert np.all(np.asarray(updates) == 0)


def test_bf16_params_stay_bf16():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    for opt in (fnopt.nadam(), fnopt.adamax(), fnopt.adadelta(), fnopt.rprop()):
        updates, state = opt.update(params, opt.init(params), params)
        assert updates["w"].dtype == jnp.bfloat16
        assert np.all(np.isfinite(np.asarray(updates["w"], np.float32)))


with contextlib.suppress(ImportError):
    import chex

    @pytest.mark.parametrize("name", ALIASES)
    def test_compiles_once_across_traced_hyperparameters(name):
        key, first, second = SWEEP[name]
        params = _params(False)
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def step(value, p):
            opt = ALIASES[name](**{key: value})
            return opt.update(_grad_jax(p, 1.0), opt.init(p), p)[0]

        step(jnp.asarray(first, REAL), params)
        step(jnp.asarray(second, REAL), params)
