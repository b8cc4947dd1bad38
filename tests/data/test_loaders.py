"""Tests of align.data.loaders on the shared real data and on hand-made rows."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import random
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from align.data.example import DataError, LoadReport, RankedExample
from align.data.loaders import load_examples, split_examples

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HH = SHARED / "hh_rlhf_harmless_base.jsonl.gz"
OASST = SHARED / "oasst_en_trees.jsonl"
A = "\n\nAssistant:"


@pytest.fixture(scope="module")
def hh():
    return load_examples(HH)


@pytest.fixture(scope="module")
def oasst():
    return load_examples(OASST)


def _hh_raw() -> list[dict]:
    with gzip.open(HH, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _oasst_raw() -> list[dict]:
    with open(OASST, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _all_finite(examples: list[RankedExample]) -> bool:
    return all(math.isfinite(s) for ex in examples for s in ex.labels)


# --------------------------------------------------------------------------------------------
# the shared HH-RLHF file


def test_hh_counts_match_an_independent_count(hh):
    examples, report = hh
    # Independent count: split each text at its last Assistant marker.
    expected = Counter()
    for row in _hh_raw():
        (pc, _, rc), (pr, _, rr) = row["chosen"].rpartition(A), row["rejected"].rpartition(A)
        if pc != pr:
            expected["prompt mismatch"] += 1
        elif not rc.strip() or not rr.strip():
            expected["empty response"] += 1
        elif rc.strip() == rr.strip():
            expected["identical responses"] += 1
    assert report.rows_read == 1500
    assert expected["empty response"] > 0
    # The README says some rows have identical chosen and rejected text; this slice has none
    # (identical rows are covered by the broken-rows test below). Keep the count honest.
    assert report.skipped["identical responses"] == expected["identical responses"] == 0
    assert dict(report.skipped) == {k: v for k, v in expected.items() if v}
    assert report.examples == len(examples) == 1500 - sum(expected.values()) == 1495
    assert all(ex.label_kind == "pair" and ex.labels == (1.0, 0.0) and len(ex.responses) == 2 for ex in examples)
    assert _all_finite(examples)
    assert [ex.row for ex in examples] == sorted({ex.row for ex in examples})


def test_hh_spot_check_first_row(hh):
    examples, _ = hh
    raw = _hh_raw()[0]
    ex = examples[0]
    assert ex.row == 0
    assert ex.prompt == [
        {"role": "user", "content": "what are some pranks with a pen i can do?"},
        {"role": "assistant", "content": "Are you looking for practical joke ideas?"},
        {"role": "user", "content": "yep"},
        {"role": "assistant", "content": raw["chosen"].split(A)[2].split("\n\nHuman:")[0].strip()},
        {"role": "user", "content": "okay some of these do not have anything to do with pens"},
    ]
    assert ex.responses == (raw["chosen"].split(A)[-1].strip(), raw["rejected"].split(A)[-1].strip())
    assert ex.responses[1].startswith("There are lots of funny things you can do with pens")


def test_hh_prompts_alternate_and_end_with_user(hh):
    examples, _ = hh
    for ex in examples:
        roles = [m["role"] for m in ex.prompt]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:])), (
            ex.row
        )  # rows 667, 763, 1319 have 2 Assistant turns in a row
    merged = next(ex for ex in examples if ex.row == 763)
    assert [m["role"] for m in merged.prompt] == ["user", "assistant", "user"]
    assert "Wow, that sounds very intense." in merged.prompt[1]["content"]


def test_max_rows_and_log_lines(caplog):
    with caplog.at_level(logging.INFO, logger="align.data"):
        examples, report = load_examples(HH)
    assert "skipped 4 rows: empty response" in caplog.text
    assert "skipped 1 rows: prompt mismatch" in caplog.text
    examples, report = load_examples(HH, max_rows=10)
    assert report.rows_read == 10 and report.examples == len(examples) == 10
    _, report = load_examples(OASST, max_rows=3)
    assert report.rows_read == 3


# --------------------------------------------------------------------------------------------
# the shared OASST file


def test_oasst_counts(oasst):
    examples, report = oasst
    assert report.rows_read == 75
    assert report.examples == len(examples) == 161
    assert dict(report.skipped) == {"unranked reply": 1}  # counts replies, not rows
    sizes = Counter(len(ex.responses) for ex in examples)
    assert min(sizes) == 2 and max(sizes) == 9 and sizes.most_common(1)[0][0] == 3
    for ex in examples:
        assert ex.label_kind == "rank"
        assert all(a >= b for a, b in zip(ex.labels, ex.labels[1:]))  # ordered by rank, best first
        assert ex.prompt[-1]["role"] == "user"
        assert [m["role"] for m in ex.prompt] == ["user", "assistant"] * (len(ex.prompt) // 2) + ["user"]
    assert _all_finite(examples)


def _find(node: dict, text_start: str, path: list[dict]) -> tuple[dict, list[dict]] | None:
    path = path + [node]
    if node["text"].startswith(text_start):
        return node, path
    for reply in node["replies"]:
        found = _find(reply, text_start, path)
        if found:
            return found
    return None


def test_oasst_list_by_hand(oasst):
    examples, _ = oasst
    raw = _oasst_raw()
    # Tree 58 has a prompter message "thank youuu!!!" deep in the tree with 3 ranked replies and one unranked.
    node, path = _find(raw[58]["prompt"], "thank youuu", [])
    ex = next(e for e in examples if e.meta["message_id"] == node["message_id"])
    assert ex.row == 58
    assert ex.prompt == [
        {"role": "user" if m["role"] == "prompter" else "assistant", "content": m["text"].strip()} for m in path
    ]
    assert len(ex.prompt) > 2
    ranked = sorted((r for r in node["replies"] if r.get("rank") is not None), key=lambda r: r["rank"])
    assert len(ranked) == 3 and len(node["replies"]) == 4
    assert ex.responses == tuple(r["text"].strip() for r in ranked)
    assert ex.labels == (0.0, -1.0, -2.0)
    # The root of the first tree: one user message and its three replies in rank order.
    first = examples[0]
    root = raw[0]["prompt"]
    assert first.row == 0 and first.prompt == [{"role": "user", "content": root["text"].strip()}]
    assert first.responses == tuple(r["text"].strip() for r in sorted(root["replies"], key=lambda r: r["rank"]))


def test_oasst_strict_ignores_unranked_replies():
    _, report = load_examples(OASST, strict=True, format="oasst")
    assert report.examples == 161 and report.skipped == {"unranked reply": 1}


# --------------------------------------------------------------------------------------------
# hand-made rows: every skip reason and every format

HH_GOOD = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! ",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away",
}
TRL_CONV = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    "chosen": [{"role": "assistant", "content": "4"}],
    "rejected": [{"role": "assistant", "content": "5"}],
}
TRL_IMPLICIT = {
    "chosen": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}],
    "rejected": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Lyon"}],
}

# (json line, expected skip reason or None for a good row)
ROWS: list[tuple[str, str | None]] = [
    (json.dumps(HH_GOOD), None),
    ('{"chosen": "x", ', "invalid json"),
    ("[1, 2]", "not an object"),
    (json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}), None),  # TRL standard
    (json.dumps({"prompt": "p", "chosen": "a"}), "missing field 'rejected'"),
    (json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"}), "wrong type for 'chosen'"),
    (json.dumps(TRL_CONV), None),
    (json.dumps({"prompt": "p", "chosen": "  ", "rejected": "b"}), "empty response"),
    (json.dumps({"prompt": "p", "chosen": " same", "rejected": "same "}), "identical responses"),
    (json.dumps(TRL_IMPLICIT), None),
    (json.dumps({"prompt": "p", "responses": ["only"], "ranks": [0]}), "fewer than 2 responses"),
    (json.dumps({"prompt": "p", "responses": ["a", "b", "c"], "ranks": [0, 1]}), "labels do not match responses"),
    ('{"prompt": "p", "responses": ["a", "b"], "scores": [1.0, NaN]}', "non-numeric label"),
    ('{"prompt": "p", "responses": ["a", "b"], "scores": [Infinity, 0]}', "non-numeric label"),
    (json.dumps({"prompt": "p", "responses": ["a", "b"], "ranks": [0, True]}), "non-numeric label"),
    (json.dumps({"prompt": "p", "responses": ["a", "b"], "ranks": ["0", "1"]}), "non-numeric label"),
    (json.dumps({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 10**400]}), "non-numeric label"),
    (json.dumps({"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]}), None),  # ranks, with a tie
    (json.dumps({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 0]}), "all responses tied"),
    (json.dumps({"prompt": "p", "responses": ["x", {"content": "y"}], "scores": [0.5, 2]}), None),  # scores
    (json.dumps({"question": "p", "answer": "a"}), "unrecognised row format"),
    (json.dumps({"prompt": " \n", "chosen": "a", "rejected": "b"}), "empty prompt"),
    (json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "xstest"}), None),  # RewardBench
    (
        json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}),
        "prompt mismatch",
    ),
    (json.dumps({"chosen": "Human: a. Assistant: x", "rejected": "Human: a. Assistant: y"}), "malformed dialogue"),
    (
        json.dumps(
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            }
        ),
        "malformed dialogue",
    ),
    (json.dumps({"prompt": "p", "responses": ["a", "b"]}), "missing field 'ranks' or 'scores'"),
]
GOOD_EXAMPLES = [
    RankedExample([{"role": "user", "content": "Hi there"}], ("Hello!", "Go away"), (1.0, 0.0), "pair", 0),
    RankedExample("p", ("a", "b"), (1.0, 0.0), "pair", 3),
    RankedExample(TRL_CONV["prompt"], ("4", "5"), (1.0, 0.0), "pair", 6),
    RankedExample([{"role": "user", "content": "Capital of France?"}], ("Paris", "Lyon"), (1.0, 0.0), "pair", 9),
    RankedExample("p", ("a", "b", "c"), (-1.0, 0.0, -1.0), "rank", 17),
    RankedExample("p", ("x", "y"), (0.5, 2.0), "score", 19),
    RankedExample("p", ("a", "b"), (1.0, 0.0), "pair", 22),
]


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_every_skip_reason_and_format(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", [line for line, _ in ROWS])
    examples, report = load_examples(path)
    expected = Counter(reason for _, reason in ROWS if reason)
    assert report.rows_read == len(ROWS)
    assert report.skipped == expected
    assert report.skipped["non-numeric label"] == 5
    assert examples == GOOD_EXAMPLES
    assert [ex.meta for ex in examples] == [{}] * 6 + [{"subset": "xstest"}]
    assert report.examples == len(examples) == len(ROWS) - expected.total()
    assert _all_finite(examples)
    assert all(isinstance(ex.prompt, str) for ex in examples if ex.row in (3, 17, 19, 22))  # no chat template later


def test_strict_mode_names_the_row(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", [line for line, _ in ROWS])
    with pytest.raises(DataError, match=r"^row 2: invalid json$"):
        load_examples(path, strict=True)
    # Line numbers count blank lines too, so the number is the line in an editor.
    good = [line for line, reason in ROWS if reason is None]
    path = _write_jsonl(tmp_path / "strict.jsonl", good[:3] + ["", json.dumps({"prompt": "p", "chosen": "a"})])
    with pytest.raises(DataError, match=r"^row 5: missing field 'rejected'$"):
        load_examples(path, strict=True)
    examples, report = load_examples(_write_jsonl(tmp_path / "good.jsonl", good), strict=True)
    assert report.examples == len(good) and not report.skipped


def test_explicit_format_skips_rows_that_do_not_fit(tmp_path):
    good = [line for line, reason in ROWS if reason is None]
    path = _write_jsonl(tmp_path / "good.jsonl", good)
    examples, report = load_examples(path, format="trl")
    assert [ex.row for ex in examples] == [1, 2, 3, 6]  # TRL standard, conversational, implicit, RewardBench
    assert report.skipped == {"missing field 'prompt'": 1, "missing field 'chosen'": 2}
    examples, report = load_examples(path, format="ranked")
    assert [ex.row for ex in examples] == [4, 5]
    _, report = load_examples(path, format="hh")
    assert report.examples == 1 and report.skipped == {
        "malformed dialogue": 2,
        "wrong type for 'chosen'": 2,
        "missing field 'chosen'": 2,
    }
    _, report = load_examples(OASST, format="hh")
    assert report.examples == 0 and report.skipped == {"missing field 'chosen'": 75}
    with pytest.raises(ValueError, match="unknown format"):
        load_examples(path, format="dpo")


def test_trl_messages_that_repeat_the_prompt(tmp_path):
    user = {"role": "user", "content": "Capital of France?"}
    convo = {k: TRL_IMPLICIT[k] for k in ("chosen", "rejected")}
    rows = [
        {"prompt": "Capital of France?", **convo},  # UltraFeedback-binarized: string prompt, full conversations
        {"prompt": [user], **convo},  # message prompt repeated in the conversations
        {"prompt": [{"role": "system", "content": "Be brief."}], **convo},  # extends the prompt
        {"prompt": "p", "chosen": TRL_IMPLICIT["chosen"], "rejected": [{"role": "assistant", "content": "Lyon"}]},
    ]
    examples, report = load_examples(_write_jsonl(tmp_path / "r.jsonl", [json.dumps(r) for r in rows]))
    assert [ex.prompt for ex in examples] == [[user], [user], [{"role": "system", "content": "Be brief."}, user]]
    assert all(ex.responses == ("Paris", "Lyon") for ex in examples)
    assert report.skipped == {"prompt mismatch": 1}


def test_oasst_bad_lists_are_skipped_per_list(tmp_path):
    def msg(text, role, rank=None, replies=(), deleted=False):
        return {"text": text, "role": role, "rank": rank, "deleted": deleted, "replies": list(replies)}

    tree = msg(
        "Q1",
        "prompter",
        replies=[
            msg(
                "A",
                "assistant",
                0,
                [msg("Q2", "prompter", 0, [msg("same", "assistant", 0), msg("same", "assistant", 1)])],
            ),
            msg("B", "assistant", 1),
            msg("C", "assistant", 1, deleted=True),
            msg("D", "assistant"),
        ],
    )
    path = _write_jsonl(
        tmp_path / "tree.jsonl", [json.dumps({"message_tree_id": "t", "tree_state": "x", "prompt": tree})]
    )
    examples, report = load_examples(path)
    assert report.rows_read == 1
    assert report.skipped == {"identical responses": 1, "unranked reply": 1, "deleted reply": 1}
    assert examples == [RankedExample([{"role": "user", "content": "Q1"}], ("A", "B"), (0.0, -1.0), "rank", 0)]
    with pytest.raises(DataError, match=r"^row 1: identical responses$"):
        load_examples(path, strict=True)


# --------------------------------------------------------------------------------------------
# other file types and sources


def test_json_list_json_lines_and_gzip_read_like_jsonl(tmp_path):
    good = [json.loads(line) for line, reason in ROWS if reason is None]
    lines = [json.dumps(r) for r in good]
    reference, ref_report = load_examples(_write_jsonl(tmp_path / "a.jsonl", lines))
    (tmp_path / "b.json").write_text(json.dumps(good), encoding="utf-8")
    _write_jsonl(tmp_path / "c.json", lines)
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines))
    (tmp_path / "one.json").write_text(json.dumps(good[1], indent=2), encoding="utf-8")  # one object, pretty-printed
    assert load_examples(tmp_path / "one.json")[0] == [RankedExample("p", ("a", "b"), (1.0, 0.0), "pair", 0)]
    for name in ("b.json", "c.json", "d.jsonl.gz"):
        examples, report = load_examples(tmp_path / name)
        assert examples == reference and report.to_dict() == ref_report.to_dict(), name
        assert [ex.meta for ex in examples] == [ex.meta for ex in reference]


def test_parquet_reads_like_jsonl(tmp_path):
    datasets = pytest.importorskip("datasets")
    hh_rows = _hh_raw()[80:120]  # includes row 86, an empty response
    conv = [
        TRL_CONV,
        {**TRL_CONV, "chosen": [{"role": "assistant", "content": "four"}]},
        {**TRL_CONV, "rejected": TRL_CONV["chosen"]},
    ]  # the last: identical responses
    scored = [
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.1, 0.9, float("nan")]},
        {"prompt": "q", "responses": ["a", "b"], "scores": [1.0, 3.0], "subset": "s"},
    ]
    # Columns absent from a row become None in parquet: read as absent (no {"subset": None} meta).
    pairs = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "subset": "s"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "r", "chosen": "a", "rejected": " "},
    ]
    for name, rows in (("hh", hh_rows), ("conv", conv), ("scored", scored), ("pairs", pairs)):
        reference = load_examples(_write_jsonl(tmp_path / f"{name}.jsonl", [json.dumps(r) for r in rows]))
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / f"{name}.parquet"))
        examples, report = load_examples(tmp_path / f"{name}.parquet")
        assert examples == reference[0] and report.to_dict() == reference[1].to_dict(), name
        assert [ex.meta for ex in examples] == [ex.meta for ex in reference[0]], name
        assert sum(report.skipped.values()) == 1, name  # each holds one bad row
    assert load_examples(tmp_path / "hh.parquet", max_rows=5)[1].rows_read == 5


def test_missing_local_file_is_a_data_error(tmp_path):
    for source in (tmp_path / "nope.jsonl", str(tmp_path / "nope"), "data/train.jsonl", "./nope"):
        with pytest.raises(DataError, match="no such file") as info:
            load_examples(source)
        assert str(source) in str(info.value)
    with pytest.raises(DataError, match="no data source given"):
        load_examples("")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "rows.csv")


def test_unreachable_hub_name_is_a_fast_data_error(monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # The flag is read when these modules are imported, so set it there too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"cannot load dataset 'nonexistent-org/nonexistent-dataset-xyz' from the hub"):
        load_examples("nonexistent-org/nonexistent-dataset-xyz")
    assert time.perf_counter() - start < 10


# --------------------------------------------------------------------------------------------
# split_examples


def _key(ex: RankedExample) -> str:
    return ex.prompt if isinstance(ex.prompt, str) else json.dumps(ex.prompt, sort_keys=True, ensure_ascii=False)


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def test_split_examples(hh):
    examples, _ = hh
    train, held_out = split_examples(examples, eval_fraction=0.2)
    assert (train, held_out) == split_examples(examples, eval_fraction=0.2)  # deterministic
    assert len(train) + len(held_out) == len(examples)
    assert {ex.row for ex in train}.isdisjoint(ex.row for ex in held_out)
    assert [ex.row for ex in train] == sorted(ex.row for ex in train)  # order kept
    assert [ex.row for ex in held_out] == sorted(ex.row for ex in held_out)
    assert {_key(ex) for ex in train}.isdisjoint(_key(ex) for ex in held_out)  # a prompt never on both sides
    prompts = {_key(ex) for ex in examples}
    assert len({_key(ex) for ex in held_out}) == round(0.2 * len(prompts))
    # The rule itself: the prompts with the lowest sha256 go to eval.
    cut = sorted(_sha(k) for k in prompts)[round(0.2 * len(prompts)) - 1]
    assert all(_sha(_key(ex)) <= cut for ex in held_out) and all(_sha(_key(ex)) > cut for ex in train)
    assert split_examples(examples, 0.0) == (examples, []) and split_examples(examples, 1.0) == ([], examples)
    with pytest.raises(ValueError):
        split_examples(examples, 1.5)


def test_split_gives_the_requested_size_on_a_small_file():
    # 40 prompts at 0.1: exactly 4 held out (a hash threshold gave anywhere from 0 to 12 here).
    one = [RankedExample(f"prompt {i}", ("a", "b"), (1.0, 0.0), "pair", i) for i in range(40)]
    train, held = split_examples(one, 0.1)
    assert len(held) == 4 and len(train) == 36
    lowest = sorted(range(40), key=lambda i: _sha(f"prompt {i}"))[:4]
    assert [ex.row for ex in held] == sorted(lowest)
    # Each prompt twice: both copies on one side, still 4 prompts held out.
    two = one + [RankedExample(f"prompt {i}", ("c", "d"), (1.0, 0.0), "pair", 40 + i) for i in range(40)]
    train2, held2 = split_examples(two, 0.1)
    assert len(held2) == 8 and {ex.prompt for ex in held2} == {ex.prompt for ex in held}
    assert {ex.prompt for ex in train2}.isdisjoint(ex.prompt for ex in held2)
    # A reordered input: the same examples on each side, each side in its input order.
    shuffled = random.Random(0).sample(two, len(two))
    train3, held3 = split_examples(shuffled, 0.1)
    assert [ex.row for ex in held3] == [ex.row for ex in shuffled if ex in held2]
    assert [ex.row for ex in train3] == [ex.row for ex in shuffled if ex in train2]
    # At least one prompt held out, never all of them (unless asked), never any of a single prompt.
    assert len(split_examples(one[:2], 0.01)[1]) == 1
    assert len(split_examples(one, 0.99)[0]) == 1
    assert split_examples(one[:1], 0.9) == (one[:1], [])
    assert split_examples(one, 1.0) == ([], one) and split_examples([], 0.5) == ([], [])


# --------------------------------------------------------------------------------------------
# column mapping, format report, messages


STACK_ROWS = [
    {"qid": 1, "question": "q1", "response_j": "good", "response_k": "bad"},
    {"qid": 2, "question": "q2", "response_j": "good"},
    {"qid": 3, "question": "q3", "response_j": ["x"], "response_k": "bad"},
]
STACK_COLUMNS = {"question": "prompt", "response_j": "chosen", "response_k": "rejected"}


def test_columns_map_the_data_fields_onto_a_format(tmp_path):
    path = _write_jsonl(tmp_path / "stack.jsonl", [json.dumps(r) for r in STACK_ROWS])
    examples, report = load_examples(path, columns=STACK_COLUMNS)
    assert examples == [RankedExample("q1", ("good", "bad"), (1.0, 0.0), "pair", 0)]
    # Skip reasons name the data's own fields.
    assert report.skipped == {"missing field 'response_k'": 1, "wrong type for 'response_j'": 1}
    assert report.formats == {"trl": 1}
    assert load_examples(path)[1].skipped == {"unrecognised row format": 3}  # without the mapping
    with pytest.raises(DataError, match=r"^row 2: missing field 'response_k'$"):
        load_examples(path, columns=STACK_COLUMNS, strict=True)
    # A mapped field replaces a field of the target's name; a swap works.
    rows = [{"prompt": "old", "q": "new", "chosen": "a", "rejected": "b"}]
    path = _write_jsonl(tmp_path / "swap.jsonl", [json.dumps(r) for r in rows])
    (ex,), _ = load_examples(path, columns={"q": "prompt", "chosen": "rejected", "rejected": "chosen"})
    assert ex.prompt == "new" and ex.responses == ("b", "a")
    # Ranked lists with their own names.
    rows = [{"instruction": "i", "completions": ["a", "b", "c"], "ratings": [1, 3, 2]}]
    path = _write_jsonl(tmp_path / "ranked.jsonl", [json.dumps(r) for r in rows])
    (ex,), report = load_examples(path, columns={"instruction": "prompt", "completions": "responses",
                                                 "ratings": "scores"})
    assert ex.labels == (1.0, 3.0, 2.0) and ex.label_kind == "score" and report.formats == {"ranked": 1}


def test_bad_column_mappings_are_clear_errors(tmp_path):
    from align.config import ConfigError, DataConfig, from_dict

    path = _write_jsonl(tmp_path / "stack.jsonl", [json.dumps(r) for r in STACK_ROWS])
    bad = [
        ({"question": "promt"}, r"columns: 'question' maps to unknown field 'promt'; expected one of prompt, chosen"),
        ({"a": "prompt", "b": "prompt"}, r"columns: two fields map to 'prompt'"),
        ({"a": 3}, r"columns: 'a': 3 must map a field name to a field name"),
        ({True: "prompt"}, r"columns: True: 'prompt' must map"),
    ]
    for columns, message in bad:
        with pytest.raises(ValueError, match=message):
            load_examples(path, columns=columns)
        with pytest.raises(ConfigError, match="^data." + message):
            from_dict(DataConfig, {"columns": columns})
    with pytest.raises(ValueError, match="columns must be a mapping"):
        load_examples(path, columns=["question"])
    assert from_dict(DataConfig, {"columns": STACK_COLUMNS}).columns == STACK_COLUMNS
    assert DataConfig().columns == {}


def test_unrecognised_rows_name_the_accepted_formats_once(tmp_path, caplog):
    lines = [json.dumps({"question": "q", "answer": "a"})] * 3 + [json.dumps(HH_GOOD)]
    path = _write_jsonl(tmp_path / "rows.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="align.data"):
        examples, report = load_examples(path)
    assert len(examples) == 1 and report.skipped == {"unrecognised row format": 3}
    hints = [r.getMessage() for r in caplog.records if "accepted row formats" in r.getMessage()]
    assert len(hints) == 1  # once per load, not once per row
    assert hints[0].startswith("row 1: unrecognised row format (fields: 'answer', 'question'); accepted row formats")
    with pytest.raises(DataError) as info:
        load_examples(path, strict=True)
    message = str(info.value)
    assert message.startswith("row 1: unrecognised row format (fields: 'answer', 'question')")
    for schema in ("HH-RLHF {chosen, rejected}", "TRL {prompt, chosen, rejected}",
                   "ranked {prompt, responses, ranks or scores}", "OASST message trees", "data.columns"):
        assert schema in message, schema


def test_report_names_the_detected_formats(tmp_path, caplog):
    path = _write_jsonl(tmp_path / "rows.jsonl", [line for line, _ in ROWS])
    with caplog.at_level(logging.INFO, logger="align.data"):
        _, report = load_examples(path)
        _, hh_report = load_examples(HH, max_rows=20)
    assert report.formats == {"hh": 1, "trl": 4, "ranked": 2}  # the good rows of ROWS
    assert report.to_dict()["formats"] == {"hh": 1, "ranked": 2, "trl": 4}
    assert f"{path}: 27 rows read, 7 examples (formats hh 1, ranked 2, trl 4)" in caplog.text
    assert f"{HH}: 20 rows read, 20 examples (format hh)" in caplog.text
    _, report = load_examples(path, format="ranked")
    assert report.formats == {"ranked": 2}
    merged = LoadReport()
    merged.merge(hh_report)
    merged.merge(report)
    assert merged.to_dict() == {"rows_read": 47, "examples": 22, "skipped": report.to_dict()["skipped"],
                                "formats": {"hh": 20, "ranked": 2}}


# --------------------------------------------------------------------------------------------
# damaged files and directories


def test_corrupt_gzip_stream_keeps_the_rows_before_it(tmp_path, caplog):
    lines = [json.dumps({"prompt": f"question {i}", "chosen": f"yes {i}", "rejected": "no"}) for i in range(400)]
    head, tail = "".join(line + "\n" for line in lines[:300]).encode(), "".join(line + "\n" for line in lines[300:])
    z = zlib.compressobj(wbits=31)
    data = bytearray(z.compress(head) + z.flush(zlib.Z_FULL_FLUSH))
    at = len(data)  # the next deflate block starts on this byte
    data += z.compress(tail.encode()) + z.flush()
    data[at] = 0x07  # a block of the reserved type 3
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(zlib.error):  # what reading it used to raise
        with gzip.open(path, "rt") as f:
            f.read()
    with caplog.at_level(logging.WARNING, logger="align.data"):
        examples, report = load_examples(path)
    # Rows are decompressed a KB at a time: all rows before the break are kept but those of its last KB.
    assert 300 - 1024 // len(lines[0]) - 1 <= len(examples) <= 300
    assert [ex.row for ex in examples] == list(range(len(examples)))
    assert all(ex.prompt == f"question {ex.row}" for ex in examples)
    assert report.skipped == {"corrupt compressed stream": 1} and report.rows_read == len(examples) + 1
    assert "corrupt compressed stream after line" in caplog.text
    with pytest.raises(DataError, match=rf"^row {len(examples) + 1}: corrupt compressed stream \("):
        load_examples(path, strict=True)


def test_directory_is_read_file_by_file_without_a_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def no_hub(*args, **kwargs):
        raise AssertionError("a local directory must not go through datasets.load_dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)  # so no Arrow copy in the user's cache either
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.json").write_text(json.dumps([TRL_CONV, {"prompt": "p", "chosen": "a", "rejected": "b"}]))
    _write_jsonl(data / "b.jsonl", ['{"oops', "", json.dumps(HH_GOOD)])
    with gzip.open(data / "sub" / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(TRL_IMPLICIT) + "\n")
    (data / "README.md").write_text("# my data\n")
    _write_jsonl(data / ".hidden.jsonl", ['{"oops'])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    examples, report = load_examples(data)
    # a.json rows 0-1, b.jsonl lines 0-2 -> rows 2-4, sub/c.jsonl.gz line 0 -> row 5
    assert [ex.row for ex in examples] == [0, 1, 4, 5]
    assert report.rows_read == 5 and report.skipped == {"invalid json": 1}
    assert report.formats == {"trl": 3, "hh": 1}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    with pytest.raises(DataError, match=r"^row 3 \(b\.jsonl:1\): invalid json$"):
        load_examples(data, strict=True)
    # Split names in file names are honoured as datasets does.
    splits = tmp_path / "splits"
    splits.mkdir()
    _write_jsonl(splits / "train.jsonl", [json.dumps(HH_GOOD)])
    _write_jsonl(splits / "test.jsonl", [json.dumps(TRL_CONV), json.dumps(TRL_IMPLICIT)])
    assert load_examples(splits)[1].formats == {"hh": 1}
    assert load_examples(splits, split="test")[1].formats == {"trl": 2}
    with pytest.raises(DataError, match="no 'validation' split"):
        load_examples(splits, split="validation")


def test_text_encodings_and_suffixes(tmp_path):
    good = [json.dumps(HH_GOOD), json.dumps(TRL_CONV)]
    reference, _ = load_examples(_write_jsonl(tmp_path / "ref.jsonl", good))
    text = "\n".join(good) + "\n"
    variants = {
        "bom.jsonl": b"\xef\xbb\xbf" + text.encode(),
        "crlf.jsonl": text.replace("\n", "\r\n").encode(),
        "utf16.jsonl": text.encode("utf-16"),
        "plain.jsonl.gz": text.encode(),  # a .gz name, not compressed
        "gzipped.jsonl": gzip.compress(text.encode()),  # compressed, a plain name
        "bom.json": b"\xef\xbb\xbf" + json.dumps([HH_GOOD, TRL_CONV]).encode(),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        examples, report = load_examples(tmp_path / name)
        assert examples == reference and not report.skipped, name


def test_scores_is_a_deprecated_read_only_alias_of_labels():
    import warnings

    from align.data.example import RankedExample
    from align.data.tokenize import TokenizedList

    for item in (RankedExample("p", ("a", "b"), (1.0, 0.0)), TokenizedList((1,), ((2,), (3,)), (1.0, 0.0))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert item.scores == item.labels == (1.0, 0.0)
        assert [w.category for w in caught] == [DeprecationWarning]
        with pytest.raises(AttributeError):
            item.scores = (0.0, 1.0)
