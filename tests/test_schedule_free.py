"""Schedule-Free SGD / AdamW: step-for-step parity with Optax's
``contrib.schedule_free_*`` (installed), the averaging weights with ``r``
against the paper's recursion in float64 NumPy, group trees, traced
hyperparameters, eval params, dtypes, checkpoints and validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt

RNG = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(RNG.normal(size=4), jnp.float32)}
CURV = {"w": jnp.asarray(RNG.uniform(0.5, 2.0, size=(3, 4)), jnp.float32), "b": jnp.asarray(RNG.uniform(0.5, 2.0, size=4), jnp.float32)}
NOISE = [jax.tree.map(lambda p: jnp.asarray(0.1 * RNG.normal(size=p.shape), jnp.float32), PARAMS) for _ in range(30)]


def grad(p, k):
    """A noisy quadratic's gradient: well conditioned, so rounding is not amplified."""
    return jax.tree.map(lambda x, c, n: c.astype(x.dtype) * x + n.astype(x.dtype), p, CURV, NOISE[k])


def trajectory(opt, eval_params, params=PARAMS, steps=30):
    params = jax.tree.map(lambda x: x.astype(jnp.result_type(float)), params)  # float64 under x64
    p, s, out = params, opt.init(params), []
    for k in range(steps):
        u, s = opt.update(grad(p, k), s, p)
        p = optax.apply_updates(p, u)
        out.append((p, eval_params(s, p)))
    return out, s


def optax_trajectory(opt, **kw):
    with jax.numpy_dtype_promotion("standard"):  # Optax mixes dtypes implicitly
        return trajectory(opt, optax.contrib.schedule_free_eval_params, **kw)


def assert_trajectories_close(a, b, rtol=2e-5, atol=2e-6):
    for k, (x, y) in enumerate(zip(a, b)):
        for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
            np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64), rtol=rtol, atol=atol, err_msg=f"step {k}")


