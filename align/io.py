"""Machine-readable outputs: strict JSON (NaN and infinities become null), written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def json_text(obj: Any) -> str:
    """JSON for the machine-readable outputs: NaN and infinities (e.g. an accuracy over zero pairs) become null,
    so strict parsers read the file; anything else non-serialisable becomes its string."""

    def clean(o: Any) -> Any:
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), indent=1, default=str, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write :func:`json_text` of ``obj`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json_text(obj) + "\n")
    os.replace(tmp, path)
    return path
