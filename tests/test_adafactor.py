"""Adafactor (torch ``Adafactor`` 2.13): step-for-step parity with
``torch.optim.Adafactor`` on a tree holding a matrix, a 3-D tensor, a vector
and a scalar; group trees, schedules, records, ``vmap``, validation, empty
params, complex params, ``nu_dtype`` and checkpoints.

Tolerances: float32 params agree with torch to ``rtol=2e-5, atol=2e-6``
after 25 steps (torch takes the RMS norms and ``rho_t`` in float64 Python
scalars, fnopt in float32: a few ulps per step); float64 (``FNOPT_X64=1``)
to ``rtol=1e-10``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt import schedules

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
RTOL, ATOL = (1e-10, 1e-12) if X64 else (2e-5, 2e-6)
STEPS = 25

RNG = np.random.default_rng(0)
SHAPES = {"matrix": (4, 3), "tensor": (2, 3, 5), "vector": (5,), "scalar": ()}
P0 = {k: RNG.normal(size=s).astype(DTYPE) for k, s in SHAPES.items()}
TARGET = {k: RNG.normal(size=s).astype(DTYPE) for k, s in SHAPES.items()}
SCALE = {k: RNG.uniform(0.2, 3.0, size=s).astype(DTYPE) for k, s in SHAPES.items()}


def loss_terms(p, y, c, xp):
    return xp.sum(0.5 * c * (p - y) ** 2 + 0.025 * p**4)


def jax_loss(params):
    return sum(loss_terms(params[k], TARGET[k], SCALE[k], jnp) for k in params)


def run_fnopt(opt, steps=STEPS, params=None):
    params = jax.tree.map(jnp.asarray, P0 if params is None else params)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(jax_loss)(p), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)

    (_, state), trajectory = run(params)
    return jax.tree.map(np.asarray, trajectory), state


def run_torch(make_opt, steps=STEPS, lr_at=None):
    torch = pytest.importorskip("torch")
    tdtype = torch.float64 if X64 else torch.float32
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in P0.items()}
    opt = make_opt([params[k] for k in SHAPES])
    out = {k: [] for k in SHAPES}
    for t in range(steps):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        opt.zero_grad()
        sum(
            loss_terms(params[k], torch.tensor(TARGET[k], dtype=tdtype), torch.tensor(SCALE[k], dtype=tdtype), torch)
            for k in SHAPES
        ).backward()
        opt.step()
        for k in SHAPES:
            out[k].append(params[k].detach().numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def assert_close(ours, theirs):
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=RTOL, atol=ATOL, err_msg=k)


CASES = {
    "defaults": (lambda: fnopt.adafactor(), dict()),
    "lr-above-the-cap": (lambda: fnopt.adafactor(0.5), dict(lr=0.5)),
    "weight-decay": (lambda: fnopt.adafactor(0.05, weight_decay=0.2), dict(lr=0.05, weight_decay=0.2)),
    "maximize": (lambda: fnopt.adafactor(0.05, maximize=True), dict(lr=0.05, maximize=True)),
    "beta2-decay-eps-d": (
        lambda: fnopt.adafactor(0.02, beta2_decay=-0.5, eps1=1e-3, eps2=0.1, d=1.5),
        dict(lr=0.02, beta2_decay=-0.5, eps=(1e-3, 0.1), d=1.5),
    ),
    "large-eps1": (lambda: fnopt.adafactor(0.1, eps1=0.5), dict(lr=0.1, eps=(0.5, 1e-3))),
    "foreach-wd-maximize": (
        lambda: fnopt.adafactor(0.2, weight_decay=0.1, maximize=True),
        dict(lr=0.2, weight_decay=0.1, maximize=True, foreach=True),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_adafactor(case):
    torch = pytest.importorskip("torch")
    make, kwargs = CASES[case]
    theirs = run_torch(lambda p: torch.optim.Adafactor(p, **kwargs))
    ours, _ = run_fnopt(make())
    assert_close(ours, theirs)


def test_scheduled_learning_rate_matches_torch_with_a_changing_lr():
    torch = pytest.importorskip("torch")
    sched = schedules.cosine_decay(0.3, STEPS)
    theirs = run_torch(lambda p: torch.optim.Adafactor(p, lr=0.3, weight_decay=0.1), lr_at=lambda t: float(sched(t)))
    ours, _ = run_fnopt(fnopt.adafactor(sched, weight_decay=0.1))
    assert_close(ours, theirs)


def test_defaults_are_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    theirs = inspect.signature(torch.optim.Adafactor).parameters
    ours = inspect.signature(fnopt.adafactor).parameters
    assert ours["learning_rate"].default == theirs["lr"].default
    assert ours["beta2_decay"].default == theirs["beta2_decay"].default
    assert (ours["eps1"].default, ours["eps2"].default) == theirs["eps"].default
    assert ours["d"].default == theirs["d"].default
    assert ours["weight_decay"].default == theirs["weight_decay"].default
    assert ours["maximize"].default == theirs["maximize"].default


def test_first_step_by_hand():
    """Independent of torch: at t=1 the moments are g^2 (w_1 = 1), so the
    factored estimate of a rank-one g^2 is exact and U = sign(g) clipped to
    RMS 1; the step is lr * max(eps2, RMS(p)) * U."""
    p = {"w": jnp.asarray([[1.0, -2.0], [3.0, 0.5]], DTYPE)}
    g = {"w": jnp.asarray(np.outer([1.0, 2.0], [3.0, -1.0]), DTYPE)}
    opt = fnopt.adafactor(0.1)
    u, _ = jax.jit(opt.update)(g, opt.init(p), p)
    rms = np.sqrt(np.mean(np.asarray(p["w"], np.float64) ** 2))
    np.testing.assert_allclose(u["w"], -0.1 * rms * np.sign(np.asarray(g["w"])), rtol=1e-6)


def test_factors_the_last_two_axes_of_a_3d_tensor():
    p = {"t": jnp.ones((2, 3, 5), DTYPE)}
    state = fnopt.adafactor().init(p)
    inner = state[0]
    assert inner.row["t"].shape == (2, 3, 1) and inner.col["t"].shape == (2, 1, 5) and inner.nu["t"] is None
    vec = fnopt.adafactor().init({"v": jnp.ones(4, DTYPE), "s": jnp.ones((), DTYPE)})[0]
    assert vec.row == {"v": None, "s": None} and vec.nu["v"].shape == (4,) and vec.nu["s"].shape == ()


def test_group_tree_equals_separate_runs():
    lr = {"matrix": 0.05, "tensor": 0.02, "vector": schedules.exponential_decay(0.1, 0.9), "scalar": 0.03}
    wd = {"matrix": 0.1, "tensor": 0.0, "vector": 0.2, "scalar": 0.0}
    ours, state = run_fnopt(fnopt.adafactor(lr, weight_decay=wd))
    for k in SHAPES:
        single, _ = run_fnopt(fnopt.adafactor(lr[k], weight_decay=wd[k]), params={k: P0[k]})
        np.testing.assert_allclose(ours[k], single[k], rtol=1e-6, atol=1e-7, err_msg=k)
    hp = fnopt.hyperparams(state)
    assert float(hp["tensor/learning_rate"]) == pytest.approx(0.02)
    assert float(hp["vector/relative_step_size"]) == pytest.approx(min(0.1 * 0.9 ** (STEPS - 1), STEPS**-0.5), rel=1e-5)


def test_records_every_hyperparameter():
    opt = fnopt.adafactor(0.5, beta2_decay=schedules.linear(-0.8, -0.6, 10), eps1=1e-4, weight_decay=0.1)
    _, state = run_fnopt(opt, steps=4)
    hp = fnopt.hyperparams(state)
    assert set(hp) == {
        "relative_step_size", "beta2_decay", "eps1", "eps2", "d", "weight_decay", "learning_rate",
        "effective_learning_rate",
    }
    # The last update used t = 4: rho_4 = min(0.5, 1/2); beta2_decay at count 3.
    assert float(hp["relative_step_size"]) == pytest.approx(0.5)
    assert float(hp["beta2_decay"]) == pytest.approx(-0.8 + 0.2 * 3 / 10)
    hp0 = fnopt.hyperparams(opt.init(P0))
    assert float(hp0["relative_step_size"]) == pytest.approx(0.5) and float(hp0["eps1"]) == pytest.approx(1e-4)


def test_vmap_over_learning_rate_and_beta2_decay():
    lrs = jnp.asarray([0.01, 0.1, 0.5], DTYPE)
    decays = jnp.asarray([-0.8, -0.5, -1.0], DTYPE)

    def final(lr, decay):
        return run_fnopt_traced(fnopt.adafactor(lr, decay, weight_decay=0.1))

    batched = jax.jit(jax.vmap(final))(lrs, decays)
    for i in range(3):
        single = run_fnopt(fnopt.adafactor(float(lrs[i]), float(decays[i]), weight_decay=0.1), steps=5)[0]
        for k in SHAPES:
            np.testing.assert_allclose(batched[k][i], single[k][-1], rtol=1e-5, atol=1e-6)


def run_fnopt_traced(opt, steps=5):
    params = jax.tree.map(jnp.asarray, P0)
    state = opt.init(params)

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(jax_loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(step, (params, state), None, length=steps)[0][0]


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(beta2_decay=0.5), "beta2_decay"),
        (dict(eps1=-1e-3), "eps1"),
        (dict(eps2=-1.0), "eps2"),
        (dict(d=0.5), "d"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(maximize="yes"), "maximize"),
        (dict(nu_dtype="foo"), "nu_dtype"),
        (dict(mask=[1.0]), "mask"),
        (dict(beta2_decay={"a": float("nan")}), "beta2_decay"),
    ],
)
def test_invalid_values_raise_naming_adafactor_and_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^`adafactor\({argument}"):
        fnopt.adafactor(**kwargs)


def test_primitive_names_itself():
    with pytest.raises(ValueError, match=r"^`scale_by_adafactor\(d=\.\.\.\)` must be >= 1"):
        fnopt.transforms.scale_by_adafactor(d=0.9)


def test_empty_params_and_none_leaves():
    opt = fnopt.adafactor(weight_decay=0.1)
    u, _ = opt.update({}, opt.init({}), {})
    assert u == {}
    params = {"a": None, "b": jnp.ones((2, 2), DTYPE)}
    u, _ = opt.update({"a": None, "b": jnp.ones((2, 2), DTYPE)}, opt.init(params), params)
    assert u["a"] is None and u["b"].shape == (2, 2)


def test_complex_params_raise():
    opt = fnopt.adafactor()
    with pytest.raises(ValueError, match=r"^`adafactor`: complex parameters are not supported"):
        opt.init({"z": jnp.ones((2, 2), jnp.complex64)})


def test_nu_dtype_and_bf16_params():
    params = {"w": jnp.ones((3, 4), jnp.bfloat16), "b": jnp.ones(4, jnp.bfloat16)}
    opt = fnopt.adafactor(nu_dtype=jnp.bfloat16)
    state = opt.init({k: v.astype(jnp.float32) for k, v in params.items()})
    assert state[0].row["w"].dtype == jnp.bfloat16 and state[0].nu["b"].dtype == jnp.bfloat16
    opt = fnopt.adafactor()
    state = opt.init(params)
    u, state = opt.update(jax.tree.map(lambda p: p * 0.5, params), state, params)
    assert u["w"].dtype == jnp.bfloat16 and state[0].col["w"].dtype == jnp.bfloat16


def test_checkpoint_round_trip_is_bit_identical():
    opt = fnopt.adafactor(0.1, weight_decay=0.1)
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
