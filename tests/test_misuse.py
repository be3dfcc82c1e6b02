"""Misuse caught where it can be (issue 14, item 5): an early stopping that is
not last in ``fnopt.chain``, and PyTorch spellings or typos of an alias's
arguments."""

import pytest

import fnopt
from fnopt import transforms as T


def test_chain_rejects_an_early_stopping_that_is_not_last():
    with pytest.raises(ValueError, match=r"`chain\(...\)`: `early_stopping` is member 0 of 2; it must be the last"):
        fnopt.chain(T.early_stopping(patience=3), fnopt.sgd(0.1))
    with pytest.raises(ValueError, match="member 1 of 3"):
        fnopt.chain(fnopt.sgd(0.1), T.early_stopping(), T.add_decayed_weights(0.1))
    fnopt.chain(fnopt.sgd(0.1), T.reduce_on_plateau(), T.early_stopping())  # last: fine


@pytest.mark.parametrize("make, message", [
    (lambda: fnopt.adam(lr=1e-3), r"`adam\(...\)` got an unexpected keyword argument 'lr'; did you mean learning_rate\?"),
    (lambda: fnopt.adamw(betas=(0.9, 0.99)), r"'betas'; did you mean b1 and b2\?"),
    (lambda: fnopt.sgd(0.1, momentun=0.9), r"'momentun'; did you mean momentum\?"),
    (lambda: fnopt.rprop(etas=(0.5, 1.2)), r"did you mean eta_minus and eta_plus\?"),
    (lambda: fnopt.adam(foreach=True), r"'foreach'; did you mean nothing"),
    (lambda: fnopt.rprop(weight_decay=0.1), r"this optimizer has no weight decay"),
])
def test_alias_keyword_typos_and_torch_names_get_a_did_you_mean(make, message):
    with pytest.raises(TypeError, match=message):
        make()
