"""Importing user reward functions named ``module:function`` (light: the recipe schema checks them at load).

Where the module is looked up: first in the given directories (for a recipe, the recipe's own directory: a
``myrewards.py`` or a package ``myrewards/`` beside the YAML file), then on Python's import path (``sys.path``:
installed packages, the working directory when Python was started with ``-m`` or a script, ``PYTHONPATH``). A
module found beside the recipe wins over one of the same name on the path; its directory is added to the end of
``sys.path``, so the module can import its neighbours without them shadowing an installed package. (A module of
that name that the process has already imported from a library stays: name yours apart from the libraries you
use.)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType

from align.errors import ConfigError

# The directories searched first while a recipe is being loaded (set by align.config.load_recipe).
_MODULE_DIRS: ContextVar[tuple[Path, ...]] = ContextVar("reward_module_dirs", default=())
_BESIDE: dict[str, Path] = {}  # top-level module name → the recipe directory it was imported from


@contextlib.contextmanager
def modules_beside(*dirs: str | Path | None) -> Iterator[None]:
    """Within the block, :func:`resolve_function` looks for modules in ``dirs`` before the import path."""
    token = _MODULE_DIRS.set(tuple(Path(d).resolve() for d in dirs if d) + _MODULE_DIRS.get())
    try:
        yield
    finally:
        _MODULE_DIRS.reset(token)


def module_dirs() -> tuple[Path, ...]:
    """The directories searched first at this point (those of the enclosing :func:`modules_beside` blocks)."""
    return _MODULE_DIRS.get()


def _origin(module: ModuleType) -> Path | None:
    """The directory that holds ``module`` (its file's, or a package's parent)."""
    file = getattr(module, "__file__", None)
    if file:
        p = Path(file).resolve()
        return p.parent.parent if p.name == "__init__.py" else p.parent
    path = list(getattr(module, "__path__", []) or [])
    return Path(path[0]).resolve().parent if path else None


def _prefer(module: str, dirs: Sequence[Path]) -> None:
    """When ``module``'s top-level name is a file ``NAME.py`` or a package ``NAME/`` in one of ``dirs``, import that
    one (from its file) under that name; its directory is appended to ``sys.path`` for its own imports."""
    top = module.split(".", 1)[0]
    for d in dirs:
        file, package = d / f"{top}.py", d / top / "__init__.py"
        if not (file.is_file() or package.is_file()):
            continue
        if str(d) not in sys.path:
            sys.path.append(str(d))  # after the installed packages: a neighbour never shadows a library
        cached = sys.modules.get(top)
        if cached is not None and (_origin(cached) == d or top not in _BESIDE):
            return  # already this one; or a library's module of that name, which stays (it may be running)
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]  # another recipe's module of that name
        path = package if package.is_file() else file
        spec = importlib.util.spec_from_file_location(
            top, path, submodule_search_locations=[str(package.parent)] if path == package else None)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[top] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            del sys.modules[top]
            raise ConfigError(f"reward module {path} cannot be imported: {type(e).__name__}: {e}") from e
        _BESIDE[top] = d
        return


def resolve_function(path: str, search_dirs: Sequence[str | Path] = ()) -> Callable[..., Sequence[float | None]]:
    """The function ``module:function`` names (importing the module, looked up in ``search_dirs``, then in the
    directories of :func:`modules_beside`, then on the import path); a one-line ConfigError if it cannot be had."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"reward function {path!r}: expected 'module:function'")
    dirs = [Path(d).resolve() for d in search_dirs] + list(module_dirs())
    _prefer(module, dirs)
    try:
        mod = importlib.import_module(module)
        fn = getattr(mod, name)
    except AttributeError as e:
        origin = _origin(mod)
        shadow = next((d for d in dirs if origin != d and ((d / f"{module.split('.')[0]}.py").is_file())), None)
        hint = f" (the module imported is {origin}; the one in {shadow} has the name of a module imported " \
            "before: rename it)" if shadow else ""
        raise ConfigError(f"reward function {path!r} cannot be imported: {e}{hint}") from e
    except ImportError as e:
        where = f" (looked beside the recipe in {', '.join(map(str, dict.fromkeys(dirs)))}, then on sys.path)" \
            if dirs else " (looked on sys.path)"
        raise ConfigError(f"reward function {path!r} cannot be imported: {e}{where}") from e
    if not callable(fn):
        raise ConfigError(f"reward function {path!r} is not callable")
    return fn
