"""fnopt: functional JAX optimizers with exact, schedulable hyperparameters."""

from optax import chain as chain

from . import schedules as schedules

__version__ = "0.1.0"

__all__ = ["chain", "schedules"]
