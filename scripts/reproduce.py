"""Do the papers' claims hold? Train every arm of the five comparisons over several seeds on the sort task (and HH
for Chen et al.), score every policy by sampling with the true rule, and write ``docs/results.md`` and a JSON file.

    python scripts/reproduce.py --quick --output R.json          # all five claims, minutes on 2 CPU cores
    python scripts/reproduce.py --output results.json            # the full run behind docs/results.md
    python scripts/reproduce.py --until-decided --max-seeds 8     # add seeds to undecided claims, up to 8

Runs are kept under ``--work-dir`` (default ``runs/reproduce`` or ``runs/reproduce-quick``) and reused, so a killed
run continues where it stopped. The pieces live in :mod:`align.study`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ALIGN_DATA_DIR", str(REPO.parent / "shared" / "data"))  # embedded:tiny's tokenizer corpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer seeds, steps and prompts (a few minutes on 2 CPU "
                   "cores); still every claim")
    p.add_argument("--output", help="write the claims as JSON here")
    p.add_argument("--work-dir", help="runs, data and caches (default runs/reproduce[-quick])")
    p.add_argument("--doc", help="the Markdown page (default docs/results.md for a full run, WORK_DIR/results.md "
                   "for --quick)")
    p.add_argument("--seeds", type=lambda t: tuple(int(x) for x in t.split(",")), help="e.g. 1,2,3,4,5")
    p.add_argument("--until-decided", action="store_true", help="after the starting seeds, add one seed at a time "
                   "to the claims still undecided (reusing finished runs) until all are decided or --max-seeds")
    p.add_argument("--max-seeds", type=int, help="the seed budget of --until-decided (default: the starting seeds)")
    a = p.parse_args(argv)
    if a.max_seeds is not None and not a.until_decided:
        p.error("--max-seeds applies to --until-decided")

    work = Path(a.work_dir or REPO / "runs" / ("reproduce-quick" if a.quick else "reproduce")).resolve()
    os.environ["ALIGN_HOME"] = str(work / "home")  # caches and the embedded model stay with the study
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # the models are a few million parameters, too small for intra-op threads to pay; on a busy 2-core machine two
    # threads made the SFT steps ~15x slower than one. Set OMP_NUM_THREADS to choose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from align.study.claims import claims, collect_seed, context, distances, groups
    from align.study.results import environment, markdown
    from align.study.runs import QUICK, Settings, Study
    from align.study.stats import run_until_decided

    settings = QUICK if a.quick else Settings()
    if a.seeds:
        settings = dataclasses.replace(settings, seeds=a.seeds)
    t0 = time.perf_counter()
    study = Study(work, settings, log=lambda m: print(f"[{time.perf_counter() - t0:6.0f}s] {m}", flush=True))
    values: dict = defaultdict(lambda: defaultdict(dict))
    if a.until_decided:
        budget = a.max_seeds if a.max_seeds is not None else len(settings.seeds)
        if budget < len(settings.seeds):
            p.error(f"--max-seeds {budget} is below the {len(settings.seeds)} starting seeds")

        def decide(key: str, seeds: list[int]) -> str:
            mine = [c for c in claims(values, settings, {key: seeds}) if c["key"] == key]
            return "undecided" if any(c["verdict"] == "undecided" for c in mine) else "decided"

        used = run_until_decided(groups(settings), settings.seeds, budget,
                                 lambda seed, keys: collect_seed(study, seed, keys, values), decide)
    else:
        for seed in settings.seeds:
            collect_seed(study, seed, None, values)
        used = {k: list(settings.seeds) for k in groups(settings)}
    # wall time over every invocation that built this work folder (a resumed study adds up)
    spent = work / "wall.json"
    wall = time.perf_counter() - t0 + (json.loads(spent.read_text())["seconds"] if spent.exists() else 0.0)
    spent.write_text(json.dumps({"seconds": wall}))
    args = sys.argv[1:] if argv is None else argv
    result = {"quick": a.quick, "command": " ".join(["python", "scripts/reproduce.py", *map(shlex.quote, args)]),
              "settings": settings.to_dict(), "environment": environment(),
              "wall_seconds": round(wall, 1), "context": context(values),
              "seeds_by_claim": used, "distance_from_sft": distances(values),
              "stopped_at": {run: dict(by) for run, by in values.get("stopped_at", {}).items()},
              "claims": claims(values, settings, used)}
    doc = Path(a.doc) if a.doc else (work / "results.md" if a.quick else REPO / "docs" / "results.md")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(result))
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(json.dumps(result, indent=1))
    for c in result["claims"]:
        d = c["difference"]
        need = f", about {c['seeds_needed']} seeds needed" if c["verdict"] == "undecided" else ""
        print(f"{c['verdict']:>10}  {c['claim']}  (difference {d['mean']:+.3f}, CI {d['ci']}, δ "
              f"{c['smallest_effect']:g}, {c['seeds']} seeds{need})")
    print(f"wrote {doc}" + (f" and {a.output}" if a.output else "") + f" in {result['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
