"""fnopt: functional JAX optimizers with exact, schedulable hyperparameters."""

from optax import apply_updates as apply_updates
from optax import chain as chain

from . import schedules as schedules
from . import transforms as transforms
from ._adadelta import adadelta as adadelta
from ._aliases import adagrad as adagrad
from ._aliases import adam as adam
from ._aliases import adamw as adamw
from ._aliases import radam as radam
from ._aliases import ranger as ranger
from ._aliases import rmsprop as rmsprop
from ._aliases import sgd as sgd
from ._lr_find import LRFindResult as LRFindResult
from ._lr_find import lr_find as lr_find
from ._nadam import adamax as adamax
from ._nadam import nadam as nadam
from ._report import hyperparams as hyperparams
from ._report import report as report
from ._report import should_stop as should_stop
from ._rprop import rprop as rprop

__version__ = "0.1.0"

__all__ = [
    "LRFindResult",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "apply_updates",
    "chain",
    "hyperparams",
    "lr_find",
    "nadam",
    "radam",
    "ranger",
    "report",
    "rmsprop",
    "rprop",
    "schedules",
    "sgd",
    "should_stop",
    "transforms",
]
