"""Every docstring example in the package runs and prints what it says
(under the suite's strict dtype promotion)."""

import doctest
import importlib
import pkgutil

import pytest

import fnopt

MODULES = sorted(
    name for _, name, _ in pkgutil.iter_modules(fnopt.__path__, prefix="fnopt.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, x64_enabled):
    if x64_enabled:
        pytest.skip("the examples print float32 values")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
