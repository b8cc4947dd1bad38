"""scripts/benchlib: the --quick batch picking, the --compare-to arithmetic and the turn-taking of worker processes."""

from __future__ import annotations

import random
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from benchlib import batches, process, report  # noqa: E402


def _costs(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` batches of 4 pairs with random prompt / response lengths, as (real, padded) token counts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lengths = [rng.randint(5, 120) + rng.randint(1, 100) for _ in range(8)]
        out.append((sum(lengths), max(lengths) * len(lengths)))
    return out


def test_quick_picks_the_costliest_batch_and_the_full_runs_mean_cost():
    costs = _costs(16)
    picked = batches.representative_batches(costs, steps=6, warmup=2)
    assert len(picked) == len(set(picked)) == 6
    costliest = max(range(16), key=lambda k: costs[k][1])
    assert picked[:2] == [0, costliest] or (costliest == 0 and picked[1] == costliest)  # warm-up: first, costliest
    timed = picked[2:]
    assert timed == sorted(timed) and all(k >= 2 for k in timed)  # from the full run's timed batches, in order
    for j in (0, 1):  # real and padded tokens per step: within 5% of the full run's timed mean
        full = sum(costs[k][j] for k in range(2, 16)) / 14
        got = sum(costs[k][j] for k in timed) / 4
        assert abs(got - full) / full < 0.05, (j, got, full)
    chosen, info = batches.pick(costs, 6, 2)
    assert chosen == picked and info["batches"] == 16
    assert info["picked_max_padded_tokens_per_step"] == info["full_max_padded_tokens_per_step"]


def test_quick_refuses_more_steps_than_the_full_run_has_batches():
    with pytest.raises(SystemExit, match="picks 7"):
        batches.representative_batches([(3, 4)] * 6, steps=7, warmup=2)


def test_compare_ratios_flags_what_is_outside_the_tolerance():
    this = {"ratios": {"a": 1.1, "b": 2.0, "c": None, "nested": {"max_abs_diff": 0.0}}}
    other = {"ratios": {"a": 1.0, "b": 1.5, "c": 3.0}}
    cmp = report.compare_ratios(this, other, "full.json")
    assert cmp["ratios"]["a"]["within_tolerance"] is True and cmp["ratios"]["a"]["relative_difference"] == \
        pytest.approx(0.1)
    assert cmp["ratios"]["b"]["within_tolerance"] is False
    assert cmp["ratios"]["c"]["within_tolerance"] is None and "nested" not in cmp["ratios"]
    table = "\n".join(report.compare_lines(cmp))
    assert "| `a` | 1.10 | 1.00 | +10.0% | yes |" in table and "| `b` |" in table


WORKER = '''
import json, sys, time
sys.path.insert(0, {scripts!r})
from benchlib import process
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
turns = process.set_turns(args["--turns"])
turns.start()
for _ in range(3):
    time.sleep(0.02)  # a "step"
    turns.wait()
json.dump({{"config": args["--worker"], "turns": turns.finish()}}, open(args["--result"], "w"))
'''


def test_interleaved_workers_never_compute_at_once(tmp_path):
    """Three worker processes take turns: their turns (monotonic-clock intervals from each process) never overlap
    and each took one turn per step plus the first and the last."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(scripts=str(REPO / "scripts")))
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    got = process.run_interleaved(script, ["a", "b", "c"], spec, tmp_path, "t")
    assert set(got) == {"a", "b", "c"}
    turns = sorted((s, e, c) for c, r in got.items() for s, e in r["turns"])
    assert all(len(r["turns"]) == 4 for r in got.values())
    for (a0, b0, c0), (a1, b1, c1) in zip(turns, turns[1:]):
        assert b0 <= a1, f"{c0} {a0:.3f}-{b0:.3f} overlaps {c1} {a1:.3f}-{b1:.3f}"


def test_a_failing_worker_reports_its_log(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text("raise SystemExit('no such data')\n")
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    with pytest.raises(RuntimeError, match="no such data"):
        process.run_interleaved(script, ["a"], spec, tmp_path, "t")
