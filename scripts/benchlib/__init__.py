"""The benchmark scripts' shared machinery (``scripts/bench_*.py``), not part of the installed package.

Generic modules, used by every benchmark:

    process   configurations in separate interpreters taking turns (``run_interleaved``), the worker side of the
              turns (``Turns``), one-time initialisation before any clock
    timing    the training-loop clock (a Trainer callback that stops while a worker waits for its turn), steady
              state after untimed warm-up steps
    memory    a process's own peak resident set size (``VmHWM``)
    machine   the machine / versions header and load averages
    batches   picking a few of a full run's batches for ``--quick`` so that its ratios are the full run's
    models    the benchmark models (the embedded tiny shape, the Qwen2-vocabulary one), built once and saved
    report    medians, ratios, ``--compare-to`` and the markdown header / comparison table, writing outputs

Per-benchmark modules: ``dpo_worker`` / ``dpo_report`` (scripts/bench_dpo.py) and ``grpo_worker`` /
``grpo_report`` (scripts/bench_grpo.py).

The scripts put this folder on ``sys.path`` (``scripts/`` is the script's own directory when run as a script).
"""

import os as _os
from pathlib import Path as _Path

# embedded:tiny's tokenizer corpus, the folder the recipes name (workers inherit it)
_os.environ.setdefault("ALIGN_DATA_DIR", str(_Path(__file__).resolve().parents[2].parent / "shared" / "data"))
