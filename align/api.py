"""The Python API: the command line's jobs as functions, for notebooks and scripts.

    import align

    recipe = align.load_recipe("recipes/dpo_tiny.yaml", ["train.max_steps=20", "loss.beta=0.2"])
    summary = align.train(recipe, output_dir="runs/notebook", quiet=True)
    report = align.evaluate(summary["model_dir"], "../shared/data/hh_rlhf_harmless_base.jsonl.gz", split="eval")
    stats = align.build_reference_cache("recipes/lipo_tiny.yaml")

Each returns the same dictionary the command writes as JSON (``summary.json``, ``align eval --output``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.config import Recipe, load_recipe
from align.console import quiet
from align.errors import ConfigError

__all__ = ["build_reference_cache", "evaluate", "load_recipe", "quiet", "train"]


def _recipe(recipe: str | os.PathLike | Recipe, overrides: Sequence[str] | None) -> tuple[Recipe, list[Path]]:
    if isinstance(recipe, Recipe):
        if overrides:
            raise ConfigError("overrides apply to a recipe file; change a Recipe object's fields directly")
        return recipe, ([recipe.recipe_dir] if recipe.recipe_dir else []) + [Path.cwd()]
    return load_recipe(recipe, list(overrides or [])), [Path(recipe).resolve().parent, Path.cwd()]


def train(recipe: str | os.PathLike | Recipe, overrides: Sequence[str] | None = None, *,
          output_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
          quiet: bool = False, **online: Any) -> dict[str, Any]:
    """Run a recipe (a YAML path with dotted ``overrides``, or a :class:`~align.config.Recipe`), as ``align train``
    does; returns the ``summary.json`` dictionary. ``quiet`` silences progress bars and info logs. Relative paths
    are looked up beside the recipe file (a loaded recipe remembers its folder), then in the working directory.

    A GRPO recipe also takes TRL's ``reward_funcs`` (callables with TRL's reward-function signature,
    ``module:function`` strings or reward-model paths) with ``reward_weights``, and ``train_dataset`` /
    ``eval_dataset`` (a ``datasets.Dataset`` or a list of dicts with a ``prompt`` column), which replace
    ``loss.rewards``, ``data.train`` and ``data.eval``."""
    from align.pipeline import run_training

    r, search = _recipe(recipe, overrides)
    allowed = {"reward_funcs", "reward_weights", "train_dataset", "eval_dataset"}
    if set(online) - allowed:
        raise TypeError(f"train() got unexpected keyword arguments {sorted(set(online) - allowed)}")
    with _quiet(quiet):
        if any(v is not None for v in online.values()):
            from align.online_run import run_grpo
            from align.trainers import ALGORITHMS

            if not ALGORITHMS[r.algorithm].online:
                raise ConfigError(f"{sorted(k for k, v in online.items() if v is not None)} apply to algorithm grpo, "
                                 f"not {r.algorithm!r}")
            return run_grpo(r, output_dir, resume=resume, overwrite=overwrite, search_dirs=search,
                            progress=not quiet, **online)
        return run_training(r, output_dir, resume=resume, overwrite=overwrite, search_dirs=search,
                            progress=not quiet)


def evaluate(model: str | os.PathLike, data: str | os.PathLike, *, quiet: bool = False,
             **options: Any) -> dict[str, Any]:
    """``align eval --model MODEL --data DATA`` as a function; ``options`` are the fields of
    :class:`align.evaluation.run.EvalRequest` (``scorer``, ``reference``, ``split``, ``max_rows``,
    ``resamples``, ``per_example``, ...). Returns the dictionary ``--output`` writes."""
    from align.evaluation.run import EvalRequest, run_eval

    with _quiet(quiet):
        return run_eval(EvalRequest(model=str(model), data=str(data), progress=not quiet, **options))


def build_reference_cache(recipe: str | os.PathLike | Recipe, overrides: Sequence[str] | None = None, *,
                          quiet: bool = False) -> dict[str, Any]:
    """``align cache RECIPE`` as a function: fill (or verify) the reference cache of a recipe's data; returns
    ``{"reference_cache": {...}, "data": {...}}``."""
    from align.pipeline import prepare_policy, recipe_reference

    r, search = _recipe(recipe, overrides)
    with _quiet(quiet):
        tokenizer, data, _, policy, _ = prepare_policy(r, search, progress=not quiet)
        reference = recipe_reference(r, policy, tokenizer, data, progress=not quiet)
        if reference is None:
            raise ConfigError(f"algorithm {r.algorithm!r} uses no reference model: there is no cache to build")
        stats = reference.prefetch(data.train + data.eval) if reference.live is not None else reference.stats
    return {"reference_cache": stats.to_dict(), "data": data.to_dict()}


_quiet = quiet
