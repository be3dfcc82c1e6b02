"""Flax integration: a Linen ``TrainState`` that forwards ``value=`` (and any
other extra argument) to the optimizer and can ``report`` a metric, and
``report_nnx`` for ``flax.nnx.Optimizer``.

``flax.nnx.Optimizer`` needs no wrapper: its ``update(model, grads,
**kwargs)`` already forwards keyword arguments to ``tx.update``, so
``optimizer.update(model, grads, value=loss)`` feeds a plateau or
early-stopping transform, and ``fnopt.should_stop(optimizer.opt_state)``
reads the flag.

Import it explicitly (Flax is an optional dependency)::

    import fnopt.flax
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from flax.training import train_state

from ._report import report as _report
from ._step import apply_gradients
from ._report import should_stop as _should_stop

_OWG = train_state.OVERWRITE_WITH_GRADIENT


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` for fnopt optimizers.

    Differences from Flax's class:

    * ``apply_gradients(grads=..., value=loss)`` passes ``value`` (and every
      other keyword that is not a field of the state) to ``tx.update``, so a
      chain with ``reduce_on_plateau`` or ``early_stopping`` can be fed each
      step. Flax's own passes no extra argument to ``tx.update``. Keywords
      naming a field of the state (``batch_stats=...`` in a subclass) replace
      it, as in Flax. The step is :func:`fnopt.apply_gradients` (the fused
      CPU kernel's whole step where it applies, ``update`` +
      ``apply_updates`` otherwise).
    * ``report(metric)`` returns the state with ``metric`` fed to every
      plateau / early-stopping transform (``fnopt.report``), e.g. the
      validation loss at the end of each epoch.
    * ``should_stop`` is the early-stopping flag (``fnopt.should_stop``).

    The state is a plain pytree: ``jit`` it, ``vmap`` it, checkpoint it with
    Orbax.

    Examples:
        >>> import jax, jax.numpy as jnp, optax, flax.linen as nn, fnopt
        >>> import fnopt.flax
        >>> model = nn.Dense(1)
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
        >>> tx = optax.chain(optax.sgd(0.1), fnopt.transforms.early_stopping(patience=1))
        >>> state = fnopt.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> state = state.apply_gradients(grads=grads, value=1.0)
        >>> state = state.report(2.0)  # no improvement, patience exhausted
        >>> bool(state.should_stop)
        True
    """

    def apply_gradients(self, *, grads: Any, value: Any = None, **kwargs: Any) -> "TrainState":
        """One optimizer step: ``step + 1``, new ``params`` and ``opt_state``.

        Args:
            grads: gradients with the structure of ``params``.
            value: the metric for this step (e.g. the batch loss) given to
                ``tx.update(..., value=value)``; omitted when None.
            **kwargs: fields of the state to replace; any other keyword is
                forwarded to ``tx.update``.

        Returns:
            The updated state.
        """
        names = {f.name for f in dataclasses.fields(self)}
        replace = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        if value is not None:
            extra["value"] = value
        overwrite = isinstance(grads, Mapping) and _OWG in grads
        grads_opt = grads["params"] if overwrite else grads
        params_opt = self.params["params"] if overwrite else self.params
        new_params, opt_state = apply_gradients(self.tx, grads_opt, self.opt_state, params_opt, **extra)
        if overwrite:
            new_params = {"params": new_params, _OWG: grads[_OWG]}
        return self.replace(step=self.step + 1, params=new_params, opt_state=opt_state, **replace)

    def report(self, value: Any) -> "TrainState":
        """The state with ``value`` fed as one observation to every plateau and
        early-stopping transform of ``tx`` (see ``fnopt.report``); an
        ``early_stopping(keep_best=True)`` keeps ``self.params`` when this is
        its best observation (``fnopt.best_params(state)`` returns them)."""
        return _report(self, value)

    @property
    def should_stop(self) -> jax.Array:
        """The early-stopping flag (see ``fnopt.should_stop``)."""
        return _should_stop(self.opt_state)


def report_nnx(optimizer: nnx.Optimizer, value: Any, *, params: Any = None) -> None:
    """``fnopt.report`` for a ``flax.nnx.Optimizer``, in place (NNX style);
    the same as ``fnopt.report(optimizer, value)``, which accepts NNX
    optimizers directly.

    Feeds ``value`` as one observation to every plateau and early-stopping
    transform in ``optimizer.opt_state``. Works inside ``nnx.jit``. An
    ``early_stopping(keep_best=True)`` needs ``params``: the model (or its
    ``nnx.state(model, nnx.Param)``) the metric was measured on;
    ``nnx.update(model, fnopt.best_params(optimizer))`` restores the best.

    Examples:
        >>> import jax.numpy as jnp, optax, fnopt, fnopt.flax
        >>> from flax import nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> tx = optax.chain(optax.sgd(0.1), fnopt.transforms.early_stopping(patience=1))
        >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        >>> fnopt.flax.report_nnx(optimizer, 1.0)
        >>> fnopt.flax.report_nnx(optimizer, 1.5)
        >>> bool(fnopt.should_stop(optimizer.opt_state))
        True
    """
    _report(optimizer, value, params=params)
