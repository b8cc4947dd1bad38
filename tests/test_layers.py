"""The layers of ``docs/architecture.md`` hold: ``lint-imports`` (import-linter, configured in ``pyproject.toml``)
passes, and its contracts rule out the upward imports and cycles the package once had."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _layer_of() -> dict[str, tuple[int, bool]]:
    """module → (position from the top, whether its layer's modules are independent of one another)."""
    (contract,) = [c for c in _config()["contracts"] if c["type"] == "layers"]
    out = {}
    for i, layer in enumerate(contract["layers"]):
        independent = ":" not in layer
        for name in layer.replace(":", "|").split("|"):
            out[name.strip()] = (i, independent)
    return out


def _position(module: str, layers: dict[str, tuple[int, bool]]) -> tuple[str, int, bool]:
    for name, (i, independent) in sorted(layers.items(), key=lambda kv: -len(kv[0])):
        if module == name or module.startswith(name + "."):
            return name, i, independent
    raise AssertionError(f"{module} is in no layer of the import-linter contract")


def test_lint_imports_passes():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    cmd = [exe] if exe else [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([*cmd, "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


# Imports the package once had that made a cycle or pointed upward: each must be refused by the layers contract
# (the importer sits below the imported module, or beside it in a layer of independent modules).
UPWARD = [
    ("align.config", "align.trainers"),  # the schema read the trainer registry, which imports every loss ...
    ("align.losses.dpo", "align.config"),  # ... and every loss imported the schema for its range checks
    ("align.config", "align.online.scoring"),  # the schema resolved reward functions through the sampling package
    ("align.online_run", "align.pipeline"),  # the GRPO run used the offline run's private helpers
    ("align.models.loading", "align.reference.build"),
    ("align.data.prompts", "align.tasks"),
    ("align.tasks.preferences", "align.online.generation"),
    ("align.trainers.grpo", "align.online_run"),
    ("align.evaluation.task", "align.pipeline"),
    ("align.study.runs", "align.api"),  # the study trained through the public face
    ("align.losses.grpo", "align.trainers"),
    ("align.reference.provider", "align.trainers.base"),
]


@pytest.mark.parametrize("importer, imported", UPWARD)
def test_contract_refuses_the_old_upward_imports(importer, imported):
    layers = _layer_of()
    a, ia, independent = _position(importer, layers)
    b, ib, _ = _position(imported, layers)
    assert ia > ib or (ia == ib and a != b and independent), f"{importer} -> {imported} would be allowed"


def test_old_cycles_are_gone():
    graph = grimp.build_graph("align")
    for importer, imported in [("align.evaluation.task", "align.evaluation.run"),
                               ("align.online_run", "align.pipeline"),
                               ("align.config", "align.trainers")]:
        assert not graph.chain_exists(importer=importer, imported=imported), (importer, imported)
    assert not any(c["type"] == "acyclic_siblings" and "ignore_imports" in c for c in _config()["contracts"])


def test_every_module_is_in_a_layer():
    layers = _layer_of()
    graph = grimp.build_graph("align")
    unplaced = []
    for m in sorted(graph.modules - {"align", "align.online"}):  # the root and a namespace-like package __init__
        try:
            _position(m, layers)
        except AssertionError:
            unplaced.append(m)
    assert not unplaced, f"modules outside every layer (add them to pyproject.toml's layers): {unplaced}"


def test_schema_and_trainers_agree_on_the_algorithms():
    from align.losses import LOSSES
    from align.trainers import ALGORITHMS

    assert set(LOSSES) == set(ALGORITHMS)
    for name, algo in ALGORITHMS.items():
        assert algo.spec is LOSSES[name]
