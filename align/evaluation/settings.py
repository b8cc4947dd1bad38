"""The tokenization settings ``align eval`` scores a trained model with: by default the ones its run trained with.

A model ``align train`` saved records its run's ``data`` settings in ``align_model.json``; a model of an older run
is read through the ``recipe.json`` of its run directory (the model directory's parent). So ``align eval --model
RUN/model --split eval`` measures the run's own held-out sequences, truncated as the run truncated them, and reads
the run's reference entries from the cache instead of computing new ones. The chat template is the tokenizer's
saved with the model, the one the run trained with. A setting given explicitly (a flag, a field of
:class:`~align.evaluation.run.EvalRequest`) overrides the run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from align.models.loading import MODEL_INFO

# What `align eval` takes from the run, and its own default for a model no run recorded.
DEFAULTS: dict[str, Any] = {"max_prompt_length": 512, "max_response_length": 512, "eval_fraction": 0.1}


def run_data_settings(model: str) -> tuple[dict[str, Any], str | None]:
    """``({setting: value}, where it was read)`` for the settings of :data:`DEFAULTS` that ``model``'s run recorded,
    or ``({}, None)`` for a model no ``align train`` run saved (a hub id, a plain directory)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return {}, None
    for source, read in ((path / MODEL_INFO, lambda d: d.get("data")),
                         (path.parent / "recipe.json", lambda d: d.get("data"))):
        if not source.is_file():
            continue
        try:
            data = read(json.loads(source.read_text()))
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable file records nothing; the defaults apply and the printout says so
        found = {k: data[k] for k in DEFAULTS if isinstance(data, dict) and isinstance(data.get(k), (int, float))}
        if found:
            return found, str(source)
    return {}, None


def resolve_settings(model: str, given: dict[str, Any]) -> dict[str, Any]:
    """The value of each setting of :data:`DEFAULTS` and where it came from: ``given`` (not None) wins, then the
    run's, then the default. Returns ``{"max_prompt_length": 96, ..., "from": {"max_prompt_length": "run", ...},
    "run_settings": PATH or None}``."""
    run, source = run_data_settings(model)
    out: dict[str, Any] = {"from": {}}
    for key, default in DEFAULTS.items():
        if given.get(key) is not None:
            out[key], out["from"][key] = given[key], "flag"
        elif key in run:
            out[key], out["from"][key] = run[key], "run"
        else:
            out[key], out["from"][key] = default, "default"
    out["run_settings"] = source
    return out


def settings_line(settings: dict[str, Any], chat_template: bool) -> str:
    """One line saying which lengths (and split fraction, chat template) the evaluation used and why."""
    parts = []
    for key in DEFAULTS:
        where = {"flag": "given", "run": "the run's", "default": "default"}[settings["from"][key]]
        parts.append(f"{key} {settings[key]:g} ({where})")
    src = f" (run settings: {settings['run_settings']})" if settings.get("run_settings") else ""
    template = "the model's tokenizer's chat template" if chat_template else "no chat template (plain-text prompts)"
    return f"settings: {', '.join(parts)}; {template}{src}"
