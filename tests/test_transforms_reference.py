"""fnopt's optimizers against float64 NumPy references written from the
published update rules (always run; torch and Optax are extra oracles in
their own test files)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transforms_problem import X0, assert_close, params0, run_fnopt, run_reference

import fnopt
from fnopt import schedules, transforms

STEPS = 30


def _fn(value):
    return value if callable(value) else (lambda t: value)


# ------------------------------------------------------------ references


def ref_sgd(lr, momentum=0.0, nesterov=False, dampening=0.0, wd=0.0):
    lr, momentum = _fn(lr), _fn(momentum)
    buf = None

    def step(x, g, t):
        nonlocal buf
        g = g + wd * x
        m = momentum(t)
        if m != 0 or buf is not None:
            buf = g.copy() if buf is None else m * buf + (1 - dampening) * g
            g = g + m * buf if nesterov else buf
        return x - lr(t) * g

    return step


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, amsgrad=False, wd=0.0, decoupled=False):
    lr, b1 = _fn(lr), _fn(b1)
    m = v = v_max = np.zeros_like(X0)

    def step(x, g, t):
        nonlocal m, v, v_max
        k, beta1 = t + 1, b1(t)
        if decoupled:
            x = x * (1 - lr(t) * wd)
        else:
            g = g + wd * x
        m = beta1 * m + (1 - beta1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = np.maximum(v_max, v)
        denom = np.sqrt(v_max if amsgrad else v) / np.sqrt(1 - b2**k) + eps
        return x - lr(t) / (1 - beta1**k) * m / denom

    return step


def ref_radam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    lr = _fn(lr)
    m = v = np.zeros_like(X0)
    rho_inf = 2 / (1 - b2) - 1

    def step(x, g, t):
        nonlocal m, v
        k = t + 1
        if decoupled:
            x = x * (1 - lr(t) * wd)
        else:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**k)
        rho = rho_inf - 2 * k * b2**k / (1 - b2**k)
        if rho <= 5:
            return x - lr(t) * m_hat
        r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return x - lr(t) * m_hat * r * np.sqrt(1 - b2**k) / (np.sqrt(v) + eps)

    return step


def ref_adagrad(lr, init=0.0, eps=1e-10, wd=0.0):
    s = np.full_like(X0, init)

    def step(x, g, t):
        nonlocal s
        g = g + wd * x
        s = s + g * g
        return x - lr * g / (np.sqrt(s) + eps)

    return step


def ref_rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, wd=0.0):
    sq = avg = buf = np.zeros_like(X0)

    def step(x, g, t):
        nonlocal sq, avg, buf
        g = g + wd * x
        sq = alpha * sq + (1 - alpha) * g * g
        avg = alpha * avg + (1 - alpha) * g
        d = g / (np.sqrt(sq - avg * avg if centered else sq) + eps)
        buf = momentum * buf + d
        return x - lr * buf

    return step


def ref_lookahead(inner, k, alpha):
    slow, n = X0.copy(), 0

    def step(x, g, t):
        nonlocal slow, n
        x, n = inner(x, g, t), n + 1
        if n == k:
            slow, n = slow + alpha * (x - slow), 0
            x = slow.copy()
        return x

    return step


def ref_clip(inner, max_norm):
    def step(x, g, t):
        return inner(x, g * max_norm / max(np.linalg.norm(g), max_norm), t)

    return step


# ----------------------------------------------------------------- cases

EXP = schedules.exponential_decay(0.1, 0.97)
LIN = schedules.linear(0.9, 0.5, 20)


def exp_np(t):
    return 0.1 * 0.97**t


def lin_np(t):
    return 0.9 + (0.5 - 0.9) * min(t, 20) / 20


CASES = {
    "sgd": (lambda: fnopt.sgd(0.1), lambda: ref_sgd(0.1)),
    "sgd-momentum-wd": (lambda: fnopt.sgd(0.05, 0.9, weight_decay=0.1), lambda: ref_sgd(0.05, 0.9, wd=0.1)),
    "sgd-nesterov": (lambda: fnopt.sgd(0.05, 0.8, nesterov=True), lambda: ref_sgd(0.05, 0.8, nesterov=True)),
    "sgd-dampening": (lambda: fnopt.sgd(0.05, 0.9, dampening=0.3), lambda: ref_sgd(0.05, 0.9, dampening=0.3)),
    "sgd-scheduled": (lambda: fnopt.sgd(EXP, momentum=LIN), lambda: ref_sgd(exp_np, lin_np)),
    "adam": (lambda: fnopt.adam(0.05), lambda: ref_adam(0.05)),
    "adam-amsgrad-wd": (
        lambda: fnopt.adam(0.05, 0.8, 0.9, 1e-6, amsgrad=True, weight_decay=0.1),
        lambda: ref_adam(0.05, 0.8, 0.9, 1e-6, amsgrad=True, wd=0.1),
    ),
    "adam-scheduled-b1": (lambda: fnopt.adam(EXP, b1=LIN), lambda: ref_adam(exp_np, lin_np)),
    "adamw": (lambda: fnopt.adamw(0.05, weight_decay=0.3), lambda: ref_adam(0.05, wd=0.3, decoupled=True)),
    "adamw-amsgrad": (
        lambda: fnopt.adamw(0.05, b2=0.9, amsgrad=True),
        lambda: ref_adam(0.05, b2=0.9, amsgrad=True, wd=1e-2, decoupled=True),
    ),
    "radam": (lambda: fnopt.radam(0.05), lambda: ref_radam(0.05)),
    "radam-wd-b2": (lambda: fnopt.radam(0.05, b2=0.9, weight_decay=0.1), lambda: ref_radam(0.05, b2=0.9, wd=0.1)),
    "adagrad": (lambda: fnopt.adagrad(0.1), lambda: ref_adagrad(0.1)),
    "adagrad-init-wd": (
        lambda: fnopt.adagrad(0.1, 0.5, 1e-3, weight_decay=0.1),
        lambda: ref_adagrad(0.1, 0.5, 1e-3, wd=0.1),
    ),
    "rmsprop": (lambda: fnopt.rmsprop(0.01), lambda: ref_rmsprop(0.01)),
    "rmsprop-centered-momentum-wd": (
        lambda: fnopt.rmsprop(0.01, 0.9, 1e-6, 0.7, centered=True, weight_decay=0.1),
        lambda: ref_rmsprop(0.01, 0.9, 1e-6, 0.7, centered=True, wd=0.1),
    ),
    "lookahead-sgd": (
        lambda: transforms.lookahead(fnopt.sgd(0.05, 0.9), sync_period=5, alpha=0.3),
        lambda: ref_lookahead(ref_sgd(0.05, 0.9), 5, 0.3),
    ),
    "ranger": (
        lambda: fnopt.ranger(0.05, weight_decay=0.1),
        lambda: ref_lookahead(ref_radam(0.05, 0.95, wd=0.1, decoupled=True), 6, 0.5),
    ),
    "clip-sgd": (
        lambda: fnopt.chain(transforms.clip_by_global_norm(0.5), fnopt.sgd(0.1, 0.9)),
        lambda: ref_clip(ref_sgd(0.1, 0.9), 0.5),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_numpy_reference(name):
    make_opt, make_ref = CASES[name]
    expected = run_reference(make_ref(), STEPS)
    assert np.max(np.abs(expected[-1] - X0)) > 0.1  # the run goes somewhere
    assert_close(run_fnopt(make_opt(), STEPS), expected)


def test_radam_switches_to_rectified_steps():
    # rho_t exceeds 5 from t = 6 on (b2 = 0.999): the reference takes both branches.
    b2 = 0.999
    rho_inf = 2 / (1 - b2) - 1
    rho = [rho_inf - 2 * k * b2**k / (1 - b2**k) for k in range(1, STEPS + 1)]
    assert min(rho) < 5 < max(rho)


def test_skip_nonfinite_leaves_params_and_inner_state_untouched():
    opt = transforms.skip_nonfinite(fnopt.sgd(0.05, 0.9), max_consecutive_skips=2)
    bad = {3, 7, 8, 12}
    ref = ref_sgd(0.05, 0.9)
    params = params0()
    state = opt.init(params)
    update = jax.jit(opt.update)
    x, applied = X0.copy(), 0
    for t in range(16):
        grads = jax.grad(lambda p: jnp.sum(jnp.concatenate([p["w"], p["b"]]) ** 2) / 2)(params)
        if t in bad:
            grads = {"w": grads["w"].at[1].set(jnp.nan), "b": grads["b"]}
        before = state.inner_state
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if t in bad:
            assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
            jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
        else:
            x = ref(x, x, applied)  # gradient of |x|^2 / 2 is x
            applied += 1
        assert int(state.total_skips) == len([s for s in bad if s <= t])
        assert bool(state.gave_up) == (t >= 8)  # two in a row at steps 7, 8; sticky
    assert int(state.consecutive_skips) == 0
    assert_close(np.concatenate([params["w"], params["b"]]), x)


def test_skip_nonfinite_schedule_does_not_advance_on_skipped_steps():
    opt = transforms.skip_nonfinite(fnopt.sgd(schedules.exponential_decay(1.0, 0.5)))
    state = opt.init(jnp.zeros(1))
    for g in (1.0, jnp.inf, 1.0):
        updates, state = opt.update(jnp.array([g]), state)
    # Two applied steps: LR values 1.0 and 0.5; the skipped one did not count.
    assert float(updates[0]) == -0.5
    assert float(fnopt.hyperparams(state)["learning_rate"]) == 0.5
