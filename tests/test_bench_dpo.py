"""scripts/bench_dpo.py at a minuscule size: its pieces run, the JSON has its documented keys, TRL and align agree.

The four configurations run in this process (the script runs each in its own subprocess for per-configuration
peak RSS; that only changes where ``run_worker`` is called from), with a 2-layer model, 2 steps and 1 repetition.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import HH, REPO

pytest.importorskip("trl")
pytest.importorskip("datasets")

RATIO_KEYS = {"align_warm_vs_trl_live", "align_warm_vs_trl_precompute", "peak_memory_vs_trl_live",
              "cache_build_vs_bare_forward"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_dpo", REPO / "scripts" / "bench_dpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_args(bench, tmp_path, *extra: str):
    return bench.build_parser().parse_args(
        ["--quick", "--steps", "2", "--batch-size", "2", "--reps", "1", "--model-layers", "2", "--model-hidden", "64",
         "--model-intermediate", "128", "--loss-steps", "2", "--data", str(HH), "--output", str(tmp_path / "b.json"),
         *extra]
    )


@pytest.mark.skipif(not HH.exists(), reason="shared HH data not present")
def test_benchmark_pieces_end_to_end(bench, tmp_path, small_model_dir):
    # The session's small tokenizer (512 BPE tokens) keeps this fast; the script defaults to embedded:tiny.
    # 10 steps: the loss-agreement window (TRL vs align, both with the packed forward on align's side)
    plan = bench.make_plan(tiny_args(bench, tmp_path, "--tokenizer", str(small_model_dir), "--steps", "10",
                                     "--loss-steps", "10"))
    assert plan["markdown"] is None  # quick mode writes no docs/benchmarks.md unless --markdown is given
    # quick: 10 of the full run's 16 batches of 2 pairs (the full run's 32 pairs)
    assert plan["rows"] == 32 and plan["select_batches"] and plan["configs"] == list(bench.CONFIGS)

    summary = bench.run_benchmark(plan, tmp_path / "work", in_process=True, log=lambda msg: None)

    assert set(summary["ratios"]) == RATIO_KEYS
    for key, value in summary["ratios"].items():
        assert value is not None and math.isfinite(value) and value > 0, (key, value)
    assert set(summary["targets"]) == RATIO_KEYS

    la = summary["loss_agreement"]
    assert {"steps", "max_abs_diff", "trl", "align"} <= set(la)
    assert la["steps"] == 10 and len(la["trl"]) == len(la["align"]) == 10
    assert la["trl"][0] == pytest.approx(math.log(2), abs=1e-6)  # random init: policy = reference at step 1
    assert la["trl"][1] != pytest.approx(la["trl"][0], abs=1e-5)  # and the update did move the loss
    assert la["max_abs_diff"] < 1e-4, la

    # TRL tokenized the conversational rows itself and got align's ids on every pair.
    assert summary["data"]["trl_identical_ids"] == {"rows": 20, "identical": 20}
    picked = summary["data"]["selected_from"]
    assert picked["pairs"] == 32 and len(picked["picked"]) == len(set(picked["picked"])) == 10
    assert picked["picked_max_padded_tokens_per_step"] == picked["full_max_padded_tokens_per_step"]
    runs = summary["configs"]
    assert runs["align_cold"]["runs"][0]["cache"]["computed"] == 40  # entries: 20 pairs, 2 sequences each
    assert runs["align_warm"]["runs"][0]["cache"]["hits"] == 40
    assert runs["trl_precompute"]["median"]["setup_seconds"] > 0
    assert runs["align_cold"]["median"]["bare_forward_seconds"] > 0
    for name in bench.CONFIGS:
        m = runs[name]["median"]
        assert m["steps_per_second"] > 0 and m["tokens_per_second"] > 0 and m["peak_rss_mb"] > 0
        assert runs[name]["runs"][0]["steps"] == 10

    # The table and a strict-JSON file, as main() writes them.
    table = bench.render_markdown(summary, "python scripts/bench_dpo.py --quick")
    assert "| align, warm cache |" in table and "Loss agreement" in table and "Quick smoke run" in table
    from align.io import json_text

    loaded = json.loads(json_text(summary))
    assert set(loaded["ratios"]) == RATIO_KEYS


def test_markdown_default_only_outside_quick_mode(bench, tmp_path):
    args = bench.build_parser().parse_args([])
    assert bench.make_plan(args)["markdown"] == bench.DEFAULT_MARKDOWN
    args = bench.build_parser().parse_args(["--quick", "--markdown", str(tmp_path / "m.md")])
    assert bench.make_plan(args)["markdown"] == str(tmp_path / "m.md")


def test_gpu_plan_builds_on_cpu(bench, small_model_dir, capsys):
    """--device cuda cannot run here; its plan (a Qwen2-0.5B-shaped config) is built and counted on the meta device."""
    plan = bench.main(["--device", "cuda", "--dry-run", "--tokenizer", str(small_model_dir)])
    assert plan["mode"] == "cuda" and plan["dtype"] == "bfloat16"
    assert plan["model_config"]["model_type"] == "qwen2"
    assert 480e6 < plan["parameters"] < 510e6  # Qwen2-0.5B: 494 M with its 151,936-token embedding
    assert "Not run" in capsys.readouterr().out


def test_help_documents_every_flag(bench):
    text = bench.build_parser().format_help()
    for flag in ("--quick", "--output", "--markdown", "--reps", "--steps", "--batch-size", "--max-prompt-length",
                 "--max-response-length", "--rows", "--device", "--seed", "--peak-tflops", "--dry-run"):
        assert flag in text


@pytest.mark.skipif(not HH.exists(), reason="shared HH data not present")
def test_interleaved_workers_never_compute_at_once(bench, tmp_path, small_model_dir):
    """The four worker processes take turns: their turns (monotonic-clock intervals from each process) never
    overlap, every configuration ran every step, and each worker's timed steps exclude its waiting."""
    plan = bench.make_plan(tiny_args(bench, tmp_path, "--tokenizer", str(small_model_dir), "--steps", "3"))
    assert not plan["sequential"]
    summary = bench.run_benchmark(plan, tmp_path / "work", log=lambda msg: None)
    runs = {c: v["runs"][0] for c, v in summary["configs"].items()}
    assert set(runs) == set(bench.CONFIGS)
    turns = sorted((a, b, c) for c, r in runs.items() for a, b in r["turns"])
    assert all(len(runs[c]["turns"]) == 3 + 1 for c in runs)  # setup to step 1, steps 1-2, step 3 to exit
    for (a0, b0, c0), (a1, b1, c1) in zip(turns, turns[1:]):
        assert a0 <= b0 <= a1, f"{c0} {a0:.3f}-{b0:.3f} overlaps {c1} {a1:.3f}-{b1:.3f}"
    for r in runs.values():
        assert r["steps"] == 3 and r["waited_for_turns_seconds"] > 0
        # waiting is not training time: the loop's clock runs only in the turns after setup (the first wait, at
        # step 1, spans the other workers' whole setups, seconds against these steps' milliseconds)
        assert r["train_seconds"] <= sum(b - a for a, b in r["turns"][1:]) + 0.25
    assert summary["loss_agreement"]["max_abs_diff"] < 1e-4
