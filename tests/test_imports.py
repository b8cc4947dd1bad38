"""Every module imports (catches syntax errors and undefined names at import time)."""

import importlib
import pkgutil

import pytest

import align

MODULES = sorted(m.name for m in pkgutil.walk_packages(align.__path__, "align."))


@pytest.mark.parametrize("name", MODULES)
def test_import(name):
    importlib.import_module(name)
