"""fnopt: functional JAX optimizers with exact, schedulable hyperparameters."""

from optax import apply_updates as apply_updates
from ._step import apply_gradients as apply_gradients
from ._packed import packed as packed
from ._flat import FlatView as FlatView
from ._flat import flat_params as flat_params

from . import schedules as schedules
from . import transforms as transforms
from ._adabelief import adabelief as adabelief
from ._adadelta import adadelta as adadelta
from ._adafactor import adafactor as adafactor
from ._adam import adam as adam
from ._adam import adamw as adamw
from ._radam import radam as radam
from ._radam import ranger as ranger
from ._lion import lion as lion
from ._momentum import sgd as sgd
from ._muon import muon as muon
from ._nadam import adamax as adamax
from ._nadam import nadam as nadam
from ._prodigy import prodigy as prodigy
from ._rms import adagrad as adagrad
from ._rms import rmsprop as rmsprop
from ._rprop import rprop as rprop
from ._schedule_free import schedule_free_adamw as schedule_free_adamw
from ._schedule_free import schedule_free_sgd as schedule_free_sgd
from ._trust_ratio import lamb as lamb
from ._trust_ratio import lars as lars
from ._chain import chain as chain
from ._averaging import averaged_params as averaged_params
from ._lr_find import LRFindResult as LRFindResult
from ._lr_find import lr_find as lr_find
from ._muon import muon_labels as muon_labels
from ._report import best_params as best_params
from ._report import hyperparams as hyperparams
from ._report import report as report
from ._report import should_stop as should_stop
from ._report import start_cooldown as start_cooldown
from ._schedule_free import schedule_free_eval_params as schedule_free_eval_params


__version__ = "0.1.0"

__all__ = [
    "LRFindResult",
    "adabelief",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "apply_updates",
    "averaged_params",
    "best_params",
    "chain",
    "hyperparams",
    "lamb",
    "lars",
    "lion",
    "lr_find",
    "packed",
    "FlatView",
    "flat_params",
    "prodigy",
    "nadam",
    "radam",
    "ranger",
    "report",
    "rmsprop",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "rprop",
    "schedules",
    "sgd",
    "should_stop",
    "start_cooldown",
    "transforms",
    "adafactor",
    "muon",
    "muon_labels",
]
