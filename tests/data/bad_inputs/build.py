"""Write the bad-input corpus (the files beside this one) and its index, ``index.json``.

    python tests/data/bad_inputs/build.py

Each case is one small file (or directory) holding one kind of bad input, most with a good row beside the
bad one so a test sees that the good row is kept. The expected results in ``CASES`` are derived by hand from
the rows written here, not by running the loader. The committed files are what the tests read; run this only
to change the corpus (gzip and parquet bytes may differ between library versions, the rows do not).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

H, A = "\n\nHuman:", "\n\nAssistant:"
TRL = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
HH = {"chosen": f"{H} Hi there{A} Hello!", "rejected": f"{H} Hi there{A} Go away"}
RANKED = {"prompt": "Name a colour.", "responses": ["red", "blue", "sand"], "scores": [2.0, 1.0, 0.0]}
TRL_LINE = json.dumps(TRL)


def oasst(ranks: list[Any], text: str = "How are you?") -> dict[str, Any]:
    """An OASST tree: one prompter message and one assistant reply per rank."""
    replies = [{"message_id": f"r{i}", "text": f"reply {i}", "role": "assistant", "rank": r, "replies": []}
               for i, r in enumerate(ranks)]
    root = {"message_id": "m0", "text": text, "role": "prompter", "replies": replies}
    return {"message_tree_id": "t1", "prompt": root}


def jl(*rows: Any) -> bytes:
    """jsonl bytes; a str row is written as it is (for invalid JSON and literal escapes)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode("utf-8")


