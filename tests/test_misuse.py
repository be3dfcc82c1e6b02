"""Misuse caught where it can be (issue 14, item 5): an early stopping that is
not last in ``fnopt.chain``, and PyTorch spellings or typos of an alias's
arguments."""

import pytest

import fnopt
from fnopt import transforms as T


def test_chain_rejects_an_early_stopping_that_is_not_last():
    with pytest.raises(ValueError, match=r"`chain\(...\)`: `early_stopping` is member 0 of 2; it must be the last"):
        fnopt.chain(T.early_stopping(patience=3), fnopt.sgd(0.1))
    with pytest.raises(ValueError, match="member 1 of 3"):
        fnopt.chain(fnopt.sgd(0.1), T.early_stopping(), T.add_decayed_weights(0.1))
    fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau(), T.early_stopping())  # last: fine


@pytest.mark.parametrize("make, message", [
    (lambda: fnopt.adam(lr=1e-3), r"`adam\(...\)` got an unexpected keyword argument 'lr'; did you mean learning_rate\?"),
    (lambda: fnopt.adamw(betas=(0.9, 0.99)), r"'betas'; did you mean b1 and b2\?"),
    (lambda: fnopt.sgd(0.1, momentun=0.9), r"'momentun'; did you mean momentum\?"),
    (lambda: fnopt.rprop(etas=(0.5, 1.2)), r"did you mean eta_minus and eta_plus\?"),
    (lambda: fnopt.adam(foreach=True), r"'foreach'; did you mean nothing"),
    (lambda: fnopt.rprop(weight_decay=0.1), r"this optimizer has no weight decay"),
])
def test_alias_keyword_typos_and_torch_names_get_a_did_you_mean(make, message):
    with pytest.raises(TypeError, match=message):
        make()


# ---------------------------------------------------------------- keyword rule

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from tests.test_state_buffers import ALIASES, make  # noqa: E402


def _foreign():
    """A transform fnopt does not know, taking any keyword (as Optax's
    ``...ExtraArgs`` transforms may)."""
    return optax.GradientTransformationExtraArgs(lambda params: (), lambda u, s, p=None, **kw: (u, s))


def _update(tx, matrices_only=False, **kwargs):
    params = {"w": jnp.ones((2, 2))} if matrices_only else {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(jnp.ones_like, params)
    return tx.update(grads, tx.init(params), params, **kwargs)


@pytest.mark.parametrize("name", ALIASES)
def test_every_alias_raises_on_a_keyword_typo(name):
    tx = make(name)
    with pytest.raises(TypeError, match=rf"`{name}\(\.\.\.\)\.update` got an unexpected keyword argument 'val'; did you mean value\?"):
        _update(tx, name == "muon", val=1.0)
    _update(tx, name == "muon", value=1.0)  # Optax's name passes: a sibling in an optax.chain may use it


@pytest.mark.parametrize(
    "make, kwargs, raises",
    [
        # a member uses `value`
        (lambda: fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau()), dict(value=1.0), None),
        (lambda: fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau()), dict(loss=1.0), "did you mean value"),
        (lambda: fnopt.chain(fnopt.adam(0.1), T.early_stopping()), dict(metric=1.0), "did you mean value"),
        # a member fnopt does not know may use anything
        (lambda: fnopt.chain(fnopt.adam(0.1), _foreign()), dict(value=1.0, rng=0), None),
        # a plain Optax GradientTransformation uses no keyword
        (lambda: fnopt.chain(fnopt.adam(0.1), optax.scale(1.0)), dict(rng=0), "'rng'"),
        # wrappers: what they wrap decides
        (lambda: T.lookahead(fnopt.chain(fnopt.sgd(0.1), T.early_stopping())), dict(value=1.0), None),
        (lambda: T.skip_nonfinite(fnopt.sgd(0.1)), dict(vaule=1.0), "did you mean value"),
        (lambda: T.accumulate_gradients(fnopt.sgd(0.1), 2), dict(value=1.0), None),
        (lambda: T.accumulate_gradients(fnopt.sgd(0.1), 2), dict(values=1.0), "did you mean value"),
        # Optax's wrappers pass the keywords on to the fnopt optimizer, which checks them
        (lambda: optax.MultiSteps(fnopt.adam(0.1), 2), dict(val=1.0), "'val'"),
        (lambda: optax.inject_hyperparams(fnopt.adam)(learning_rate=0.1), dict(val=1.0), "'val'"),
        # inside optax.chain, fnopt members let Optax's names through and check the rest
        (lambda: optax.chain(fnopt.adam(0.1), _foreign()), dict(value=1.0, grad=0.0), None),
        (lambda: optax.chain(fnopt.adam(0.1), T.early_stopping()), dict(vale=1.0), "'vale'"),
        # a primitive on its own
        (lambda: T.scale_by_adam(), dict(valeu=1.0), "`scale_by_adam\\(\\.\\.\\.\\)\\.update`"),
    ],
)
def test_the_keyword_rule(make, kwargs, raises):
    tx = make()
    if raises is None:
        _update(tx, **kwargs)
    else:
        with pytest.raises(TypeError, match=raises):
            _update(tx, **kwargs)


def test_nested_fnopt_members_are_not_checked_again():
    """The outer chain knows the siblings: an inner alias must not reject a
    keyword that a foreign sibling uses."""
    seen = {}

    def init(params):
        return ()

    def update(updates, state, params=None, *, rng=None, **extra):
        seen["rng"] = rng
        return updates, state

    custom = optax.GradientTransformationExtraArgs(init, update)
    tx = fnopt.chain(fnopt.adam(0.1), custom)
    _update(tx, rng=7)
    assert seen["rng"] == 7


def test_keywords_checked_under_jit_and_nnx():
    tx = fnopt.sgd(0.1)
    params = jnp.ones(2)
    state = tx.init(params)
    with pytest.raises(TypeError, match="'val'"):
        jax.jit(lambda s: tx.update(params, s, params, val=1.0))(state)
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau()), wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    optimizer.update(model, grads, value=1.0)
    with pytest.raises(TypeError, match="did you mean value"):
        optimizer.update(model, grads, vlaue=1.0)
