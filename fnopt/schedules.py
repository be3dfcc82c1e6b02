"""Learning-rate (and any hyperparameter) schedules: pure functions of the step.

Every factory returns ``schedule(step) -> value`` where ``step`` is the number
of updates already applied (the first update uses step 0), as ``last_epoch``
in PyTorch and ``count`` in Optax. Steps may be ints, floats (fractional
epochs) or arrays. Values are closed forms of the step, exact to the
precision of the default float dtype, finite for every step in
``[0, 2**31)``.

Every numeric hyperparameter may be a traced JAX value, so ``jax.vmap`` over a
grid of, say, ``max_value`` or ``total_steps`` works; only strings and
booleans (``anneal``, ``mode``, ``three_phase``, ``warmup_shape``, ``cycle``,
...) are static. Concrete invalid hyperparameters raise ``ValueError`` at
construction; traced ones are not checked.
"""

from ._anytime import inverse_sqrt as inverse_sqrt
from ._anytime import inverse_time_decay as inverse_time_decay
from ._anytime import warmup_stable_decay as warmup_stable_decay
from ._averaging import swa as swa
from ._compose import join as join
from ._compose import multiply as multiply
from ._compose import warmup as warmup
from ._cycles import combined_cos as combined_cos
from ._cycles import cosine_warm_restarts as cosine_warm_restarts
from ._cycles import cyclic as cyclic
from ._cycles import cyclic_momentum as cyclic_momentum
from ._cycles import linear_warm_restarts as linear_warm_restarts
from ._cycles import one_cycle as one_cycle
from ._cycles import one_cycle_momentum as one_cycle_momentum
from ._decay import Schedule as Schedule
from ._decay import constant as constant
from ._decay import cosine_decay as cosine_decay
from ._decay import exponential_decay as exponential_decay
from ._decay import exponential_range as exponential_range
from ._decay import linear as linear
from ._decay import multistep_decay as multistep_decay
from ._decay import polynomial_decay as polynomial_decay
from ._decay import step_decay as step_decay

__all__ = [
    "Schedule",
    "combined_cos",
    "constant",
    "cosine_decay",
    "cosine_warm_restarts",
    "cyclic",
    "cyclic_momentum",
    "exponential_decay",
    "exponential_range",
    "inverse_sqrt",
    "inverse_time_decay",
    "join",
    "linear",
    "linear_warm_restarts",
    "multiply",
    "multistep_decay",
    "one_cycle",
    "one_cycle_momentum",
    "polynomial_decay",
    "step_decay",
    "swa",
    "warmup",
    "warmup_stable_decay",
]