def member(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def corrupt_member(data: bytes) -> bytes:
    """A gzip member whose deflate data starts with a block of the reserved type 3 (zlib: invalid block type)."""
    m = bytearray(member(data))
    m[10] = 0x07  # the first byte after the 10-byte header: BFINAL=1, BTYPE=11
    return bytes(m)


def parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


LONG_ROW = json.dumps({"prompt": "Tell me a story.", "chosen": "Once upon a time " * 40, "rejected": "No."})

# kind -> (file name, content (bytes, a callable that writes the path, or a dict of files for a directory),
#          expected result). Expected: examples kept and skips by reason (lenient), the strict-mode DataError
#          (a regex; None when strict loads the same), or a DataError in both modes ("error").
CASES: dict[str, tuple[str, Any, dict[str, Any]]] = {
    # --- text that no tokenizer takes
    "lone_surrogate_response": ("lone_surrogate_response.jsonl",
                                jl(TRL, '{"prompt": "p", "chosen": "ok \\udfff", "rejected": "b"}'),
                                {"format": "trl", "examples": 1, "skipped": {"invalid text (lone surrogate)": 1},
                                 "strict": r"^row 2: invalid text \(lone surrogate\)$"}),
    "lone_surrogate_prompt": ("lone_surrogate_prompt.jsonl",
                              jl('{"prompt": "\\ud800 hi", "responses": ["a", "b"], "ranks": [0, 1]}', RANKED),
                              {"format": "ranked", "examples": 1, "skipped": {"invalid text (lone surrogate)": 1},
                               "strict": r"^row 1: invalid text \(lone surrogate\)$"}),
    "lone_surrogate_oasst_reply": ("lone_surrogate_oasst_reply.jsonl",
                                   jl(json.dumps(oasst([0, 1])).replace("reply 1", "reply \\udfff")),
                                   {"format": "oasst", "examples": 0,
                                    "skipped": {"invalid text (lone surrogate)": 1},
                                    "strict": r"^row 1: invalid text \(lone surrogate\)$"}),
    "invalid_utf8": ("invalid_utf8.jsonl", jl(TRL) + b'{"prompt": "p", "chosen": "\xff\xfe", "rejected": "b"}\n',
                     {"format": "trl", "examples": 1, "skipped": {"invalid utf-8": 1},
                      "strict": r"^row 2: invalid utf-8$"}),
    # --- compressed streams
    "corrupt_gzip": ("corrupt_gzip.jsonl.gz", member(jl(TRL, RANKED)) + corrupt_member(jl(HH)),
                     {"examples": 2, "skipped": {"corrupt compressed stream": 1},
                      "strict": r"^row 3: corrupt compressed stream \(.*invalid block type"}),
    "corrupt_gzip_at_start": ("corrupt_gzip_at_start.jsonl.gz", corrupt_member(jl(TRL)),
                              {"error": r"corrupt_gzip_at_start\.jsonl\.gz: cannot read: corrupt compressed stream"}),
    # a 9 MiB line (gzip makes it 9 KiB): read past in pieces and skipped, not parsed and tokenized for minutes
    "line_too_long": ("line_too_long.jsonl.gz",
                      member(jl(TRL, {**TRL, "chosen": "four " * (9 * 2**20 // 5)}, {**TRL, "prompt": "What is 3+3?"})),
                      {"format": "trl", "examples": 2, "skipped": {"line too long (8 MiB or more)": 1},
                       "strict": r"^row 2: line too long \(8 MiB or more\)"}),
    "truncated_gzip": ("truncated_gzip.jsonl.gz", member(jl(TRL, HH)) + member(LONG_ROW.encode())[:60],
                       {"examples": 2, "skipped": {"truncated compressed stream": 1},
                        "strict": r"^row 3: truncated compressed stream"}),
    "gz_suffix_plain_text": ("gz_suffix_plain_text.jsonl.gz", jl(TRL),
                             {"format": "trl", "examples": 1, "skipped": {}, "strict": None}),
    "gzip_with_trailing_garbage": ("gzip_with_trailing_garbage.json.gz", member(jl(TRL)) + b"garbage",
                                   {"format": "trl", "examples": 1, "skipped": {"corrupt compressed stream": 1},
                                    "strict": r"^row 2: corrupt compressed stream \(trailing garbage"}),
    # --- JSON that parses badly
    "invalid_json": ("invalid_json.jsonl", jl(TRL, '{"prompt": "p", "chosen": "a", '),
                     {"format": "trl", "examples": 1, "skipped": {"invalid json": 1},
                      "strict": r"^row 2: invalid json$"}),
    "deep_nesting": ("deep_nesting.jsonl", jl("[" * 3000, TRL),
                     {"format": "trl", "examples": 1, "skipped": {"invalid json": 1},
                      "strict": r"^row 1: invalid json$"}),
    "huge_int_literal": ("huge_int_literal.jsonl",
                         jl('{"prompt": "p", "responses": ["a", "b"], "ranks": [0, ' + "9" * 5000 + "]}"),
                         {"format": "ranked", "examples": 0, "skipped": {"invalid json": 1},
                          "strict": r"^row 1: invalid json$"}),
    "not_an_object": ("not_an_object.jsonl", jl([1, 2], "null", '"text"', TRL),
                      {"format": "trl", "examples": 1, "skipped": {"not an object": 3},
                       "strict": r"^row 1: not an object$"}),
    "json_scalar": ("json_scalar.json", b"42\n", {"examples": 0, "skipped": {"not an object": 1},
                                                  "strict": r"^row 1: not an object$"}),
    "json_list_with_bad_items": ("json_list_with_bad_items.json",
                                 json.dumps([TRL, 7, {"prompt": "p", "chosen": "a"}]).encode(),
                                 {"format": "trl", "examples": 1,
                                  "skipped": {"not an object": 1, "missing field 'rejected'": 1},
                                  "strict": r"^row 2: not an object$"}),
    "binary_garbage": ("binary_garbage.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\n",
                       {"examples": 0, "skipped": {"invalid utf-8": 2, "invalid json": 1},
                        "strict": r"^row 1: invalid utf-8$"}),
    "empty_file": ("empty_file.jsonl", b"", {"format": "trl", "examples": 0, "skipped": {}, "strict": None}),
    "whitespace_only": ("whitespace_only.json", b"  \n\t\n \r\n",
                        {"format": "trl", "examples": 0, "skipped": {}, "strict": None}),
    # --- encodings and line endings that must read correctly
    "utf8_bom": ("utf8_bom.jsonl", b"\xef\xbb\xbf" + jl(TRL, HH),
                 {"examples": 2, "skipped": {}, "strict": None}),
    "crlf_line_endings": ("crlf_line_endings.jsonl", jl(TRL, RANKED).replace(b"\n", b"\r\n"),
                          {"examples": 2, "skipped": {}, "strict": None}),
    "utf16_bom": ("utf16_bom.jsonl", jl(TRL).decode().encode("utf-16"),
                  {"format": "trl", "examples": 1, "skipped": {}, "strict": None}),
    "line_separator_in_text": ("line_separator_in_text.json",
                               (json.dumps({**TRL, "chosen": "4\u2028four"}, ensure_ascii=False) + "\n"
                                + TRL_LINE + "\n").encode(),
                               {"format": "trl", "examples": 2, "skipped": {}, "strict": None}),
    # --- rows with missing or mistyped fields
    "missing_field": ("missing_field.jsonl", jl({"prompt": "p", "chosen": "a"}, TRL),
                      {"format": "trl", "examples": 1, "skipped": {"missing field 'rejected'": 1},
                       "strict": r"^row 1: missing field 'rejected'$"}),
    "null_field": ("null_field.jsonl", jl({**TRL, "prompt": None}),
                   {"format": "trl", "examples": 0, "skipped": {"missing field 'prompt'": 1},
                    "strict": r"^row 1: missing field 'prompt'$"}),
    "wrong_type": ("wrong_type.jsonl", jl({**TRL, "chosen": 3}),
                   {"format": "trl", "examples": 0, "skipped": {"wrong type for 'chosen'": 1},
                    "strict": r"^row 1: wrong type for 'chosen'$"}),
    "wrong_type_responses": ("wrong_type_responses.jsonl", jl({**RANKED, "responses": "red, blue"}),
                             {"format": "ranked", "examples": 0, "skipped": {"wrong type for 'responses'": 1},
                              "strict": r"^row 1: wrong type for 'responses'$"}),
    "missing_labels": ("missing_labels.jsonl", jl({"prompt": "p", "responses": ["a", "b"]}),
                       {"format": "ranked", "examples": 0, "skipped": {"missing field 'ranks' or 'scores'": 1},
                        "strict": r"^row 1: missing field 'ranks' or 'scores'$"}),
    "unrecognised_row": ("unrecognised_row.jsonl", jl({"question": "q", "answer": "a"}, TRL),
                         {"examples": 1, "skipped": {"unrecognised row format": 1},
                          "strict": r"^row 1: unrecognised row format \(fields: 'answer', 'question'\); accepted "
                                    r"row formats: .*data\.columns"}),
    "empty_prompt": ("empty_prompt.jsonl", jl({**TRL, "prompt": " \n "}),
                     {"format": "trl", "examples": 0, "skipped": {"empty prompt": 1},
                      "strict": r"^row 1: empty prompt$"}),
    "empty_response": ("empty_response.jsonl", jl({**TRL, "rejected": "   "}),
                       {"format": "trl", "examples": 0, "skipped": {"empty response": 1},
                        "strict": r"^row 1: empty response$"}),
    "identical_responses": ("identical_responses.jsonl", jl({**TRL, "chosen": " 4", "rejected": "4 "}),
                            {"format": "trl", "examples": 0, "skipped": {"identical responses": 1},
                             "strict": r"^row 1: identical responses$"}),
    "list_of_one": ("list_of_one.jsonl", jl({"prompt": "p", "responses": ["only"], "ranks": [0]}),
                    {"format": "ranked", "examples": 0, "skipped": {"fewer than 2 responses": 1},
                     "strict": r"^row 1: fewer than 2 responses$"}),
    "labels_do_not_match": ("labels_do_not_match.jsonl", jl({"prompt": "p", "responses": ["a", "b", "c"],
                                                             "ranks": [0, 1]}),
                            {"format": "ranked", "examples": 0, "skipped": {"labels do not match responses": 1},
                             "strict": r"^row 1: labels do not match responses$"}),
    # --- labels
    "non_numeric_label": ("non_numeric_label.jsonl", jl({"prompt": "p", "responses": ["a", "b"], "ranks": ["0", "1"]},
                                                        {"prompt": "p", "responses": ["a", "b"], "ranks": [0, True]}),
                          {"format": "ranked", "examples": 0, "skipped": {"non-numeric label": 2},
                           "strict": r"^row 1: non-numeric label$"}),
    "nan_and_infinity_labels": ("nan_and_infinity_labels.jsonl",
                                jl('{"prompt": "p", "responses": ["a", "b"], "scores": [NaN, 0]}',
                                   '{"prompt": "p", "responses": ["a", "b"], "scores": [-Infinity, 0]}'),
                                {"format": "ranked", "examples": 0, "skipped": {"non-numeric label": 2},
                                 "strict": r"^row 1: non-numeric label$"}),
    "oasst_huge_rank": ("oasst_huge_rank.jsonl",  # rank 10**400: an int no float holds
                        jl(json.dumps(oasst([0, 1])).replace('"rank": 1', '"rank": 1' + "0" * 400)),
                        {"format": "oasst", "examples": 0, "skipped": {"non-numeric label": 1},
                         "strict": r"^row 1: non-numeric label$"}),
    "label_beyond_float32": ("label_beyond_float32.jsonl",
                             jl({"prompt": "p", "responses": ["a", "b"], "scores": [1e308, 0.0]}, RANKED),
                             {"format": "ranked", "examples": 1, "skipped": {"label out of range": 1},
                              "strict": r"^row 1: label out of range$"}),
    "label_span_beyond_float32": ("label_span_beyond_float32.jsonl",
                                  jl({"prompt": "p", "responses": ["a", "b"], "scores": [3e38, -3e38]}),
                                  {"format": "ranked", "examples": 0, "skipped": {"label out of range": 1},
                                   "strict": r"^row 1: label out of range$"}),
    "all_tied": ("all_tied.jsonl", jl({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}),
                 {"format": "ranked", "examples": 0, "skipped": {"all responses tied": 1},
                  "strict": r"^row 1: all responses tied$"}),
    "tied_in_float32": ("tied_in_float32.jsonl",
                        jl({"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 1.0000000001]}),
                        {"format": "ranked", "examples": 0, "skipped": {"all responses tied": 1},
                         "strict": r"^row 1: all responses tied$"}),
    # --- dialogues and messages
    "prompt_mismatch": ("prompt_mismatch.jsonl", jl({"chosen": f"{H} a{A} x", "rejected": f"{H} b{A} y"}, HH),
                        {"format": "hh", "examples": 1, "skipped": {"prompt mismatch": 1},
                         "strict": r"^row 1: prompt mismatch$"}),
    "malformed_dialogue": ("malformed_dialogue.jsonl", jl({"chosen": "Human: a. Assistant: x",
                                                           "rejected": "Human: a. Assistant: y"}),
                           {"format": "hh", "examples": 0, "skipped": {"malformed dialogue": 1},
                            "strict": r"^row 1: malformed dialogue$"}),
    "conversation_ends_with_user": ("conversation_ends_with_user.jsonl",
                                    jl({"prompt": [{"role": "user", "content": "q"}],
                                        "chosen": [{"role": "user", "content": "a"}],
                                        "rejected": [{"role": "assistant", "content": "b"}]}),
                                    {"format": "trl", "examples": 0, "skipped": {"malformed dialogue": 1},
                                     "strict": r"^row 1: malformed dialogue$"}),
    "malformed_message": ("malformed_message.jsonl", jl({"message_tree_id": "t", "prompt": {"role": "prompter",
                                                                                             "replies": []}}),
                          {"format": "oasst", "examples": 0, "skipped": {"malformed message": 1},
                           "strict": r"^row 1: malformed message$"}),
    "oasst_notes_only": ("oasst_notes_only.jsonl", jl(oasst([0, 1, None])),
                         {"format": "oasst", "examples": 1, "skipped": {"unranked reply": 1}, "strict": None}),
    # --- column mapping
    "columns_missing_mapped_field": ("columns_missing_mapped_field.jsonl",
                                     jl({"question": "q", "response_j": "good", "response_k": "bad"},
                                        {"question": "q2", "response_j": "good"},
                                        {"question": "q3", "response_j": 5, "response_k": "bad"}),
                                     {"format": "trl", "examples": 1,
                                      "columns": {"question": "prompt", "response_j": "chosen",
                                                  "response_k": "rejected"},
                                      "skipped": {"missing field 'response_k'": 1, "wrong type for 'response_j'": 1},
                                      "strict": r"^row 2: missing field 'response_k'$"}),
    # --- parquet
    "parquet_wrong_types": ("parquet_wrong_types.parquet",
                            lambda p: parquet([{"prompt": "p", "chosen": 1, "rejected": 2}], p),
                            {"format": "trl", "examples": 0, "skipped": {"wrong type for 'chosen'": 1},
                             "strict": r"^row 1: wrong type for 'chosen'$"}),
    "parquet_null_cells": ("parquet_null_cells.parquet",
                           lambda p: parquet([TRL, {"prompt": "p", "chosen": "a", "rejected": None}], p),
                           {"format": "trl", "examples": 1, "skipped": {"missing field 'rejected'": 1},
                            "strict": r"^row 2: missing field 'rejected'$"}),
    "not_parquet": ("not_parquet.parquet", jl(TRL), {"error": r"not_parquet\.parquet: cannot read parquet"}),
    "unsupported_suffix": ("unsupported_suffix.csv", b"prompt,chosen,rejected\np,a,b\n",
                           {"error": r"unsupported_suffix\.csv: unsupported file type"}),
    # --- directories
    "directory_good_and_bad": ("directory_good_and_bad",
                               {"a_good.jsonl": jl(TRL, HH), "b_bad.jsonl": jl(TRL, "{oops", [3])},
                               {"examples": 3, "skipped": {"invalid json": 1, "not an object": 1},
                                "strict": r"^row 4 \(b_bad\.jsonl:2\): invalid json$"}),
    "directory_unreadable_file": ("directory_unreadable_file",
                                  {"a.parquet": b"PAR1 this is not parquet", "b.jsonl": jl(TRL)},
                                  {"format": "trl", "examples": 1, "skipped": {"unreadable file": 1},
                                   "strict": r"^row 1 \(a\.parquet\): unreadable file \(.*cannot read parquet"}),
    "directory_without_data_files": ("directory_without_data_files", {"notes.txt": b"nothing here\n"},
                                     {"error": r"no data files"}),
}


def main() -> None:
    index = {}
    for kind, (name, content, expected) in CASES.items():
        path = HERE / name
        if path.is_dir():
            shutil.rmtree(path)
        if isinstance(content, dict):
            path.mkdir()
            for file, data in content.items():
                (path / file).write_bytes(data)
        elif callable(content):
            content(path)
        else:
            path.write_bytes(content)
        index[kind] = {"path": name, "format": expected.get("format"), "columns": expected.get("columns", {}),
                       **({"error": expected["error"]} if "error" in expected else
                          {"examples": expected["examples"], "skipped": expected["skipped"],
                           "strict": expected["strict"]})}
    (HERE / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"{len(index)} cases written to {HERE}")


if __name__ == "__main__":
    main()
