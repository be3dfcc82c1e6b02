"""The optimizer aliases: convergence table, PyTorch's defaults, validation
and the hyperparameters they record."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt import schedules

# (alias factory, steps) per alias: the LR is picked per optimizer, as
# anyone tuning them would; RAdam's un-adapted first steps need a small LR on
# Rosenbrock's steep walls.
TABLE = {
    "sgd": (lambda: fnopt.sgd(1e-3, momentum=0.9), 4000),
    "sgd-nesterov": (lambda: fnopt.sgd(1e-3, momentum=0.9, nesterov=True), 4000),
    "adam": (lambda: fnopt.adam(0.02), 3000),
    "adam-amsgrad": (lambda: fnopt.adam(0.05, amsgrad=True), 5000),
    "adamw": (lambda: fnopt.adamw(0.02, weight_decay=1e-4), 3000),
    "radam": (lambda: fnopt.radam(5e-3), 10000),
    "adagrad": (lambda: fnopt.adagrad(0.5), 10000),
    "rmsprop": (lambda: fnopt.rmsprop(3e-4, momentum=0.9), 3000),
    "rmsprop-centered": (lambda: fnopt.rmsprop(3e-4, momentum=0.9, centered=True), 5000),
    "ranger": (lambda: fnopt.ranger(5e-3), 10000),
    # Schedule-free: the params y trail the average x by the early steps'
    # weight; the reference code's r=2 weights them down (O(1/T^3)).
    "schedule_free_sgd": (lambda: fnopt.schedule_free_sgd(2e-3, warmup_steps=100, r=2.0), 20000),
    "schedule_free_adamw": (lambda: fnopt.schedule_free_adamw(1e-2, warmup_steps=100, r=2.0), 10000),
    # Prodigy learns the step size; the LR is its schedule (peak 1).
    "prodigy": (lambda: fnopt.prodigy(fnopt.schedules.cosine_decay(1.0, 5000)), 5000),
    # Sign / trust-ratio steps have a fixed length: they need a decaying LR to settle.
    "lion": (lambda: fnopt.lion(fnopt.schedules.cosine_decay(0.01, 6000), weight_decay=0.0), 6000),
    "lamb": (lambda: fnopt.lamb(fnopt.schedules.cosine_decay(0.02, 6000)), 6000),
    "lars": (lambda: fnopt.lars(fnopt.schedules.cosine_decay(0.01, 6000), trust_coefficient=1.0), 6000),
    "adabelief": (lambda: fnopt.adabelief(0.02), 3000),
    # Adafactor's step is relative (lr * RMS(p)), so it needs a decaying LR to
    # settle. Muon is for matrices only: its convergence test is a matrix
    # least-squares problem in tests/test_muon.py.
    "adafactor": (lambda: fnopt.adafactor(fnopt.schedules.cosine_decay(0.02, 10000)), 10000),
    "nadam": (lambda: fnopt.nadam(0.01), 5000),
    "nadamw": (lambda: fnopt.nadam(0.02, weight_decay=1e-4, decoupled_weight_decay=True), 5000),
    "adamax": (lambda: fnopt.adamax(0.02), 5000),
    # Adadelta's constant-LR steps keep oscillating across Rosenbrock's valley: anneal them.
    "adadelta": (lambda: fnopt.adadelta(schedules.cosine_decay(1.0, 10000)), 10000),
    "rprop": (lambda: fnopt.rprop(1e-3), 3000),
}


def rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def quadratic(p):
    return 0.5 * jnp.sum(jnp.asarray([1.0, 10.0], p.dtype) * (p - 1) ** 2)


def minimize(opt, loss, x0, steps):
    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

    return run(x0)


@pytest.mark.parametrize("name", TABLE)
def test_converges_on_quadratic_and_rosenbrock(name, x64_enabled):
    make, steps = TABLE[name]
    dtype = jnp.float64 if x64_enabled else jnp.float32
    opt = make()
    for loss, x0, tol in ((quadratic, [-1.0, 2.0], 1e-6), (rosenbrock, [-1.2, 1.0], 1e-4)):
        x = minimize(opt, loss, jnp.asarray(x0, dtype), steps)
        assert x.dtype == dtype
        assert float(loss(x)) < tol, (loss.__name__, x)
        np.testing.assert_allclose(x, 1.0, atol=2e-2)


TORCH_DEFAULTS = {
    # alias: (torch class name, {fnopt argument: torch argument or (argument, index)})
    "sgd": ("SGD", {"momentum": "momentum", "nesterov": "nesterov", "dampening": "dampening", "weight_decay": "weight_decay"}),
    "adam": ("Adam", {"learning_rate": "lr", "b1": ("betas", 0), "b2": ("betas", 1), "eps": "eps", "amsgrad": "amsgrad", "weight_decay": "weight_decay"}),
    "adamw": ("AdamW", {"learning_rate": "lr", "b1": ("betas", 0), "b2": ("betas", 1), "eps": "eps", "amsgrad": "amsgrad", "weight_decay": "weight_decay"}),
    "radam": ("RAdam", {"learning_rate": "lr", "b1": ("betas", 0), "b2": ("betas", 1), "eps": "eps", "weight_decay": "weight_decay"}),
    "adagrad": ("Adagrad", {"learning_rate": "lr", "initial_accumulator_value": "initial_accumulator_value", "eps": "eps", "weight_decay": "weight_decay"}),
    "rmsprop": ("RMSprop", {"learning_rate": "lr", "alpha": "alpha", "eps": "eps", "momentum": "momentum", "centered": "centered", "weight_decay": "weight_decay"}),
    "adafactor": ("Adafactor", {"learning_rate": "lr", "beta2_decay": "beta2_decay", "eps1": ("eps", 0), "eps2": ("eps", 1), "d": "d", "weight_decay": "weight_decay", "maximize": "maximize"}),
    "muon": ("Muon", {"learning_rate": "lr", "weight_decay": "weight_decay", "momentum": "momentum", "nesterov": "nesterov", "ns_coefficients": "ns_coefficients", "eps": "eps", "ns_steps": "ns_steps", "adjust_lr_fn": "adjust_lr_fn"}),
    "nadam": ("NAdam", {"learning_rate": "lr", "b1": ("betas", 0), "b2": ("betas", 1), "eps": "eps", "momentum_decay": "momentum_decay", "weight_decay": "weight_decay", "decoupled_weight_decay": "decoupled_weight_decay", "maximize": "maximize"}),
    "adamax": ("Adamax", {"learning_rate": "lr", "b1": ("betas", 0), "b2": ("betas", 1), "eps": "eps", "weight_decay": "weight_decay", "maximize": "maximize"}),
    "adadelta": ("Adadelta", {"learning_rate": "lr", "rho": "rho", "eps": "eps", "weight_decay": "weight_decay", "maximize": "maximize"}),
    "rprop": ("Rprop", {"learning_rate": "lr", "eta_minus": ("etas", 0), "eta_plus": ("etas", 1), "min_step_size": ("step_sizes", 0), "max_step_size": ("step_sizes", 1), "maximize": "maximize"}),
}


@pytest.mark.parametrize("alias", TORCH_DEFAULTS)
def test_defaults_are_pytorchs(alias):
    torch = pytest.importorskip("torch")
    cls_name, names = TORCH_DEFAULTS[alias]
    ours = inspect.signature(getattr(fnopt, alias)).parameters
    theirs = inspect.signature(getattr(torch.optim, cls_name)).parameters
    for name, torch_name in names.items():
        if isinstance(torch_name, tuple):
            expected = theirs[torch_name[0]].default[torch_name[1]]
        else:
            expected = theirs[torch_name].default
        assert ours[name].default == expected, (alias, name)


def test_signatures():
    # torch 2.13: SGD's lr defaults to 1e-3.
    assert str(inspect.signature(fnopt.sgd)).startswith("(learning_rate: 'Hyper' = 0.001, momentum: 'Hyper' = 0.0, *, nesterov")
    assert list(inspect.signature(fnopt.adamw).parameters) == [
        "learning_rate", "b1", "b2", "eps", "weight_decay", "amsgrad", "mask", "maximize", "mu_dtype", "nu_dtype"
    ]
    for alias in (fnopt.sgd, fnopt.adam, fnopt.adamw, fnopt.radam, fnopt.adagrad, fnopt.rmsprop, fnopt.ranger):
        assert inspect.signature(alias).parameters["mask"].kind is inspect.Parameter.KEYWORD_ONLY, alias
    assert inspect.signature(fnopt.ranger).parameters["sync_period"].kind is inspect.Parameter.KEYWORD_ONLY


INVALID = [
    (lambda: fnopt.sgd(-0.1), "`sgd(learning_rate=...)` must be >= 0, got -0.1"),
    (lambda: fnopt.sgd(0.1, momentum=1.0), "`sgd(momentum=...)` must be in [0, 1), got 1.0"),
    (lambda: fnopt.sgd(0.1, momentum=-0.5), "`sgd(momentum=...)` must be in [0, 1)"),
    (lambda: fnopt.sgd(0.1, nesterov=True), "`sgd(nesterov=True)` requires momentum > 0 and dampening == 0"),
    (lambda: fnopt.sgd(0.1, 0.9, nesterov=True, dampening=0.1), "`sgd(nesterov=True)` requires"),
    (lambda: fnopt.sgd(0.1, 0.9, dampening=1.5), "`sgd(dampening=...)` must be in [0, 1]"),
    (lambda: fnopt.sgd(0.1, weight_decay=-1e-4), "`sgd(weight_decay=...)` must be >= 0"),
    (lambda: fnopt.sgd("0.1"), "`sgd(learning_rate=...)` must be a number"),
    (lambda: fnopt.sgd(float("nan")), "`sgd(learning_rate=...)` must be finite"),
    (lambda: fnopt.adam(-1e-3), "`adam(learning_rate=...)` must be >= 0"),
    (lambda: fnopt.adam(b1=1.0), "`adam(b1=...)` must be in [0, 1), got 1.0"),
    (lambda: fnopt.adam(b2=1.5), "`adam(b2=...)` must be in [0, 1), got 1.5"),
    (lambda: fnopt.adam(eps=-1e-8), "`adam(eps=...)` must be >= 0"),
    (lambda: fnopt.adam(weight_decay=-0.1), "`adam(weight_decay=...)` must be >= 0"),
    (lambda: fnopt.adamw(weight_decay=-0.1), "`adamw(weight_decay=...)` must be >= 0"),
    (lambda: fnopt.adamw(b1=-0.1), "`adamw(b1=...)` must be in [0, 1)"),
    (lambda: fnopt.radam(b2=1.0), "`radam(b2=...)` must be in [0, 1)"),
    (lambda: fnopt.radam(eps=-1.0), "`radam(eps=...)` must be >= 0"),
    (lambda: fnopt.adagrad(initial_accumulator_value=-1.0), "`adagrad(initial_accumulator_value=...)` must be >= 0"),
    (lambda: fnopt.adagrad(eps=-1.0), "`adagrad(eps=...)` must be >= 0"),
    (lambda: fnopt.rmsprop(alpha=1.5), "`rmsprop(alpha=...)` must be in [0, 1], got 1.5"),
    (lambda: fnopt.rmsprop(momentum=1.0), "`rmsprop(momentum=...)` must be in [0, 1)"),
    (lambda: fnopt.rmsprop(eps=-1.0), "`rmsprop(eps=...)` must be >= 0"),
    (lambda: fnopt.ranger(sync_period=0), "`ranger(sync_period=...)` must be >= 1, got 0"),
    (lambda: fnopt.ranger(alpha=1.5), "`ranger(alpha=...)` must be in [0, 1]"),
    (lambda: fnopt.ranger(b1=1.0), "`ranger(b1=...)` must be in [0, 1)"),
]


@pytest.mark.parametrize("make, message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_hyperparameters_raise(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_traced_and_scheduled_hyperparameters_are_not_checked():
    jax.jit(lambda lr: fnopt.sgd(lr, momentum=lr).init(jnp.zeros(1)))(jnp.asarray(-1.0))
    fnopt.adam(lambda t: -1.0, b1=lambda t: 2.0)


NAMES = {
    "sgd": (lambda: fnopt.sgd(0.1), {"learning_rate"}),
    "sgd-momentum-wd": (
        lambda: fnopt.sgd(0.1, 0.9, weight_decay=0.1),
        {"weight_decay", "momentum", "dampening", "learning_rate"},
    ),
    "adam": (lambda: fnopt.adam(), {"b1", "b2", "eps", "learning_rate"}),
    "adamw": (lambda: fnopt.adamw(), {"b1", "b2", "eps", "weight_decay", "learning_rate"}),
    "radam": (lambda: fnopt.radam(weight_decay=0.1), {"weight_decay", "b1", "b2", "eps", "learning_rate"}),
    "adagrad": (lambda: fnopt.adagrad(), {"initial_accumulator_value", "eps", "learning_rate"}),
    "rmsprop": (lambda: fnopt.rmsprop(momentum=0.9), {"alpha", "eps", "momentum", "dampening", "learning_rate"}),
    "ranger": (lambda: fnopt.ranger(), {"b1", "b2", "eps", "learning_rate", "sync_period", "alpha"}),
}


@pytest.mark.parametrize("name", NAMES)
def test_records_every_hyperparameter_by_name(name):
    make, names = NAMES[name]
    params = {"w": jnp.ones(3)}
    opt = make()
    state = opt.init(params)
    _, state = opt.update({"w": jnp.ones(3)}, state, params)
    assert set(fnopt.hyperparams(state)) == names | {"effective_learning_rate"}


def test_zero_hyperparameter_leaves_stage_out_unless_traced():
    params = jnp.ones(2)
    assert "weight_decay" not in fnopt.hyperparams(fnopt.adam(weight_decay=0.0).init(params))

    @jax.jit
    def traced(wd):
        opt = fnopt.adam(0.1, weight_decay=wd)
        return opt.update(jnp.zeros(2), opt.init(params), params)[0]

    # A traced weight decay keeps the stage: with zero gradients only the decay moves.
    assert np.all(np.asarray(traced(jnp.asarray(0.0))) == 0)
    assert np.all(np.asarray(traced(jnp.asarray(1.0))) < 0)
