"""fnopt: functional JAX optimizers with exact, schedulable hyperparameters."""

from optax import apply_updates as apply_updates

from . import schedules as schedules
from . import transforms as transforms
from ._adabelief import adabelief
from ._adadelta import adadelta
from ._adafactor import adafactor
from ._adam import adam, adamw, radam, ranger
from ._lion import lion
from ._momentum import sgd
from ._muon import muon
from ._nadam import adamax, nadam
from ._prodigy import prodigy
from ._rms import adagrad, rmsprop
from ._rprop import rprop
from ._schedule_free import schedule_free_adamw, schedule_free_sgd
from ._trust_ratio import lamb, lars
from ._chain import chain as chain
from ._chain import friendly
from ._lr_find import LRFindResult as LRFindResult
from ._lr_find import lr_find as lr_find
from ._muon import muon_labels as muon_labels
from ._report import hyperparams as hyperparams
from ._report import report as report
from ._report import should_stop as should_stop
from ._report import start_cooldown as start_cooldown
from ._schedule_free import schedule_free_eval_params as schedule_free_eval_params

# Every alias explains an unknown keyword (PyTorch's `lr=`, `betas=`, a typo) with a "did you mean".
adabelief = friendly(adabelief)
adadelta = friendly(adadelta)
adafactor = friendly(adafactor)
adagrad = friendly(adagrad)
adam = friendly(adam)
adamax = friendly(adamax)
adamw = friendly(adamw)
lamb = friendly(lamb)
lars = friendly(lars)
lion = friendly(lion)
muon = friendly(muon)
nadam = friendly(nadam)
prodigy = friendly(prodigy)
radam = friendly(radam)
ranger = friendly(ranger)
rmsprop = friendly(rmsprop)
rprop = friendly(rprop)
schedule_free_adamw = friendly(schedule_free_adamw)
schedule_free_sgd = friendly(schedule_free_sgd)
sgd = friendly(sgd)

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
    "chain",
    "hyperparams",
    "lamb",
    "lars",
    "lion",
    "lr_find",
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
