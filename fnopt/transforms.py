"""Gradient transformations: Optax ``GradientTransformationExtraArgs`` that
mix freely with Optax's own in ``optax.chain`` and work in ``flax.nnx.Optimizer``.

Every numeric hyperparameter accepts a float, a traced array or a schedule of
the step (``count``, the number of updates already applied); no
``inject_hyperparams`` wrapper is needed. Each state records the values used
by its last update, collected by ``fnopt.hyperparams(state)``. ``update``
takes Optax's extra keyword arguments (``value=``, ...) and raises
``TypeError`` on one that no part of the transform may use (the keyword
rule, see ``fnopt.chain``). Concrete
invalid hyperparameters raise ``ValueError`` at construction; traced ones and
schedules are not checked.
"""

from ._accumulate import AccumulateGradientsState as AccumulateGradientsState
from ._accumulate import accumulate_gradients as accumulate_gradients
from ._averaging import AverageParamsState as AverageParamsState
from ._averaging import average_params as average_params
from ._rms import ScaleByAdagradState as ScaleByAdagradState
from ._adam import ScaleByAdamState as ScaleByAdamState
from ._radam import ScaleByRAdamState as ScaleByRAdamState
from ._rms import ScaleByRmsState as ScaleByRmsState
from ._rms import scale_by_adagrad as scale_by_adagrad
from ._adam import scale_by_adam as scale_by_adam
from ._radam import scale_by_radam as scale_by_radam
from ._rms import scale_by_rms as scale_by_rms
from ._cooldown import CooldownState as CooldownState
from ._cooldown import cooldown as cooldown
from ._adabelief import ScaleByBeliefState as ScaleByBeliefState
from ._adabelief import scale_by_belief as scale_by_belief
from ._adafactor import ScaleByAdafactorState as ScaleByAdafactorState
from ._adafactor import scale_by_adafactor as scale_by_adafactor
from ._adadelta import ScaleByAdadeltaState as ScaleByAdadeltaState
from ._adadelta import scale_by_adadelta as scale_by_adadelta
from ._elementwise import RecordState as RecordState
from ._elementwise import add_decayed_weights as add_decayed_weights
from ._elementwise import add_weight_decay as add_weight_decay
from ._elementwise import clip_by_global_norm as clip_by_global_norm
from ._elementwise import scale_by_learning_rate as scale_by_learning_rate
from ._lion import ScaleByLionState as ScaleByLionState
from ._lion import scale_by_lion as scale_by_lion
from ._momentum import ScaleByMomentumState as ScaleByMomentumState
from ._momentum import scale_by_momentum as scale_by_momentum
from ._muon import ScaleByMuonState as ScaleByMuonState
from ._muon import scale_by_muon as scale_by_muon
from ._plateau import ReduceOnPlateauState as ReduceOnPlateauState
from ._plateau import reduce_on_plateau as reduce_on_plateau
from ._prodigy import ScaleByProdigyState as ScaleByProdigyState
from ._prodigy import scale_by_prodigy as scale_by_prodigy
from ._schedule_free import ScheduleFreeState as ScheduleFreeState
from ._schedule_free import schedule_free as schedule_free
from ._nadam import ScaleByAdamaxState as ScaleByAdamaxState
from ._nadam import ScaleByNadamState as ScaleByNadamState
from ._nadam import scale_by_adamax as scale_by_adamax
from ._nadam import scale_by_nadam as scale_by_nadam
from ._rprop import ScaleByRpropState as ScaleByRpropState
from ._rprop import scale_by_rprop as scale_by_rprop
from ._stopping import EarlyStoppingState as EarlyStoppingState
from ._stopping import early_stopping as early_stopping
from ._trust_ratio import scale_by_trust_ratio as scale_by_trust_ratio
from ._wrappers import LookaheadState as LookaheadState
from ._wrappers import SkipNonfiniteState as SkipNonfiniteState
from ._wrappers import lookahead as lookahead
from ._wrappers import skip_nonfinite as skip_nonfinite

__all__ = [
    "AccumulateGradientsState",
    "AverageParamsState",
    "CooldownState",
    "EarlyStoppingState",
    "LookaheadState",
    "RecordState",
    "ReduceOnPlateauState",
    "ScaleByAdadeltaState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "ScaleByMomentumState",
    "ScaleByProdigyState",
    "ScaleByRAdamState",
    "ScaleByRmsState",
    "ScheduleFreeState",
    "ScaleByAdamaxState",
    "ScaleByNadamState",
    "ScaleByRpropState",
    "SkipNonfiniteState",
    "accumulate_gradients",
    "add_decayed_weights",
    "add_weight_decay",
    "average_params",
    "clip_by_global_norm",
    "cooldown",
    "early_stopping",
    "lookahead",
    "reduce_on_plateau",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_belief",
    "scale_by_adamax",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_momentum",
    "scale_by_prodigy",
    "scale_by_radam",
    "scale_by_rms",
    "schedule_free",
    "scale_by_trust_ratio",
    "scale_by_nadam",
    "scale_by_rprop",
    "skip_nonfinite",
    "ScaleByAdafactorState",
    "ScaleByMuonState",
    "scale_by_adafactor",
    "scale_by_muon",
]


def _follow_the_keyword_rule() -> None:
    """Every public factory here returns a transform whose ``update``
    raises on a keyword none of its parts may use (see ``fnopt.chain``)."""
    from ._chain import public

    for name in __all__:
        if name[0].islower():
            globals()[name] = public(globals()[name])


_follow_the_keyword_rule()
