"""Test configuration: strict dtype promotion everywhere, warnings are errors
(see pyproject), and ``FNOPT_X64=1`` runs the suite with x64 enabled."""

import os

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
if os.environ.get("FNOPT_X64") == "1":
    jax.config.update("jax_enable_x64", True)

X64 = bool(jax.config.jax_enable_x64)


@pytest.fixture
def x64_enabled():
    """Whether the suite runs with x64 (``FNOPT_X64=1``)."""
    return X64


@pytest.fixture
def load_example():
    """Imports ``examples/<name>.py`` as a module (examples are not a package)."""
    import importlib.util
    import pathlib

    examples = pathlib.Path(__file__).resolve().parent.parent / "examples"

    def load(name):
        spec = importlib.util.spec_from_file_location(name, examples / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