SGD_CASES = [
    {},
    {"learning_rate": 0.3, "warmup_steps": 5},
    {"learning_rate": 0.2, "weight_decay": 0.05, "b1": 0.7, "weight_lr_power": 1.0},
    {"learning_rate": 0.4, "warmup_steps": 3, "b1": 0.95, "weight_lr_power": 0.0},
]
ADAMW_CASES = [
    {},
    {"learning_rate": 0.05, "warmup_steps": 5},
    {"learning_rate": 0.02, "weight_decay": 0.1, "b1": 0.95, "b2": 0.99, "eps": 1e-6, "weight_lr_power": 0.5},
    {"learning_rate": 0.01, "warmup_steps": 2, "b1": 0.5, "b2": 0.9, "eps": 0.0},
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
def test_sgd_equals_optax_step_for_step(kw):
    # float32 rounding: optax forms 1 - b1 in float64 before the cast; fnopt in float32.
    want, _ = optax_trajectory(optax.contrib.schedule_free_sgd(**kw))
    got, _ = trajectory(fnopt.schedule_free_sgd(**kw), fnopt.schedule_free_eval_params)
    assert_trajectories_close(got, want)


@pytest.mark.parametrize("kw", ADAMW_CASES, ids=str)
def test_adamw_equals_optax_step_for_step(kw):
    want, _ = optax_trajectory(optax.contrib.schedule_free_adamw(**kw))
    got, _ = trajectory(fnopt.schedule_free_adamw(**kw), fnopt.schedule_free_eval_params)
    assert_trajectories_close(got, want)


@pytest.mark.parametrize(
    "ours,theirs",
    [(fnopt.schedule_free_sgd, optax.contrib.schedule_free_sgd), (fnopt.schedule_free_adamw, optax.contrib.schedule_free_adamw)],
    ids=["sgd", "adamw"],
)
def test_equal_to_optax_to_float64_rounding(ours, theirs):
    # (no warmup_steps: Optax's warmup schedule returns float32 even under x64)
    kw = {"learning_rate": 0.05, "weight_decay": 0.01, "b1": 0.8, "weight_lr_power": 1.5}
    with jax.enable_x64(True):
        want, _ = optax_trajectory(theirs(**kw))
        got, _ = trajectory(ours(**kw), fnopt.schedule_free_eval_params)
        assert got[-1][0]["w"].dtype == jnp.float64
        assert_trajectories_close(got, want, rtol=1e-12, atol=1e-14)


def test_scheduled_learning_rate_equals_optax():
    # Optax's averaging weight reads a schedule at step_count = t + 1; fnopt does the same.
    sched = lambda t: 0.1 + 0.05 * jnp.sin(jnp.asarray(t, jnp.float32))  # noqa: E731
    want, _ = optax_trajectory(optax.contrib.schedule_free_adamw(sched))
    got, _ = trajectory(fnopt.schedule_free_adamw(sched), fnopt.schedule_free_eval_params)
    assert_trajectories_close(got, want, atol=1e-5)


def test_state_dtype_bfloat16_equals_optax():
    want, _ = optax_trajectory(optax.contrib.schedule_free_sgd(0.1, state_dtype=jnp.bfloat16), steps=10)
    got, state = trajectory(fnopt.schedule_free_sgd(0.1, state_dtype=jnp.bfloat16), fnopt.schedule_free_eval_params, steps=10)
    assert state[-1].z["w"].dtype == jnp.bfloat16
    assert got[-1][0]["w"].dtype == jnp.result_type(float)  # the params keep their dtype
    assert_trajectories_close(got, want, rtol=1e-2, atol=1e-2)


def paper_sgd(p0, grads_fn, steps, lr, b1, power, r, wd=0.0):
    """The recursion of Defazio et al. (2024), eqs. (1)-(3) with the weights
    of their Theorem / reference code, ``c_{t+1} = w_t / sum w``,
    ``w_t = (t+1)^r lr_max^power``, in float64 NumPy (constant LR)."""
    x = z = y = np.asarray(p0, np.float64)
    wsum, out = 0.0, []
    for t in range(steps):
        g = grads_fn(y, t) + wd * y
        z = z - lr * g
        w = (t + 1) ** r * lr**power
        wsum += w
        c = w / wsum
        x = (1 - c) * x + c * z
        y = b1 * x + (1 - b1) * z
        out.append((y, x))
    return out


@pytest.mark.parametrize("r,power", [(0.0, 2.0), (1.0, 2.0), (2.5, 0.5)])
def test_weights_with_r_equal_the_paper_recursion(r, power):
    curv = np.asarray([0.5, 1.0, 2.0])
    noise = RNG.normal(size=(25, 3))
    opt = fnopt.schedule_free_sgd(0.3, b1=0.8, weight_lr_power=power, r=r, weight_decay=0.01)
    p = jnp.asarray([1.0, -2.0, 3.0], jnp.float32)
    s = opt.init(p)
    want = paper_sgd(p, lambda y, t: curv * y + noise[t], 25, 0.3, 0.8, power, r, wd=0.01)
    for t in range(25):
        g = jnp.asarray(curv * np.asarray(p, np.float64) + noise[t], jnp.float32)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        np.testing.assert_allclose(p, want[t][0], rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(fnopt.schedule_free_eval_params(s, p), want[t][1], rtol=2e-5, atol=2e-6)


def test_group_tree_equals_separate_runs():
    lr, b1 = {"w": 0.05, "b": 0.2}, {"w": 0.9, "b": 0.6}
    opt = fnopt.schedule_free_adamw(lr, warmup_steps=3, b1=b1, weight_decay={"w": 0.1, "b": 0.0})
    got, state = trajectory(opt, fnopt.schedule_free_eval_params)
    for name in ("w", "b"):
        single = fnopt.schedule_free_adamw(lr[name], warmup_steps=3, b1=b1[name], weight_decay={"w": 0.1, "b": 0.0}[name])
        p, s = PARAMS[name], single.init(PARAMS[name])
        for k in range(30):
            u, s = single.update(CURV[name] * p + NOISE[k][name], s, p)
            p = optax.apply_updates(p, u)
            np.testing.assert_allclose(got[k][0][name], p, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(got[k][1][name], fnopt.schedule_free_eval_params(s, p), rtol=1e-6, atol=1e-7)
    # Under jit each leaf's group is a traced index into the groups' b1.
    jitted = jax.jit(fnopt.schedule_free_eval_params)(state, got[-1][0])
    for name in ("w", "b"):
        np.testing.assert_allclose(jitted[name], got[-1][1][name], rtol=1e-6, atol=1e-7)
    hp = fnopt.hyperparams(state)
    assert float(hp["b/b1"]) == pytest.approx(0.6) and float(hp["w/effective_learning_rate"]) == pytest.approx(0.05)


def test_vmap_over_learning_rate_and_b1():
    def run(lr, b1):
        opt = fnopt.schedule_free_sgd(lr, b1=b1, warmup_steps=4)

        def step(carry, k):
            p, s = carry
            u, s = opt.update(jax.tree.map(lambda x, c: c * x, p, CURV), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (PARAMS, opt.init(PARAMS)), jnp.arange(10))
        return fnopt.schedule_free_eval_params(s, p)

    lrs, b1s = jnp.asarray([0.1, 0.3]), jnp.asarray([0.9, 0.5])
    batched = jax.jit(jax.vmap(run))(lrs, b1s)
    for i in range(2):
        one = run(float(lrs[i]), float(b1s[i]))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7), batched, one)


def test_recorded_hyperparams():
    opt = fnopt.schedule_free_adamw(0.01, warmup_steps=10, weight_decay=0.1)
    state = opt.init(PARAMS)
    _, state = opt.update(grad(PARAMS, 0), state, PARAMS)
    hp = fnopt.hyperparams(state)
    assert sorted(hp) == ["b1", "b2", "effective_learning_rate", "eps", "learning_rate", "r", "weight_decay", "weight_lr_power"]
    assert float(hp["learning_rate"]) == pytest.approx(0.0)  # the step at t = 0 of the warmup
    _, state = opt.update(grad(PARAMS, 1), state, PARAMS)
    assert float(fnopt.hyperparams(state)["effective_learning_rate"]) == pytest.approx(0.001)


def test_empty_params_and_complex_params():
    opt = fnopt.schedule_free_adamw(0.1)
    u, s = opt.update({}, opt.init({}), {})
    assert u == {} and fnopt.schedule_free_eval_params(s, {}) == {}
    real = jnp.asarray([1.0, -2.0], jnp.float32)
    ps = {"r": real, "c": real.astype(jnp.complex64)}
    s = opt.init(ps)
    for k in range(5):
        u, s = opt.update(jax.tree.map(lambda p: p * (k + 1), ps), s, ps)
        ps = optax.apply_updates(ps, u)
    assert ps["c"].dtype == jnp.complex64
    np.testing.assert_allclose(ps["c"].real, ps["r"], rtol=1e-6)
    np.testing.assert_array_equal(ps["c"].imag, 0.0)


def test_checkpoint_round_trip_continues_bit_for_bit():
    opt = fnopt.schedule_free_adamw(0.05, warmup_steps=3, weight_decay=0.01)
    _, state = trajectory(opt, fnopt.schedule_free_eval_params, steps=4)
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


def test_eval_params_need_exactly_one_state():
    with pytest.raises(ValueError, match=r"^`schedule_free_eval_params\(opt_state, params\)`"):
        fnopt.schedule_free_eval_params(fnopt.adam().init(PARAMS), PARAMS)


INVALID = [
    (lambda: fnopt.schedule_free_sgd(b1=0.0), "`schedule_free_sgd(b1=...)` must be in (0, 1]"),
    (lambda: fnopt.schedule_free_adamw(b1=1.5), "`schedule_free_adamw(b1=...)` must be in (0, 1]"),
    (lambda: fnopt.schedule_free_adamw(b2=1.0), "`schedule_free_adamw(b2=...)` must be in [0, 1)"),
    (lambda: fnopt.schedule_free_sgd(-1.0), "`schedule_free_sgd(learning_rate=...)` must be >= 0"),
    (lambda: fnopt.schedule_free_sgd(warmup_steps=-2), "`schedule_free_sgd(warmup_steps=...)` must be >= 0"),
    (lambda: fnopt.schedule_free_sgd(weight_lr_power=-1.0), "`schedule_free_sgd(weight_lr_power=...)` must be >= 0"),
    (lambda: fnopt.schedule_free_adamw(r=-1.0), "`schedule_free_adamw(r=...)` must be >= 0"),
    (lambda: fnopt.schedule_free_adamw(state_dtype="int32"), "`schedule_free_adamw(state_dtype=...)`"),
    (lambda: fnopt.transforms.schedule_free(0.1, b1=0.0), "`schedule_free(b1=...)` must be in (0, 1]"),
]


@pytest.mark.parametrize("make,message", INVALID)
def test_invalid_values_raise_naming_the_call_and_argument(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value).startswith(message), str(info.value)
