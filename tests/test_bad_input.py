"""Bad input is refused at construction, and valid extreme input never gives
NaN (issue 11, item 8). The randomized version over every factory lives in
``test_hardening.py``; these are the reported cases, written out."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnopt
from fnopt import transforms as T

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}

BOOLS = [True, False, np.bool_(True), np.array(False), jnp.asarray(True)]


@pytest.mark.parametrize("value", BOOLS, ids=repr)
@pytest.mark.parametrize("call, make", [
    ("sgd", lambda v: fnopt.sgd(0.1, v)),  # sgd(0.1, False): momentum=False used to turn momentum off
    ("sgd", lambda v: fnopt.sgd(v)),
    ("adam", lambda v: fnopt.adam(b1=v)),
    ("adamw", lambda v: fnopt.adamw(weight_decay=v)),
    ("rmsprop", lambda v: fnopt.rmsprop(eps=v)),
    ("scale_by_momentum", lambda v: T.scale_by_momentum(dampening=v)),
    ("reduce_on_plateau", lambda v: T.reduce_on_plateau(factor=v)),
    ("early_stopping", lambda v: T.early_stopping(min_delta=v)),
    ("average_params", lambda v: T.average_params(decay=v)),
    ("average_params", lambda v: T.average_params(start=v)),
    ("clip_by_global_norm", T.clip_by_global_norm),
])
def test_a_bool_where_a_number_belongs_is_refused(call, make, value):
    with pytest.raises((TypeError, ValueError), match=rf"^`{call}\("):
        make(value)


@pytest.mark.parametrize("make", [
    lambda: fnopt.sgd(np.array([0.1, 0.1])),
    lambda: fnopt.adam(jnp.ones(2) * 1e-3),
    lambda: fnopt.adamw(weight_decay=np.full((1,), 0.01)),
    lambda: T.scale_by_adam(b2=np.array([[0.999]])),
    lambda: T.clip_by_global_norm(np.array([1.0, 2.0])),
    lambda: T.average_params(decay=np.array([0.9, 0.99])),
])
def test_a_non_scalar_array_where_a_scalar_belongs_is_refused(make):
    with pytest.raises((TypeError, ValueError), match=r"must be a scalar"):
        make()


def test_a_traced_non_scalar_is_refused_too():
    with pytest.raises((TypeError, ValueError), match=r"`sgd\(learning_rate=...\)` must be a scalar"):
        jax.jit(lambda lr: fnopt.sgd(lr).init(PARAMS))(jnp.ones(2))


@pytest.mark.parametrize("make", [
    lambda: fnopt.sgd(0.1),  # stateless: a chain of scale_by_learning_rate alone
    lambda: T.scale_by_learning_rate(0.1),
    lambda: T.add_weight_decay(0.1),
    lambda: T.clip_by_global_norm(1.0),
    lambda: T.skip_nonfinite(fnopt.sgd(0.1)),
    lambda: fnopt.adam(0.1),
])
def test_grads_shaped_unlike_the_params_are_refused_even_without_state(make):
    opt = make()
    state = opt.init(PARAMS)
    wrong = {"w": jnp.ones((1, 3)), "b": jnp.ones(3)}  # would broadcast
    for update in (opt.update, jax.jit(opt.update)):
        with pytest.raises(ValueError, match=r"updates at \['w'\] have shape \(1, 3\)"):
            update(wrong, state, PARAMS)


@pytest.mark.parametrize("make", [
    lambda: fnopt.adam(0.1, eps=0.0),
    lambda: fnopt.adam(0.1, eps=0.0, amsgrad=True),
    lambda: fnopt.adamw(0.1, eps=0.0, weight_decay=0.0),
    lambda: fnopt.radam(0.1, eps=0.0),
    lambda: fnopt.adagrad(0.1, eps=0.0),
    lambda: fnopt.rmsprop(0.1, eps=0.0),
    lambda: fnopt.rmsprop(0.1, eps=0.0, centered=True),
    lambda: fnopt.ranger(0.1, eps=0.0, sync_period=100),
    lambda: fnopt.adam(0.1, eps=lambda t: jnp.zeros([])),  # a schedule that is 0
])
def test_eps_zero_with_a_zero_gradient_gives_a_zero_update(make):
    opt = make()
    params = jnp.ones(3)
    state = opt.init(params)
    for _ in range(8):  # past RAdam's rectification switch
        updates, state = jax.jit(opt.update)(jnp.asarray([0.0, 2.0, 0.0]), state, params)
        assert np.all(np.isfinite(updates)), updates
        assert updates[0] == 0 and updates[2] == 0
        assert updates[1] != 0


def test_adam_with_eps_zero_equals_the_formula_on_nonzero_coordinates():
    opt = fnopt.adam(0.1, eps=0.0)
    g = jnp.asarray([0.0, 2.0])
    updates, _ = opt.update(g, opt.init(jnp.zeros(2)), jnp.zeros(2))
    # Hand-written: first step, m_hat = g, v_hat = g^2, update = -lr * g / |g|.
    np.testing.assert_allclose(np.asarray(updates), [0.0, -0.1], rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1e19, 1e20, 1e30, 3e38])
def test_global_norm_clipping_is_right_for_finite_grads_up_to_float32_max(scale):
    g = {"w": jnp.asarray([1.0, -0.5, 0.25], jnp.float32) * jnp.float32(scale / 1.0),
         "b": jnp.asarray([0.0, 0.125], jnp.float32) * jnp.float32(scale / 1.0)}
    tx = T.clip_by_global_norm(1.0)
    got, _ = tx.update(g, tx.init(g))
    leaves = np.concatenate([np.asarray(x, np.float64) for x in jax.tree.leaves(g)])
    norm = np.sqrt(np.sum((leaves / np.abs(leaves).max()) ** 2)) * np.abs(leaves).max()
    factor = 1.0 / max(norm, 1.0)
    for key in g:
        np.testing.assert_allclose(np.asarray(got[key], np.float64), np.asarray(g[key], np.float64) * factor,
                                   rtol=1e-5, atol=1e-30)
    total = np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(got)))
    assert total == pytest.approx(min(norm, 1.0), rel=1e-5)


def test_global_norm_overflow_path_under_jit_and_vmap():
    tx = T.clip_by_global_norm(2.0)
    g = jnp.asarray([[3e38, 3e38], [3.0, 4.0]], jnp.float32)
    got = jax.jit(jax.vmap(lambda x: tx.update(x, tx.init(x))[0]))(g)
    np.testing.assert_allclose(np.asarray(got[0]), [2 / np.sqrt(2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got[1]), [1.2, 1.6], rtol=1e-6)


def test_optax_masked_of_clip_sees_only_its_leaves():
    # The same norm rule inside Optax's wrapper (a masked-out leaf is not counted).
    tx = optax.masked(T.clip_by_global_norm(1.0), {"w": True, "b": False})
    g = {"w": jnp.full((2, 3), 1e20), "b": jnp.ones(3)}
    got, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(np.asarray(got["w"]), np.full((2, 3), 1 / np.sqrt(6)), rtol=1e-5)
    np.testing.assert_array_equal(got["b"], g["b"])
