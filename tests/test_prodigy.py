"""Prodigy: step-for-step parity with ``optax.contrib.prodigy`` (installed),
group trees against the algorithm written out in float64 NumPy (the
reference implementation's shared ``d`` over param groups), ``d`` in
``fnopt.hyperparams`` and the effective learning rate, traced
hyperparameters, checkpoints and validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt

RNG = np.random.default_rng(1)
PARAMS = {"w": jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(RNG.normal(size=4), jnp.float32)}
CURV = {"w": jnp.asarray(RNG.uniform(0.5, 2.0, size=(3, 4)), jnp.float32), "b": jnp.asarray(RNG.uniform(0.5, 2.0, size=4), jnp.float32)}
NOISE = [jax.tree.map(lambda p: jnp.asarray(0.3 * RNG.normal(size=p.shape), jnp.float32), PARAMS) for _ in range(25)]
STEPS = 25


def grad(p, k):
    return jax.tree.map(lambda x, c, n: c * x + n, p, CURV, NOISE[k])


def trajectory(opt, d_of, steps=STEPS, dtype=jnp.float32):
    p = jax.tree.map(lambda x: x.astype(dtype), PARAMS)
    s, out = opt.init(p), []
    for k in range(steps):
        g = jax.tree.map(lambda x, c, n: c.astype(dtype) * x + n.astype(dtype), p, CURV, NOISE[k])
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        out.append((p, d_of(s)))
    return out, s


def fnopt_d(state):
    return fnopt.hyperparams(state)["d"]


def optax_trajectory(opt, steps=STEPS, dtype=jnp.float32):
    with jax.numpy_dtype_promotion("standard"):  # Optax mixes dtypes implicitly
        return trajectory(opt, lambda s: s.estim_lr, steps, dtype)


def assert_close(got, want, rtol=1e-4, atol=1e-5):
    for k, ((p, d), (q, e)) in enumerate(zip(got, want)):
        np.testing.assert_allclose(float(d), float(e), rtol=rtol, err_msg=f"d at step {k}")
        for u, v in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
            np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64), rtol=rtol, atol=atol, err_msg=f"step {k}")


CASES = [
    ({}, {}),
    ({"learning_rate": 0.5, "b1": 0.8, "b2": 0.99}, {"learning_rate": 0.5, "betas": (0.8, 0.99)}),
    ({"weight_decay": 0.1, "eps": 1e-6, "estim_lr0": 1e-4, "estim_lr_coef": 2.0}, {"weight_decay": 0.1, "eps": 1e-6, "estim_lr0": 1e-4, "estim_lr_coef": 2.0}),
    ({"beta3": 0.9, "safeguard_warmup": True}, {"beta3": 0.9, "safeguard_warmup": True}),
]


@pytest.mark.parametrize("ours,theirs", CASES, ids=str)
def test_equals_optax_step_for_step_in_float64(ours, theirs):
    # The same algorithm: in float64 the two agree to rounding.
    with jax.enable_x64(True):
        want, _ = optax_trajectory(optax.contrib.prodigy(**theirs), dtype=jnp.float64)
        got, _ = trajectory(fnopt.prodigy(**ours), fnopt_d, dtype=jnp.float64)
        assert got[-1][0]["w"].dtype == jnp.float64
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert float(want[-1][1]) > 4 * float(want[0][1])  # the estimate did grow


@pytest.mark.parametrize("ours,theirs", CASES, ids=str)
def test_equals_optax_step_for_step_in_float32(ours, theirs):
    # While d is tiny, x_0 - x_t cancels to a few significant float32 digits,
    # so an ulp of difference in x_t (1 - b1 rounded in float32 here, in
    # float64 by Optax) moves the early estimate visibly; the tolerances say
    # that, no more.
    want, _ = optax_trajectory(optax.contrib.prodigy(**theirs))
    got, _ = trajectory(fnopt.prodigy(**ours), fnopt_d)
    assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_scheduled_learning_rate_equals_optax():
    sched = optax.linear_schedule(1.0, 0.1, STEPS)
    with jax.numpy_dtype_promotion("standard"):
        want, _ = optax_trajectory(optax.contrib.prodigy(sched))
        got, _ = trajectory(fnopt.prodigy(sched), fnopt_d)
    assert_close(got, want)


def numpy_prodigy(params, grads_fn, steps, lr, eps, wd, b1=0.9, b2=0.999, d0=1e-6):
    """The algorithm of fnopt.prodigy's docstring (Optax's / the reference's,
    with the reference's param groups: one ``d``, per-group ``lr``, ``eps``,
    ``weight_decay``) in float64 NumPy; ``lr``, ``eps``, ``wd`` are dicts per leaf."""
    x = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x0 = {k: v.copy() for k, v in x.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v2 = {k: np.zeros_like(v) for k, v in x.items()}
    s = {k: np.zeros_like(v) for k, v in x.items()}
    d, r, b3, out = d0, 0.0, np.sqrt(b2), []
    for t in range(1, steps + 1):
        g = grads_fn(x, t - 1)
        bc = np.sqrt(1 - b2**t) / (1 - b1**t)
        dlr = {k: d * lr[k] * bc for k in x}
        r = b3 * r + sum((d / d0) * dlr[k] * np.sum(g[k] * (x0[k] - x[k])) for k in x)
        for k in x:
            m[k] = b1 * m[k] + (1 - b1) * d * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * (d * g[k]) ** 2
            s[k] = b3 * s[k] + dlr[k] / d0 * d * g[k]
        d_new = max(d, r / sum(np.sum(np.abs(s[k])) for k in x))
        x = {k: x[k] - dlr[k] * (m[k] / (np.sqrt(v2[k]) + d_new * eps[k]) + wd[k] * x[k]) for k in x}
        d = d_new
        out.append((x, d))
    return out


def test_group_trees_share_d_and_step_with_their_own_lr():
    lr, eps, wd = {"w": 1.0, "b": 0.3}, {"w": 1e-8, "b": 1e-3}, {"w": 0.0, "b": 0.2}
    np_grads = lambda x, k: {n: np.asarray(CURV[n], np.float64) * x[n] + np.asarray(NOISE[k][n], np.float64) for n in x}  # noqa: E731
    want = numpy_prodigy(PARAMS, np_grads, STEPS, lr, eps, wd)
    with jax.enable_x64(True):  # float64 on both sides (see the float32 parity test for why)
        got, _ = trajectory(fnopt.prodigy(lr, eps=eps, weight_decay=wd), fnopt_d, dtype=jnp.float64)
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    got32, state = trajectory(fnopt.prodigy(lr, eps=eps, weight_decay=wd), fnopt_d)
    assert_close(got32, want, rtol=1e-2, atol=1e-4)
    hp = fnopt.hyperparams(state)
    d = float(hp["d"])
    np.testing.assert_allclose(float(hp["b/effective_learning_rate"]), 0.3 * d, rtol=1e-6)
    np.testing.assert_allclose(float(hp["w/effective_learning_rate"]), 1.0 * d, rtol=1e-6)
    assert float(hp["b/weight_decay"]) == pytest.approx(0.2)


def test_equal_groups_equal_no_groups_and_mask():
    tree, _ = trajectory(fnopt.prodigy({"w": 0.7, "b": 0.7}, weight_decay=0.1, mask={"w": True, "b": False}), fnopt_d, steps=8)
    masked, _ = trajectory(fnopt.prodigy(0.7, weight_decay={"w": 0.1, "b": 0.0}), fnopt_d, steps=8)
    assert_close(tree, masked, rtol=1e-6, atol=1e-7)


def test_vmap_over_learning_rate_and_d0():
    def run(lr, d0):
        opt = fnopt.prodigy(lr, estim_lr0=d0)

        def step(carry, k):
            p, s = carry
            u, s = opt.update(jax.tree.map(lambda x, c: c * x, p, CURV), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (PARAMS, opt.init(PARAMS)), jnp.arange(10))
        return p, fnopt.hyperparams(s)["effective_learning_rate"]

    lrs, d0s = jnp.asarray([1.0, 0.5]), jnp.asarray([1e-6, 1e-3])
    batched = jax.jit(jax.vmap(run))(lrs, d0s)
    for i in range(2):
        one = run(float(lrs[i]), float(d0s[i]))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-7), batched, one)


def test_zero_gradients_keep_d_and_empty_params_work():
    opt = fnopt.prodigy()
    state = opt.init(PARAMS)
    u, state = opt.update(jax.tree.map(jnp.zeros_like, PARAMS), state, PARAMS)
    assert float(fnopt.hyperparams(state)["d"]) == pytest.approx(1e-6)
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
    u, state = opt.update({}, opt.init({}), {})
    assert u == {} and float(state[0].d) == pytest.approx(1e-6)


def test_complex_params_raise():
    with pytest.raises(ValueError, match=r"^`prodigy`: complex params are not supported"):
        fnopt.prodigy().init(jnp.ones(2, jnp.complex64))


def test_checkpoint_round_trip_continues_bit_for_bit():
    opt = fnopt.prodigy(weight_decay=0.01)
    _, state = trajectory(opt, fnopt_d, steps=4)
    leaves, treedef = jax.tree.flatten(state)
    restored = jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
    runs = []
    for s in (state, restored):
        p = PARAMS
        for k in range(4, 9):
            u, s = opt.update(grad(p, k), s, p)
            p = optax.apply_updates(p, u)
        runs.append((p, s))
    for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_effective_learning_rate_with_a_cooldown():
    tx = fnopt.chain(fnopt.prodigy(0.5), fnopt.transforms.cooldown(2, shape="linear"))
    state = fnopt.start_cooldown(tx.init(PARAMS))
    for k in range(2):
        _, state = tx.update(grad(PARAMS, k), state, PARAMS)
    hp = fnopt.hyperparams(state)
    np.testing.assert_allclose(float(hp["effective_learning_rate"]), 0.5 * float(hp["d"]) * 0.5, rtol=1e-6)


INVALID = [
    (lambda: fnopt.prodigy(-1.0), "`prodigy(learning_rate=...)` must be >= 0"),
    (lambda: fnopt.prodigy(b1=1.0), "`prodigy(b1=...)` must be in [0, 1)"),
    (lambda: fnopt.prodigy(b2=-0.1), "`prodigy(b2=...)` must be in [0, 1)"),
    (lambda: fnopt.prodigy(beta3=1.5), "`prodigy(beta3=...)` must be in [0, 1)"),
    (lambda: fnopt.prodigy(eps=-1.0), "`prodigy(eps=...)` must be >= 0"),
    (lambda: fnopt.prodigy(estim_lr0=0.0), "`prodigy(estim_lr0=...)` must be > 0"),
    (lambda: fnopt.prodigy(estim_lr_coef=0.0), "`prodigy(estim_lr_coef=...)` must be > 0"),
    (lambda: fnopt.prodigy(weight_decay=-0.1), "`prodigy(weight_decay=...)` must be >= 0"),
    (lambda: fnopt.prodigy(b1={"w": 0.9, "b": 0.8}), "`prodigy(b1=...)` must be a number"),
    (lambda: fnopt.prodigy(safeguard_warmup="yes"), "`prodigy(safeguard_warmup=...)` must be True or False"),
    (lambda: fnopt.prodigy(mu_dtype="foo"), "`prodigy(mu_dtype=...)`"),
    (lambda: fnopt.transforms.scale_by_prodigy(b2=1.0), "`scale_by_prodigy(b2=...)` must be in [0, 1)"),
]


@pytest.mark.parametrize("make,message", INVALID)
def test_invalid_values_raise_naming_the_call_and_argument(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value).startswith(message), str(info.value)
