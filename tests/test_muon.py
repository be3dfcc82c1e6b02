"""Muon (torch ``Muon`` 2.13): step-for-step parity with ``torch.optim.Muon``
on a tall, a wide and a square matrix; the non-matrix recipe
(``muon_labels`` + ``optax.partition``); ``optax.contrib.muon`` for
information; group trees, schedules, records, ``vmap``, validation, empty
params, ``mu_dtype`` and checkpoints; convergence on a matrix problem.

Tolerances. torch runs Newton-Schulz in bfloat16, fnopt in float32:

* against torch with its iteration switched to float32 (the same function
  with ``.float()`` for ``.bfloat16()``, patched into ``torch.optim._muon``):
  ``rtol=1e-5, atol=1e-6`` on the params after 25 steps;
* against stock torch (bf16): the first update agrees to ``0.1`` of its
  largest element (measured: 0.6%, 6% and 3% on the tall, wide and square
  matrix; bf16 keeps 8 bits through five quintic iterations), the params
  after 25 steps at ``lr=0.02`` to ``atol=1e-2`` (measured: 5e-3).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt import schedules
from fnopt._muon import NS_COEFFICIENTS, orthogonalize

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
STEPS = 25

RNG = np.random.default_rng(1)
SHAPES = {"tall": (6, 3), "wide": (3, 5), "square": (4, 4)}
P0 = {k: RNG.normal(size=s).astype(DTYPE) for k, s in SHAPES.items()}
X = RNG.normal(size=(8, 6)).astype(DTYPE)
TARGET = {k: RNG.normal(size=s).astype(DTYPE) for k, s in SHAPES.items()}


def loss_terms(w, y, xp):
    """A coupled matrix problem: ||W - Y||^2 plus a quartic, so the
    gradients depend on the params."""
    return xp.sum((w - y) ** 2) / 2 + 0.05 * xp.sum(w**4)


def jax_loss(params):
    return sum(loss_terms(params[k], TARGET[k], jnp) for k in params)


def run_fnopt(opt, steps=STEPS, params=None, loss=jax_loss):
    """The params after each step, the updates, and the final state."""
    params = jax.tree.map(jnp.asarray, P0 if params is None else params)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (p, u)

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)

    (_, state), (trajectory, updates) = run(params)
    return jax.tree.map(np.asarray, trajectory), jax.tree.map(np.asarray, updates), state


def _ns_float32(grad, ns_coefficients, ns_steps, eps):
    """torch's ``_zeropower_via_newtonschulz`` with ``.float()`` (or
    ``.double()`` under x64) in place of ``.bfloat16()``, line for line."""
    import torch

    a, b, c = ns_coefficients
    ortho_grad = grad.to(torch.float64 if X64 else torch.float32, copy=True)  # .bfloat16() copies too
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram_matrix = ortho_grad @ ortho_grad.T
        gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
        ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


def run_torch(kwargs, steps=STEPS, lr_at=None, maximize=False, full_precision=True, monkeypatch=None):
    torch = pytest.importorskip("torch")
    if full_precision:
        monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _ns_float32)
    tdtype = torch.float64 if X64 else torch.float32
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in P0.items()}
    opt = torch.optim.Muon([params[k] for k in SHAPES], **kwargs)
    out = {k: [] for k in SHAPES}
    for t in range(steps):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        opt.zero_grad()
        loss = sum(loss_terms(params[k], torch.tensor(TARGET[k], dtype=tdtype), torch) for k in SHAPES)
        (-loss if maximize else loss).backward()
        if maximize:  # torch's Muon has no `maximize`: ascend -loss by hand
            for p in params.values():
                p.grad.neg_()
        opt.step()
        for k in SHAPES:
            out[k].append(params[k].detach().numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def assert_close(ours, theirs, rtol=1e-5, atol=1e-6):
    if X64:
        rtol, atol = 1e-10, 1e-12
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=rtol, atol=atol, err_msg=k)


CASES = {
    "defaults": (dict(), dict()),
    "lr-no-nesterov": (dict(learning_rate=0.02, nesterov=False), dict(lr=0.02, nesterov=False)),
    "match-rms-adamw": (
        dict(learning_rate=0.01, adjust_lr_fn="match_rms_adamw", weight_decay=0.2),
        dict(lr=0.01, adjust_lr_fn="match_rms_adamw", weight_decay=0.2),
    ),
    "original-coefficients-steps-eps": (
        dict(learning_rate=0.02, adjust_lr_fn="original", momentum=0.8, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=3, eps=0.1),
        dict(lr=0.02, adjust_lr_fn="original", momentum=0.8, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=3, eps=0.1),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_muon_with_float32_newton_schulz(case, monkeypatch):
    ours_kwargs, torch_kwargs = CASES[case]
    theirs = run_torch(torch_kwargs, monkeypatch=monkeypatch)
    ours, _, _ = run_fnopt(fnopt.muon(**ours_kwargs))
    assert_close(ours, theirs)


def test_maximize_matches_torch_ascending_by_hand(monkeypatch):
    """torch's Muon has no ``maximize``: torch is given the negated gradient
    of the negated loss; fnopt ascends the negated loss with ``maximize``."""
    theirs = run_torch(dict(lr=0.02), maximize=True, monkeypatch=monkeypatch)
    ours, _, _ = run_fnopt(fnopt.muon(0.02, maximize=True), loss=lambda p: -jax_loss(p))
    assert_close(ours, theirs)


def test_scheduled_learning_rate_matches_torch(monkeypatch):
    sched = schedules.cosine_decay(0.05, STEPS)
    theirs = run_torch(dict(lr=0.05, weight_decay=0.1), lr_at=lambda t: float(sched(t)), monkeypatch=monkeypatch)
    ours, _, _ = run_fnopt(fnopt.muon(sched, weight_decay=0.1))
    assert_close(ours, theirs)


def test_matches_stock_torch_bf16_within_bf16_rounding():
    pytest.importorskip("torch")
    theirs = run_torch(dict(lr=0.02), full_precision=False)
    ours, updates, _ = run_fnopt(fnopt.muon(0.02))
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], atol=1e-2, err_msg=k)
        # The first update (same params on both sides): within bf16 rounding.
        first_theirs = theirs[k][0] - P0[k]
        scale = np.max(np.abs(first_theirs))
        np.testing.assert_allclose(updates[k][0], first_theirs, atol=0.1 * scale, err_msg=k)


def test_defaults_are_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    theirs = inspect.signature(torch.optim.Muon).parameters
    ours = inspect.signature(fnopt.muon).parameters
    pairs = {"learning_rate": "lr", "weight_decay": "weight_decay", "momentum": "momentum", "nesterov": "nesterov",
             "ns_coefficients": "ns_coefficients", "eps": "eps", "ns_steps": "ns_steps", "adjust_lr_fn": "adjust_lr_fn"}
    for mine, torch_name in pairs.items():
        assert ours[mine].default == theirs[torch_name].default, mine


def test_orthogonalize_by_hand():
    """Independent oracle: the quintic applied to the singular values. For
    ``G = U diag(s) V^T`` every iteration maps each normalized singular value
    ``x`` to ``a x + b x^3 + c x^5`` and keeps the singular vectors."""
    u, _ = np.linalg.qr(RNG.normal(size=(5, 3)))
    v, _ = np.linalg.qr(RNG.normal(size=(3, 3)))
    s = np.asarray([3.0, 1.0, 0.2])
    g = (u * s) @ v.T
    x = s / np.linalg.norm(s)
    a, b, c = NS_COEFFICIENTS
    for _ in range(5):
        x = a * x + b * x**3 + c * x**5
    expected = (u * x) @ v.T
    out = orthogonalize(jnp.asarray(g, DTYPE), a, b, c, 5, 1e-7)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_non_matrix_params_raise_with_the_recipe():
    with pytest.raises(ValueError, match=r"^`muon`: Muon only supports 2-D parameters.*\['b'\].*muon_labels"):
        fnopt.muon().init({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"^`scale_by_muon`: Muon only supports 2-D"):
        fnopt.transforms.scale_by_muon().init(jnp.ones((2, 3, 4)))


def test_complex_params_raise():
    with pytest.raises(ValueError, match=r"^`muon`: complex parameters are not supported"):
        fnopt.muon().init({"z": jnp.ones((2, 2), jnp.complex64)})


def test_partition_recipe_equals_separate_optimizers():
    """The documented one-liner: matrices to Muon, the rest to AdamW."""
    params = {"w": jnp.asarray(P0["tall"]), "b": jnp.asarray(TARGET["wide"][0]), "scale": jnp.asarray(1.5, DTYPE)}
    opt = optax.partition({"muon": fnopt.muon(0.02), "adamw": fnopt.adamw(3e-3)}, fnopt.muon_labels)
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 1) ** 2) * p["scale"] ** 2
    state = opt.init(params)
    muon, adamw = fnopt.muon(0.02), fnopt.adamw(3e-3)
    mp, ap = {"w": params["w"]}, {"b": params["b"], "scale": params["scale"]}
    ms, as_ = muon.init(mp), adamw.init(ap)
    p = params
    for _ in range(5):
        g = jax.grad(loss)(p)
        u, state = opt.update(g, state, p)
        p = optax.apply_updates(p, u)
        mu, ms = muon.update({"w": g["w"]}, ms, mp)
        au, as_ = adamw.update({"b": g["b"], "scale": g["scale"]}, as_, ap)
        mp, ap = optax.apply_updates(mp, mu), optax.apply_updates(ap, au)
    np.testing.assert_array_equal(p["w"], mp["w"])
    np.testing.assert_array_equal(p["b"], ap["b"])
    hp = fnopt.hyperparams(state)
    assert float(hp["muon/learning_rate"]) == pytest.approx(0.02) and float(hp["adamw/learning_rate"]) == pytest.approx(3e-3)
    assert fnopt.muon_labels(params, other="adam") == {"w": "muon", "b": "adam", "scale": "adam"}


def test_optax_contrib_muon_for_information():
    """Optax bias-corrects the momentum and reads shapes as (in, out); with
    no momentum, no Nesterov and a square matrix the updates coincide (up to
    eps placement: ||M|| + 1e-8 vs max(||M||, 1e-7))."""
    contrib = pytest.importorskip("optax.contrib")
    standard = jax.numpy_dtype_promotion("standard")  # optax.contrib.muon mixes int and float
    params = {"square": jnp.asarray(P0["square"])}
    grads = {"square": jnp.asarray(TARGET["square"])}
    theirs = contrib.muon(0.02, beta=0.0, nesterov=False)
    ours = fnopt.muon(0.02, momentum=0.0, nesterov=False, weight_decay=0.0)
    with standard:
        u_theirs, _ = theirs.update(grads, theirs.init(params), params)
    u_ours, _ = ours.update(grads, ours.init(params), params)
    np.testing.assert_allclose(u_ours["square"], u_theirs["square"], rtol=1e-4, atol=1e-6)
    # With the defaults they differ: torch's momentum is not bias-corrected.
    theirs, ours = contrib.muon(0.02), fnopt.muon(0.02, weight_decay=0.0)
    s_t, s_o = theirs.init(params), ours.init(params)
    for g in (grads, params):  # two different gradients (proportional ones give the same direction)
        with jax.numpy_dtype_promotion("standard"):
            u_theirs, s_t = theirs.update(g, s_t, params)
        u_ours, s_o = ours.update(g, s_o, params)
    assert not np.allclose(u_ours["square"], u_theirs["square"], rtol=1e-3)


def test_group_tree_equals_separate_runs():
    lr = {"tall": 0.02, "wide": schedules.exponential_decay(0.05, 0.9), "square": 0.01}
    momentum = {"tall": 0.9, "wide": 0.95, "square": 0.5}
    final, _, state = run_fnopt(fnopt.muon(lr, momentum=momentum))
    for k in SHAPES:
        single, _, _ = run_fnopt(fnopt.muon(lr[k], momentum=momentum[k]), params={k: P0[k]})
        np.testing.assert_allclose(final[k], single[k], rtol=1e-6, atol=1e-7, err_msg=k)
    hp = fnopt.hyperparams(state)
    assert float(hp["square/momentum"]) == pytest.approx(0.5)
    assert float(hp["wide/learning_rate"]) == pytest.approx(0.05 * 0.9 ** (STEPS - 1), rel=1e-5)


def test_records_every_hyperparameter():
    opt = fnopt.muon(0.02, ns_steps=schedules.step_decay(6, 2, 0.5), ns_coefficients=(3.0, -3.0, 1.0))
    _, _, state = run_fnopt(opt, steps=3)
    hp = fnopt.hyperparams(state)
    assert set(hp) == {"momentum", "eps", "ns_a", "ns_b", "ns_c", "ns_steps", "weight_decay", "learning_rate",
                       "effective_learning_rate"}
    assert float(hp["ns_steps"]) == 3.0 and float(hp["ns_a"]) == 3.0


def test_traced_ns_steps_equals_static():
    g = jnp.asarray(P0["tall"])
    a, b, c = (3.4445, -4.7750, 2.0315)
    static = orthogonalize(g, a, b, c, 4, 1e-7)
    traced = jax.jit(lambda n: orthogonalize(g, a, b, c, n, 1e-7))(jnp.asarray(4))
    np.testing.assert_allclose(traced, static, rtol=1e-6, atol=1e-7)


def test_vmap_over_learning_rate_and_momentum():
    lrs = jnp.asarray([0.01, 0.05], DTYPE)
    ms = jnp.asarray([0.9, 0.5], DTYPE)

    def final(lr, m):
        opt = fnopt.muon(lr, momentum=m)
        params = jax.tree.map(jnp.asarray, P0)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(jax_loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=5)[0][0]

    batched = jax.jit(jax.vmap(final))(lrs, ms)
    for i in range(2):
        single, _, _ = run_fnopt(fnopt.muon(float(lrs[i]), momentum=float(ms[i])), steps=5)
        for k in SHAPES:
            np.testing.assert_allclose(batched[k][i], single[k][-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(momentum=1.5), "momentum"),
        (dict(eps=-1.0), "eps"),
        (dict(ns_steps=100), "ns_steps"),
        (dict(ns_steps=2.5), "ns_steps"),
        (dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"),
        (dict(ns_coefficients=(1.0, float("nan"), 2.0)), "ns_b"),
        (dict(adjust_lr_fn="rms"), "adjust_lr_fn"),
        (dict(nesterov="yes"), "nesterov"),
        (dict(maximize=1), "maximize"),
        (dict(mu_dtype="foo"), "mu_dtype"),
        (dict(mask=[1.0]), "mask"),
    ],
)
def test_invalid_values_raise_naming_muon_and_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^`muon\({argument}"):
        fnopt.muon(**kwargs)


def test_empty_params_mu_dtype_and_bf16():
    opt = fnopt.muon()
    u, _ = opt.update({}, opt.init({}), {})
    assert u == {}
    params = {"w": jnp.ones((3, 2), jnp.bfloat16)}
    opt = fnopt.muon(mu_dtype=jnp.float32)
    state = opt.init(params)
    u, state = opt.update({"w": jnp.ones((3, 2), jnp.bfloat16)}, state, params)
    assert u["w"].dtype == jnp.bfloat16 and state[0].mu["w"].dtype == jnp.float32


def test_checkpoint_round_trip_is_bit_identical():
    opt = fnopt.muon(0.02)
    params = jax.tree.map(jnp.asarray, P0)
    state = opt.init(params)
    step = jax.jit(lambda p, s: opt.update(jax.grad(jax_loss)(p), s, p))
    for _ in range(3):
        u, state = step(params, state)
        params = optax.apply_updates(params, u)
    leaves, treedef = jax.tree.flatten(state)
    restored = jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
    a, _ = step(params, state)
    b, _ = step(params, restored)
    for k in SHAPES:
        np.testing.assert_array_equal(a[k], b[k])


def test_converges_on_a_matrix_problem():
    """Rosenbrock has no matrix, so Muon's convergence check is a matrix
    least-squares problem ``||X W - Y||^2 / 2`` (a (6, 3) weight, full-rank
    X): Muon's step has a fixed spectral size, so a decaying LR (cosine, as
    in practice) takes it to the solution."""
    w_star = RNG.normal(size=(6, 3)).astype(DTYPE)
    y = X @ w_star
    loss = lambda p: jnp.sum((jnp.asarray(X) @ p["w"] - y) ** 2) / 2
    opt = fnopt.muon(schedules.cosine_decay(0.1, 2000), weight_decay=0.0)
    params = {"w": jnp.zeros((6, 3), DTYPE)}

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=2000)[0][0]

    w = run(params)["w"]
    assert float(loss({"w": w})) < 1e-4
    np.testing.assert_allclose(w, w_star, atol=1e-2)
    assert math.isfinite(float(loss({"w": w})))
