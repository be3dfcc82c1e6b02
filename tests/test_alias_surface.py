"""The existing aliases' torch / Optax surface (issue 13, item 3): ``maximize``,
``mu_dtype`` / ``nu_dtype``, and complex parameters.

Oracles: ``torch.optim`` (optional) for ``maximize``; Optax's own optimizers
on complex problems (Optax's convention: second moments of ``|g|^2``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sweeps

import fnopt

# alias -> (fnopt kwargs, torch class, torch kwargs)
TORCH = {
    "sgd": ({"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.01}, "SGD",
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    "adam": ({"learning_rate": 0.01, "weight_decay": 0.01}, "Adam", {"lr": 0.01, "weight_decay": 0.01}),
    "adamw": ({"learning_rate": 0.01, "weight_decay": 0.1}, "AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    "radam": ({"learning_rate": 0.01, "weight_decay": 0.01}, "RAdam", {"lr": 0.01, "weight_decay": 0.01}),
    "adagrad": ({"learning_rate": 0.1, "weight_decay": 0.01}, "Adagrad", {"lr": 0.1, "weight_decay": 0.01}),
    "rmsprop": ({"learning_rate": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.01}, "RMSprop",
                {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.01}),
}


def objective(p):
    """To be maximized: a concave bowl plus a ripple."""
    return -jnp.sum((p - 0.5) ** 2) + 0.1 * jnp.sum(jnp.sin(3 * p))


@pytest.mark.parametrize("alias", TORCH)
def test_maximize_equals_torch(alias):
    torch = pytest.importorskip("torch")
    kwargs, cls, torch_kwargs = TORCH[alias]
    x0 = np.linspace(-1.0, 1.0, 5).astype(np.float32)
    opt = getattr(fnopt, alias)(**kwargs, maximize=True)
    p = jnp.asarray(x0)
    state = opt.init(p)
    tp = torch.tensor(x0, requires_grad=True)
    topt = getattr(torch.optim, cls)([tp], **torch_kwargs, maximize=True)
    for _ in range(20):
        u, state = opt.update(jax.grad(objective)(p), state, p)
        p = optax.apply_updates(p, u)
        topt.zero_grad()
        value = -torch.sum((tp - 0.5) ** 2) + 0.1 * torch.sum(torch.sin(3 * tp))
        value.backward()
        topt.step()
    np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=2e-5, atol=2e-6)
    assert float(objective(p)) > float(objective(jnp.asarray(x0)))  # it climbed


@pytest.mark.parametrize("alias, names", [
    ("sgd", {"mu_dtype"}),
    ("adam", {"mu_dtype", "nu_dtype"}),
    ("adamw", {"mu_dtype", "nu_dtype"}),
    ("radam", {"mu_dtype", "nu_dtype"}),
    ("ranger", {"mu_dtype", "nu_dtype"}),
    ("adagrad", {"nu_dtype"}),
    ("rmsprop", {"mu_dtype", "nu_dtype"}),
])
def test_moment_dtypes_set_the_state_dtypes_and_keep_the_updates_close(alias, names):
    make = getattr(fnopt, alias)
    extra = {"momentum": 0.9} if alias in ("sgd", "rmsprop") else {}
    if alias == "rmsprop":
        extra["centered"] = True
    params = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)}
    low = make(1e-2, **extra, **{n: jnp.bfloat16 for n in names})
    full = make(1e-2, **extra)
    state_low, state_full = low.init(params), full.init(params)
    buffers = [x for x in jax.tree.leaves(state_low) if jnp.shape(x) == (3, 4)]
    assert buffers and any(x.dtype == jnp.bfloat16 for x in buffers)
    for t in range(5):
        g = jax.tree.map(lambda x: jnp.cos(x * (t + 1)), params)
        u_low, state_low = low.update(g, state_low, params)
        u_full, state_full = full.update(g, state_full, params)
        assert u_low["w"].dtype == jnp.float32  # the updates stay in the params' dtype
        np.testing.assert_allclose(u_low["w"], u_full["w"], rtol=0.05, atol=1e-4)
    with pytest.raises(ValueError, match=rf"`{alias}\({sorted(names)[0]}=...\)` must be None or a floating dtype"):
        make(1e-2, **{sorted(names)[0]: jnp.int32})


# fnopt alias -> equivalent Optax optimizer (complex support, |g|^2 moments)
COMPLEX = {
    "sgd": (lambda: fnopt.sgd(0.01, momentum=0.5), lambda: optax.sgd(0.01, momentum=0.5)),
    "sgd-nesterov": (lambda: fnopt.sgd(0.01, momentum=0.5, nesterov=True),
                     lambda: optax.sgd(0.01, momentum=0.5, nesterov=True)),
    "adam": (lambda: fnopt.adam(0.05), lambda: optax.adam(0.05)),
    "adamw": (lambda: fnopt.adamw(0.05, weight_decay=0.1), lambda: optax.adamw(0.05, weight_decay=0.1)),
    "radam": (lambda: fnopt.radam(0.05, eps=0.0), lambda: optax.radam(0.05, eps=0.0)),
    "adagrad": (lambda: fnopt.adagrad(0.1, initial_accumulator_value=0.1, eps=0.0),
                lambda: optax.adagrad(0.1, initial_accumulator_value=0.1, eps=0.0)),
    "rmsprop": (lambda: fnopt.rmsprop(0.01, alpha=0.9), lambda: optax.rmsprop(0.01, decay=0.9, eps_in_sqrt=False)),
    "rmsprop-centered": (lambda: fnopt.rmsprop(0.01, alpha=0.9, centered=True),
                         lambda: optax.rmsprop(0.01, decay=0.9, eps_in_sqrt=False, centered=True)),
}

TARGET = jnp.asarray([1.0 + 2.0j, -0.5 + 0.25j, 3.0 - 1.0j], jnp.complex64)


def complex_loss(p):
    """A real loss of complex parameters."""
    return jnp.sum(jnp.abs(p - TARGET) ** 2) + 0.1 * jnp.sum(jnp.abs(p) ** 4)


@pytest.mark.parametrize("name", sweeps.sweep(list(COMPLEX), ["sgd", "adam", "rmsprop-centered"]))
def test_complex_params_equal_optax(name):
    if jax.config.jax_enable_x64:
        pytest.skip("Optax's complex paths are checked in float32")
    ours, theirs = (make() for make in COMPLEX[name])
    p = q = jnp.zeros(3, jnp.complex64) + 0.1j
    s, t = ours.init(p), theirs.init(q)
    for _ in range(25):
        # JAX's grad of a real function of complex inputs is the conjugate of
        # the steepest-ascent direction: descend along its conjugate.
        u, s = ours.update(jnp.conj(jax.grad(complex_loss)(p)), s, p)
        with jax.numpy_dtype_promotion("standard"):  # Optax 0.2.8 mixes dtypes implicitly
            v, t = theirs.update(jnp.conj(jax.grad(complex_loss)(q)), t, q)
        assert u.dtype == jnp.complex64
        p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
    # RAdam's switch to the rectified step (rho_t > 5 at t = 6) is computed
    # from float32 rounded rho on both sides, which shifts the path by ~4e-4
    # (equal to 1e-13 with x64).
    tol = 1e-3 if name == "radam" else 2e-5
    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=tol, atol=tol / 10)
    assert float(complex_loss(p)) < float(complex_loss(jnp.zeros(3, jnp.complex64) + 0.1j))
    # The second moments are real.
    for leaf in jax.tree.leaves(s):
        if jnp.shape(leaf) == (3,) and jnp.isrealobj(leaf) and "sgd" not in name:
            assert leaf.dtype == jnp.float32


def test_complex_global_norm_clipping_uses_the_modulus():
    g = jnp.asarray([3.0 + 4.0j, 0.0j], jnp.complex64)  # norm 5
    tx = fnopt.transforms.clip_by_global_norm(1.0)
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(np.asarray(out), [0.6 + 0.8j, 0.0], rtol=1e-6)
