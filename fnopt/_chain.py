"""``fnopt.chain``: Optax's ``chain`` with the checks a misuse deserves, and
the friendly errors aliases give to PyTorch spellings.

The chain rule: ``early_stopping`` freezes training by emitting zero
updates, so it must be the last member; anything after it (a learning rate,
weight decay, another optimizer) could make those updates non-zero again.
Only *observers*, transforms that pass the updates through unchanged
(``average_params``), may follow it.

The keyword rule (``update``'s extra keyword arguments): an fnopt
optimizer or chain raises ``TypeError`` for a keyword that none of its
members may use. A member may use the keywords its ``update`` declares
(``value`` for ``reduce_on_plateau``, ``early_stopping``, ``cooldown``,
``accumulate_gradients``); a wrapper may use those of what it wraps; a
transform fnopt does not know (Optax's, yours) may use any. Optax's own
extra-argument names (``value``, ``grad``, ``value_fn``) are always let
through, because an fnopt optimizer inside ``optax.chain`` cannot see the
siblings that may use them. Only the outermost fnopt ``update`` checks:
the members it calls are not checked again.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import threading
import weakref
from typing import Any, Callable, Iterable

import optax

# The ``init`` functions of the early-stopping transforms made so far.
_STOPPERS: "weakref.WeakSet[Callable]" = weakref.WeakSet()
# The ``init`` functions of the observers (transforms that return their
# updates unchanged), which may follow an early stopping.
_OBSERVERS: "weakref.WeakSet[Callable]" = weakref.WeakSet()


def mark_stopping(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Registers ``tx`` as an early-stopping transform (for :func:`chain`)."""
    _STOPPERS.add(tx.init)
    return tx


