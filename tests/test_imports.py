"""Every module imports (catches syntax errors and undefined names at import time)."""

import importlib
import pkgutil

import pytest

import align

# align.__main__ runs the command line when imported (python -m align); test_cli covers it.
MODULES = sorted(m.name for m in pkgutil.walk_packages(align.__path__, "align.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_import(name):
    importlib.import_module(name)
