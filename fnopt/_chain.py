"""``fnopt.chain``: Optax's ``chain`` with the checks a misuse deserves, and
the friendly errors aliases give to PyTorch spellings.

The chain rule: ``early_stopping`` freezes training by emitting zero
updates, so it must be the last member; anything after it (a learning rate,
weight decay, another optimizer) could make those updates non-zero again.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import weakref
from typing import Any, Callable

import optax

# The ``init`` functions of the early-stopping transforms made so far.
_STOPPERS: "weakref.WeakSet[Callable]" = weakref.WeakSet()


def mark_stopping(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Registers ``tx`` as an early-stopping transform (for :func:`chain`)."""
    _STOPPERS.add(tx.init)
    return tx


def _is_stopping(tx: Any) -> bool:
    init = getattr(tx, "init", None)
    try:
        return init in _STOPPERS
    except TypeError:
        return False


def chain(*transforms: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Optax's ``chain``: the transforms applied one after another, each to the
    updates of the previous; extra keyword arguments of ``update`` (such as
    ``value=``) reach every member.

    One check on top: an :func:`~fnopt.transforms.early_stopping` must be the
    last member. It stops training by emitting zero updates; a member after
    it (weight decay adds ``wd * p``, another optimizer, Lookahead's
    synchronisation) would turn them back into non-zero ones. Raises
    ``ValueError`` naming the position.

    Examples:
        >>> import fnopt
        >>> from fnopt import transforms as T
        >>> opt = fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau(), T.early_stopping(patience=5))
        >>> fnopt.chain(T.early_stopping(), fnopt.sgd(0.1))
        Traceback (most recent call last):
        ...
        ValueError: `chain(...)`: `early_stopping` is member 0 of 2; it must be the last (a member after it would turn its zero updates back into non-zero ones)
    """
    for i, tx in enumerate(transforms[:-1]):
        if _is_stopping(tx):
            raise ValueError(
                f"`chain(...)`: `early_stopping` is member {i} of {len(transforms)}; it must be the last "
                "(a member after it would turn its zero updates back into non-zero ones)"
            )
    return optax.chain(*transforms)


# PyTorch / Keras spellings -> fnopt's, for the aliases' error messages.
TORCH_NAMES = {
    "lr": "learning_rate",
    "betas": "b1 and b2",
    "beta_1": "b1",
    "beta_2": "b2",
    "beta1": "b1",
    "beta2": "b2",
    "epsilon": "eps",
    "decay": "weight_decay",
    "etas": "eta_minus and eta_plus",
    "step_sizes": "min_step_size and max_step_size",
    "lr_decay": "a schedule as learning_rate (e.g. fnopt.schedules.inverse_time_decay)",
    "foreach": "nothing: fnopt compiles one fused program per step (drop the argument)",
    "fused": "nothing: fnopt compiles one fused program per step (drop the argument)",
    "capturable": "nothing (drop the argument)",
    "differentiable": "nothing (drop the argument)",
}


def friendly(alias: Callable) -> Callable:
    """``alias`` with a "did you mean" error for an unknown keyword argument:
    PyTorch's names (``lr``, ``betas``, ...) are mapped to fnopt's, other
    typos get the closest parameter name."""
    signature = inspect.signature(alias)
    names = list(signature.parameters)

    @functools.wraps(alias)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        unknown = [k for k in kwargs if k not in signature.parameters]
        if unknown:
            key = unknown[0]
            if key in TORCH_NAMES:
                hint = f"; did you mean {TORCH_NAMES[key]}?"
            elif key == "weight_decay":
                hint = "; this optimizer has no weight decay: chain `fnopt.transforms.add_decayed_weights(wd)` after it"
            else:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
            raise TypeError(
                f"`{alias.__name__}(...)` got an unexpected keyword argument {key!r}{hint} "
                f"(its arguments: {', '.join(names)})"
            )
        return alias(*args, **kwargs)

    return wrapper