def mark_observer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Registers ``tx`` as an observer: its ``update`` returns the updates
    unchanged, so it may follow an early stopping in :func:`chain`."""
    _OBSERVERS.add(tx.init)
    return tx


def _registered(tx: Any, registry: "weakref.WeakSet[Callable]") -> bool:
    init = getattr(tx, "init", None)
    try:
        return init in registry
    except TypeError:
        return False


def _is_stopping(tx: Any) -> bool:
    return _registered(tx, _STOPPERS)


# ------------------------------------------------------------ keywords

# Extra ``update`` keywords Optax's own transforms use (``contrib.
# reduce_on_plateau``, ``polyak_sgd``, ``scale_by_backtracking_linesearch``).
OPTAX_KEYWORDS = frozenset({"value", "grad", "value_fn"})
# ``init`` function -> the keywords that transform may use (None: any).
_KEYWORDS: "weakref.WeakKeyDictionary[Callable, frozenset[str] | None]" = weakref.WeakKeyDictionary()
_DEPTH = threading.local()


def keywords_of(tx: Any) -> frozenset[str] | None:
    """The extra ``update`` keywords ``tx`` may use; ``None`` for any."""
    init = getattr(tx, "init", None)
    try:
        if init in _KEYWORDS:
            return _KEYWORDS[init]
    except TypeError:
        return None
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        return frozenset()  # Optax drops extra keywords before a plain transform
    if not getattr(init, "__module__", "").startswith("fnopt."):
        return None
    parameters = inspect.signature(tx.update).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def union_keywords(transforms: Iterable[Any]) -> frozenset[str] | None:
    """The keywords any of ``transforms`` may use; ``None`` when one may use any."""
    out: frozenset[str] = frozenset()
    for tx in transforms:
        words = keywords_of(tx)
        if words is None:
            return None
        out |= words
    return out


def accepts(tx: Any, keywords: frozenset[str] | None, name: str = "update") -> optax.GradientTransformationExtraArgs:
    """``tx`` registered as using ``keywords``, its ``update`` raising
    ``TypeError`` on any other (the module's keyword rule) when it is the
    outermost fnopt ``update`` called. ``name`` (the factory) is used in
    the error."""
    tx = optax.with_extra_args_support(tx)
    _KEYWORDS[tx.init] = keywords
    allowed = None if keywords is None else keywords | OPTAX_KEYWORDS
    inner_update = tx.update

    def update(updates, state, params=None, **extra_args):
        depth = getattr(_DEPTH, "n", 0)
        if depth == 0 and allowed is not None:
            unknown = [k for k in extra_args if k not in allowed]
            if unknown:
                raise TypeError(_keyword_error(name, unknown[0], keywords))
        _DEPTH.n = depth + 1
        try:
            return inner_update(updates, state, params, **extra_args)
        finally:
            _DEPTH.n = depth

    return optax.GradientTransformationExtraArgs(tx.init, update)


def public(factory: Callable) -> Callable:
    """``factory`` whose transforms follow the keyword rule (for the public
    names of ``fnopt.transforms``)."""

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        tx = factory(*args, **kwargs)
        return accepts(tx, keywords_of(tx), factory.__name__)

    return make


def _keyword_error(name: str, key: str, keywords: frozenset[str]) -> str:
    known = sorted(keywords | OPTAX_KEYWORDS)
    close = difflib.get_close_matches(key, known, n=1)
    if not close and key in ("loss", "metric", "metrics", "val_loss"):
        close = ["value"]
    hint = f"; did you mean {close[0]}?" if close else ""
    users = ", ".join(sorted(keywords)) or "none"
    return (
        f"`{name}(...).update` got an unexpected keyword argument {key!r}{hint} "
        f"(keywords its members use: {users}; a metric goes in as `value=` and is used by "
        "`reduce_on_plateau`, `early_stopping`, `cooldown` and `accumulate_gradients`)"
    )


def chain(*transforms: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Optax's ``chain``: the transforms applied one after another, each to the
    updates of the previous; extra keyword arguments of ``update`` (such as
    ``value=``) reach every member.

    Two checks on top:

    * An :func:`~fnopt.transforms.early_stopping` must be the last member,
      or be followed only by members that pass the updates through
      unchanged (:func:`~fnopt.transforms.average_params`). It stops
      training by emitting zero updates; a member after it (weight decay
      adds ``wd * p``, another optimizer, Lookahead's synchronisation) would
      turn them back into non-zero ones. Raises ``ValueError`` naming the
      position.
    * The keyword rule: ``update`` raises ``TypeError`` ("did you mean") for
      a keyword that no member may use. fnopt's members declare theirs
      (``value`` for ``reduce_on_plateau``, ``early_stopping``,
      ``cooldown``, ``accumulate_gradients``; a wrapper those of what it
      wraps); a member fnopt does not know (an Optax ``...ExtraArgs``
      transform, your own) may use any keyword, so a chain holding one lets
      everything through. Optax's own names (``value``, ``grad``,
      ``value_fn``) always pass, since an fnopt optimizer placed in an
      ``optax.chain`` cannot see the siblings that may use them. Every fnopt
      alias and transform follows the same rule.

    Examples:
        >>> import fnopt
        >>> from fnopt import transforms as T
        >>> opt = fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau(), T.early_stopping(patience=5))
        >>> fnopt.chain(T.early_stopping(), fnopt.sgd(0.1))
        Traceback (most recent call last):
        ...
        ValueError: `chain(...)`: `early_stopping` is member 0 of 2; it must be the last (a member after it would turn its zero updates back into non-zero ones; only `average_params` may follow it)
        >>> import jax.numpy as jnp
        >>> state = opt.init(jnp.zeros(2))
        >>> _ = opt.update(jnp.ones(2), state, value=1.0)  # reaches the plateau and the early stopping
        >>> opt.update(jnp.ones(2), state, val=1.0)
        Traceback (most recent call last):
        ...
        TypeError: `chain(...).update` got an unexpected keyword argument 'val'; did you mean value? ...
    """
    for i, tx in enumerate(transforms[:-1]):
        if _is_stopping(tx) and not all(_registered(after, _OBSERVERS) for after in transforms[i + 1 :]):
            raise ValueError(
                f"`chain(...)`: `early_stopping` is member {i} of {len(transforms)}; it must be the last "
                "(a member after it would turn its zero updates back into non-zero ones; only "
                "`average_params` may follow it)"
            )
    return accepts(optax.chain(*transforms), union_keywords(transforms), "chain")


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
        return accepts(alias(*args, **kwargs), frozenset(), alias.__name__)

    return wrapper
