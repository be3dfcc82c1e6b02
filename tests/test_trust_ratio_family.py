"""Trust-ratio optimizers (issue 13): ``scale_by_trust_ratio``, ``lars`` and
``lamb`` step for step against Optax 0.2.8's, for every option, plus the
checks every optimizer gets.

Tolerances: see ``alias_checks`` (float32: rtol 1e-4, atol 1e-5 on the
params after each of 30 steps; reached: LARS exactly, LAMB ~1e-7; x64:
rtol 1e-9).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from alias_checks import (
    MASK,
    assert_complex_parity,
    assert_parity,
    check_checkpoint_round_trip,
    check_empty,
    check_group_tree,
    check_optax_defaults,
    check_vmap,
    run_optax,
)
from transforms_problem import DTYPE, params0, run_fnopt

import fnopt
from fnopt import schedules, transforms

LR_SCHEDULE = schedules.cosine_decay(0.5, 30)
WD_SCHEDULE = schedules.linear(0.0, 0.2, 30)
NOT_MASK = {"w": False, "b": True}


def _optax_lamb(lr, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, wd=0.0, mask=None, mu_dtype=None):
    # optax.lamb without its missing mu_dtype option: the same chain.
    return optax.chain(
        optax.scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype),
        optax.add_decayed_weights(wd, mask),
        optax.scale_by_trust_ratio(),
        optax.scale_by_learning_rate(lr),
    )


def _optax_lars(lr, momentum=0.9, mu_dtype=None):
    # optax.lars with its trace's accumulator_dtype, which lars does not expose.
    return optax.chain(
        optax.scale_by_trust_ratio(trust_coefficient=0.001),
        optax.scale_by_learning_rate(lr),
        optax.trace(momentum, accumulator_dtype=mu_dtype),
    )


LAMB = {
    "defaults": (lambda: fnopt.lamb(0.05), lambda: optax.lamb(0.05)),
    "all-options": (
        lambda: fnopt.lamb(0.05, 0.8, 0.95, 1e-4, 1e-5, 0.1, MASK),
        lambda: optax.lamb(0.05, 0.8, 0.95, 1e-4, 1e-5, 0.1, MASK),
    ),
    "callable-mask": (
        lambda: fnopt.lamb(0.05, weight_decay=0.1, mask=lambda p: NOT_MASK),
        lambda: optax.lamb(0.05, weight_decay=0.1, mask=lambda p: NOT_MASK),
    ),
    "eps-zero": (lambda: fnopt.lamb(0.05, eps=0.0), lambda: optax.lamb(0.05, eps=0.0)),
    "schedules": (
        lambda: fnopt.lamb(LR_SCHEDULE, weight_decay=WD_SCHEDULE),
        lambda: optax.lamb(LR_SCHEDULE, weight_decay=WD_SCHEDULE),
    ),
}

LARS = {
    "defaults": (lambda: fnopt.lars(0.5), lambda: optax.lars(0.5)),
    "all-options": (
        lambda: fnopt.lars(0.5, 0.1, MASK, 0.01, 1e-3, NOT_MASK, 0.8, True),
        lambda: optax.lars(0.5, 0.1, MASK, 0.01, 1e-3, NOT_MASK, 0.8, True),
    ),
    "optax-true-masks": (
        lambda: fnopt.lars(0.5, 0.1, True, 0.02, 0.0, True, 0.5),
        lambda: optax.lars(0.5, 0.1, True, 0.02, 0.0, True, 0.5),
    ),
    "callable-masks": (
        lambda: fnopt.lars(0.5, 0.1, lambda p: NOT_MASK, 0.02, trust_ratio_mask=lambda p: MASK),
        lambda: optax.lars(0.5, 0.1, lambda p: NOT_MASK, 0.02, trust_ratio_mask=lambda p: MASK),
    ),
    "no-momentum": (lambda: fnopt.lars(0.2, momentum=0.0), lambda: optax.lars(0.2, momentum=0.0)),
    # The learning rate comes before the momentum in Optax's chain: with a
    # schedule the buffer holds each step's own rate.
    "schedules": (
        lambda: fnopt.lars(LR_SCHEDULE, weight_decay=WD_SCHEDULE),
        lambda: optax.lars(LR_SCHEDULE, weight_decay=WD_SCHEDULE),
    ),
}

TRUST = {
    "defaults": (lambda: transforms.scale_by_trust_ratio(), lambda: optax.scale_by_trust_ratio()),
    "all-options": (
        lambda: transforms.scale_by_trust_ratio(0.9, 0.05, 0.01, mask=MASK),
        lambda: optax.masked(optax.scale_by_trust_ratio(0.9, 0.05, 0.01), MASK),
    ),
}


@pytest.mark.parametrize("name", LAMB)
def test_lamb_matches_optax(name):
    ours, theirs = LAMB[name]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("name", LARS)
def test_lars_matches_optax(name):
    ours, theirs = LARS[name]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("name", TRUST)
def test_scale_by_trust_ratio_matches_optax(name):
    ours, theirs = TRUST[name]
    chained = fnopt.chain(transforms.scale_by_adam(), ours(), transforms.scale_by_learning_rate(0.05))
    reference = optax.chain(optax.scale_by_adam(), theirs(), optax.scale(-0.05))
    assert_parity(chained, reference)


def test_lars_schedule_goes_into_the_momentum_buffer():
    # Not the same as scaling the momentum's output: the placement matters.
    after = optax.chain(
        optax.scale_by_trust_ratio(trust_coefficient=0.001), optax.trace(0.9), optax.scale_by_learning_rate(LR_SCHEDULE)
    )
    ours = run_fnopt(fnopt.lars(LR_SCHEDULE), 30)
    assert np.max(np.abs(ours - run_optax(after, 30))) > 1e-4


def test_zero_norms_keep_the_update():
    # Optax's rule: a zero param norm (a zero-initialized bias) or a zero
    # update norm gives ratio 1, not trust_coefficient.
    params = {"w": jnp.asarray([3.0, 4.0], DTYPE), "b": jnp.zeros(2, DTYPE)}
    grads = {"w": jnp.zeros(2, DTYPE), "b": jnp.asarray([1.0, -2.0], DTYPE)}
    for tx, ref in (
        (transforms.scale_by_trust_ratio(trust_coefficient=0.1), optax.scale_by_trust_ratio(trust_coefficient=0.1)),
        (transforms.scale_by_trust_ratio(0.5, 0.1, 0.01), optax.scale_by_trust_ratio(0.5, 0.1, 0.01)),
    ):
        ours, _ = tx.update(grads, tx.init(params), params)
        theirs, _ = ref.update(grads, ref.init(params), params)
        for k in params:
            np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6)
            assert np.all(np.isfinite(ours[k]))
    tx = transforms.scale_by_trust_ratio(trust_coefficient=0.1)
    ours, _ = tx.update(grads, tx.init(params), params)
    assert ours["b"].tolist() == [1.0, -2.0] and ours["w"].tolist() == [0.0, 0.0]


def test_complex_params_match_optax():
    assert_complex_parity(fnopt.lamb(0.02, 0.8, 0.95, weight_decay=0.1), optax.lamb(0.02, 0.8, 0.95, weight_decay=0.1))
    assert_complex_parity(
        fnopt.lars(0.5, 0.1, trust_coefficient=0.02, nesterov=True),
        optax.lars(0.5, 0.1, trust_coefficient=0.02, nesterov=True),
    )
    state = fnopt.lamb(0.1).init({"z": jnp.ones(2, jnp.complex64)})[0]
    assert state.mu["z"].dtype == jnp.complex64 and state.nu["z"].dtype == jnp.float32


def test_low_precision_moments_are_stored_as_asked():
    state = fnopt.lamb(0.05, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float16).init(params0())[0]
    assert state.mu["w"].dtype == jnp.bfloat16 and state.nu["w"].dtype == jnp.float16
    assert fnopt.lars(0.5, mu_dtype=jnp.bfloat16).init(params0())[2].trace["w"].dtype == jnp.bfloat16


@pytest.mark.slow
def test_bfloat16_moments():
    # Optax multiplies a stored bfloat16 moment by its decay in bfloat16
    # (the decay itself rounded: 0.9 -> 0.8984); fnopt reads it into float32
    # and works there. Both use the unrounded new moment for the step and
    # store it rounded. So the runs agree to bfloat16 rounding, not float32's.
    ours = fnopt.lamb(0.05, mu_dtype=jnp.bfloat16)
    assert ours.init(params0())[0].mu["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(run_fnopt(ours, 30), run_optax(_optax_lamb(0.05, mu_dtype=jnp.bfloat16)), atol=5e-3)
    # nu_dtype has no Optax counterpart: against the float32 Optax run.
    both = fnopt.lamb(0.05, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    assert both.init(params0())[0].nu["b"].dtype == jnp.bfloat16
    np.testing.assert_allclose(run_fnopt(both, 30), run_optax(optax.lamb(0.05)), atol=5e-3)
    lars = fnopt.lars(0.5, mu_dtype=jnp.bfloat16)
    assert lars.init(params0())[2].trace["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(run_fnopt(lars, 30), run_optax(_optax_lars(0.5, mu_dtype=jnp.bfloat16)), atol=5e-3)


def test_group_trees_equal_separate_runs():
    check_group_tree(
        lambda **kw: fnopt.lamb(**kw),
        {"learning_rate": 0.01, "b1": 0.9, "eps_root": 1e-8, "weight_decay": 0.1},
        {"learning_rate": 0.03, "b1": 0.7, "eps_root": 0.0, "weight_decay": 0.0},
    )
    check_group_tree(
        lambda **kw: fnopt.lars(**kw),
        {"learning_rate": 0.1, "momentum": 0.9, "trust_coefficient": 0.01, "eps": 0.0, "weight_decay": 0.1},
        {"learning_rate": 0.3, "momentum": 0.5, "trust_coefficient": 0.1, "eps": 1e-3, "weight_decay": 0.0},
    )
    check_group_tree(
        lambda **kw: fnopt.chain(transforms.scale_by_trust_ratio(**kw), transforms.scale_by_learning_rate(0.1)),
        {"min_norm": 0.0, "trust_coefficient": 0.5, "eps": 0.0},
        {"min_norm": 2.0, "trust_coefficient": 0.1, "eps": 1e-2},
    )


def test_records_hyperparameters():
    params = params0()
    expected = {
        "lamb": (fnopt.lamb(0.1, eps_root=1e-8, weight_decay=0.01), {"b1", "b2", "eps", "eps_root", "weight_decay"}),
        "lamb-default": (fnopt.lamb(0.1), {"b1", "b2", "eps"}),  # eps_root=0 and no decay: left out
        "lars": (fnopt.lars(0.1, 0.01), {"weight_decay", "trust_coefficient", "eps", "momentum", "dampening"}),
    }
    for name, (opt, names) in expected.items():
        state = opt.init(params)
        _, state = opt.update(params, state, params)
        hp = fnopt.hyperparams(state)
        assert set(hp) == names | {"learning_rate", "effective_learning_rate"}, name
        assert float(hp["learning_rate"]) == pytest.approx(0.1)
    state = fnopt.lars(schedules.step_decay(0.1, 1, 0.5), trust_coefficient=0.02).init(params)
    assert float(fnopt.hyperparams(state)["trust_coefficient"]) == pytest.approx(0.02)


def test_vmap_over_hyperparameters():
    check_vmap(lambda b1: fnopt.lamb(0.01, b1=b1), "b1", [0.5, 0.9])
    check_vmap(lambda trust_coefficient: fnopt.lars(0.5, trust_coefficient=trust_coefficient), "trust_coefficient", [1e-3, 0.1])
    check_vmap(lambda momentum: fnopt.lars(0.5, momentum=momentum), "momentum", [0.0, 0.9])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fnopt.lamb(0.01, b1=1.0), r"^`lamb\(b1=\.\.\.\)` must be in \[0, 1\)"),
        (lambda: fnopt.lamb(0.01, eps_root=-1.0), r"^`lamb\(eps_root=\.\.\.\)`"),
        (lambda: fnopt.lamb(-0.01), r"^`lamb\(learning_rate=\.\.\.\)`"),
        (lambda: fnopt.lamb(0.01, weight_decay=-1.0), r"^`lamb\(weight_decay=\.\.\.\)`"),
        (lambda: fnopt.lamb(0.01, nu_dtype="int8"), r"^`lamb\(nu_dtype=\.\.\.\)`"),
        (lambda: fnopt.lamb(0.01, mask="w"), r"^`lamb\(mask=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, momentum=1.0), r"^`lars\(momentum=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, trust_coefficient=-1.0), r"^`lars\(trust_coefficient=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, eps=-1.0), r"^`lars\(eps=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, nesterov=1), r"^`lars\(nesterov=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, mu_dtype="x"), r"^`lars\(mu_dtype=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, trust_ratio_mask=[1]), r"^`lars\(trust_ratio_mask=\.\.\.\)`"),
        (lambda: fnopt.lars(0.01, mask=[1]), r"^`lars\(mask=\.\.\.\)`"),
        (lambda: transforms.scale_by_trust_ratio(min_norm=-1.0), r"^`scale_by_trust_ratio\(min_norm=\.\.\.\)`"),
    ],
)
def test_invalid_values_raise_naming_call_and_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_needs_params():
    opt = fnopt.lamb(0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="needs the current params"):
        opt.update(params, opt.init(params))


@pytest.mark.parametrize("make", [lambda: fnopt.lamb(0.01, weight_decay=0.1), lambda: fnopt.lars(0.1, 0.1)])
def test_empty_params(make):
    check_empty(make())


@pytest.mark.parametrize(
    "make",
    [lambda: fnopt.lamb(LR_SCHEDULE, weight_decay=0.1, mask=MASK), lambda: fnopt.lars(LR_SCHEDULE, 0.1, nesterov=True)],
)
def test_checkpoint_round_trip(make):
    check_checkpoint_round_trip(make())


def test_signature_and_defaults_are_optaxs():
    check_optax_defaults(fnopt.lamb, optax.lamb)
    check_optax_defaults(fnopt.lars, optax.lars, {"weight_decay_mask": "mask"})
    check_optax_defaults(transforms.scale_by_trust_ratio, optax.scale_by_trust_ratio)
