"""AdaBelief (issue 13): step-for-step parity with Optax 0.2.8's
``adabelief`` / ``scale_by_belief`` for every option, plus the checks every
optimizer gets.

Tolerances: see ``alias_checks`` (float32: rtol 1e-4, atol 1e-5 on the
params after each of 30 steps, reached: ~7e-6 absolute, from fnopt forming
``1 - b2`` in float32 from float32 ``b2`` where Optax uses the Python
float; x64: rtol 1e-9).
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
from transforms_problem import params0, run_fnopt

import fnopt
from fnopt import schedules, transforms

LR_SCHEDULE = schedules.cosine_decay(0.05, 30)


def _optax_with_decay(lr, wd, mask, **kw):
    # Optax's adabelief has no weight decay: the same chain with Optax's own
    # add_decayed_weights is the oracle.
    return optax.chain(optax.scale_by_belief(**kw), optax.add_decayed_weights(wd, mask), optax.scale_by_learning_rate(lr))


CASES = {
    "defaults": (lambda: fnopt.adabelief(0.05), lambda: optax.adabelief(0.05)),
    "all-options": (
        lambda: fnopt.adabelief(0.05, 0.8, 0.95, 1e-3, 1e-6, nesterov=True),
        lambda: optax.adabelief(0.05, 0.8, 0.95, 1e-3, 1e-6, nesterov=True),
    ),
    "nesterov": (lambda: fnopt.adabelief(0.05, nesterov=True), lambda: optax.adabelief(0.05, nesterov=True)),
    "eps-zero": (
        lambda: fnopt.adabelief(0.05, eps=0.0, eps_root=0.0),
        lambda: optax.adabelief(0.05, eps=0.0, eps_root=0.0),
    ),
    "schedule": (lambda: fnopt.adabelief(LR_SCHEDULE), lambda: optax.adabelief(LR_SCHEDULE)),
    "weight-decay-mask": (
        lambda: fnopt.adabelief(0.05, 0.8, 0.95, weight_decay=0.3, mask=MASK),
        lambda: _optax_with_decay(0.05, 0.3, MASK, b1=0.8, b2=0.95),
    ),
    "primitive": (
        lambda: fnopt.chain(transforms.scale_by_belief(0.7, 0.9, 1e-4, 1e-8), transforms.scale_by_learning_rate(0.02)),
        lambda: optax.chain(optax.scale_by_belief(0.7, 0.9, 1e-4, 1e-8), optax.scale(-0.02)),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_optax(name):
    ours, theirs = CASES[name]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("nesterov", [False, True])
def test_complex_params_match_optax(nesterov):
    # Optax keeps nu complex (zero imaginary part); fnopt keeps it real.
    assert_complex_parity(
        fnopt.adabelief(0.02, 0.8, 0.95, 1e-6, 1e-8, nesterov=nesterov),
        optax.adabelief(0.02, 0.8, 0.95, 1e-6, 1e-8, nesterov=nesterov),
    )
    params = {"z": jnp.ones(2, jnp.complex64)}
    state = fnopt.adabelief(0.1).init(params)[0]
    assert state.mu["z"].dtype == jnp.complex64 and state.nu["z"].dtype == jnp.float32


def test_low_precision_moments_are_stored_as_asked():
    state = fnopt.adabelief(0.05, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float16).init(params0())[0]
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(state.nu)} == {jnp.dtype(jnp.float16)}


@pytest.mark.slow
def test_low_precision_moments():
    # Optax's scale_by_belief has no mu_dtype / nu_dtype: the oracle is the
    # float32 Optax run, to bfloat16 rounding of the stored moments.
    ours = fnopt.adabelief(0.05, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    np.testing.assert_allclose(run_fnopt(ours, 30), run_optax(optax.adabelief(0.05)), atol=0.02)


def test_group_tree_equals_separate_runs():
    check_group_tree(
        lambda **kw: fnopt.adabelief(**kw),
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.99, "eps_root": 1e-8, "weight_decay": 0.1},
        {"learning_rate": 0.03, "b1": 0.7, "b2": 0.9, "eps_root": 0.0, "weight_decay": 0.0},
    )


def test_records_hyperparameters():
    opt = fnopt.adabelief(schedules.step_decay(0.1, 1, 0.5), b2=0.95, weight_decay=0.01)
    params = params0()
    state = opt.init(params)
    _, state = opt.update(params, state, params)
    _, state = opt.update(params, state, params)
    hp = fnopt.hyperparams(state)
    assert set(hp) == {"b1", "b2", "eps", "eps_root", "weight_decay", "learning_rate", "effective_learning_rate"}
    assert float(hp["learning_rate"]) == pytest.approx(0.05) and float(hp["b2"]) == pytest.approx(0.95)


def test_vmap_over_hyperparameters():
    check_vmap(lambda b2: fnopt.adabelief(0.01, b2=b2), "b2", [0.9, 0.999])
    check_vmap(lambda eps: fnopt.adabelief(0.01, eps=eps), "eps", [0.0, 1e-3])


def test_zero_gradient_with_zero_eps_gives_zero():
    opt = fnopt.adabelief(0.1, eps=0.0, eps_root=0.0)
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
    assert updates["w"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fnopt.adabelief(0.01, b1=1.0), r"^`adabelief\(b1=\.\.\.\)` must be in \[0, 1\)"),
        (lambda: fnopt.adabelief(0.01, b2=1.5), r"^`adabelief\(b2=\.\.\.\)`"),
        (lambda: fnopt.adabelief(-0.01), r"^`adabelief\(learning_rate=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, eps=-1e-8), r"^`adabelief\(eps=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, eps_root=-1e-8), r"^`adabelief\(eps_root=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, weight_decay=-1.0), r"^`adabelief\(weight_decay=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, nesterov="yes"), r"^`adabelief\(nesterov=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, mu_dtype="int8"), r"^`adabelief\(mu_dtype=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, nu_dtype=jnp.int32), r"^`adabelief\(nu_dtype=\.\.\.\)`"),
        (lambda: fnopt.adabelief(0.01, mask=3), r"^`adabelief\(mask=\.\.\.\)`"),
        (lambda: transforms.scale_by_belief(eps_root=-1.0), r"^`scale_by_belief\(eps_root=\.\.\.\)`"),
    ],
)
def test_invalid_values_raise_naming_call_and_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_empty_params():
    check_empty(fnopt.adabelief(0.01, weight_decay=0.1))


def test_checkpoint_round_trip():
    check_checkpoint_round_trip(fnopt.adabelief(LR_SCHEDULE, weight_decay=0.1, mask=MASK))


def test_signature_and_defaults_are_optaxs():
    check_optax_defaults(fnopt.adabelief, optax.adabelief)
    check_optax_defaults(transforms.scale_by_belief, optax.scale_by_belief)
