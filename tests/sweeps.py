"""Which cases of an exhaustive sweep the default test run keeps.

A sweep checks one property over every alias, schedule or hyperparameter. The
default run (the README's test command, under five minutes on two cores) keeps a
representative few of each; the other cases carry the ``slow`` marker, and CI
runs them in a step of their own (``pytest -m slow``), so CI still checks every
case. The few are chosen to span the code paths, not at random:

- optimizers: plain SGD, the Adam family (moments, decoupled decay), a sign
  update (Lion), factored second moments (Adafactor), matrix updates (Muon),
  learning-rate-free (Prodigy) and schedule-free (its own params average);
- schedules: a constant, a decay, warm restarts (a while loop over periods),
  a cycle, a join of pieces, one-cycle, warmup-stable-decay.
"""

import pytest

OPTIMIZERS = ("sgd", "adam", "adamw", "lion", "adafactor", "muon", "prodigy", "schedule_free_adamw")
SCHEDULES = ("constant", "cosine_decay", "cosine_warm_restarts", "cyclic", "join", "one_cycle", "warmup_stable_decay")


def split(cases, fast):
    """``cases`` as pytest params, those for which ``fast(case)`` is false marked
    slow. A tuple case gives one argument per item."""
    return [pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=() if fast(case) else pytest.mark.slow)
            for case in cases]


def _name(case):
    return case[0] if isinstance(case, tuple) else case


def sweep(cases, keep):
    """``cases`` as pytest params, those whose name (the case, or its first
    item when it is a tuple) is not in ``keep`` marked slow.

    A name in ``keep`` that no case has is an error, so a renamed alias cannot
    silently drop out of the default run.
    """
    keep = set(keep)
    missing = keep - {_name(case) for case in cases}
    if missing:
        raise ValueError(f"sweep(keep=...): no case is named {sorted(missing)}")
    return split(cases, lambda case: _name(case) in keep)


def kernel_modes(names, xla_keep):
    """``(name, mode)`` params for a test run with the fused kernel
    (``FNOPT_FUSED`` ``"1"``) and without it (``"0"``, XLA's path): every name
    with the kernel, only ``xla_keep`` without it by default (XLA's path is the
    plain ``update`` + ``apply_updates``, which the rest of the suite checks)."""
    xla = sweep([(name, "0") for name in names], xla_keep)
    return [*xla, *split([(name, "1") for name in names], lambda case: True)]
