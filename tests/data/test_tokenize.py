"""Tokenization: chat template, eos, explicit counted truncation that keeps BOS."""

from __future__ import annotations

from align.data.example import RankedExample
from align.data.tokenize import data_fingerprint, tokenize_examples
from align.models.tiny import build_tokenizer, corpus_files

TOK = build_tokenizer(corpus_files()[:1], 512)


def test_chat_prompt_uses_template_and_response_ends_with_end_of_turn():
    ex = RankedExample([{"role": "user", "content": "Hi?"}], ("Hello there.", "Go away."), (1.0, 0.0))
    (t,), rep = tokenize_examples([ex], TOK)
    assert TOK.decode(t.prompt_ids) == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert TOK.decode(t.response_ids[0]) == "Hello there.<|im_end|>\n"
    assert rep.prompts_truncated == rep.responses_truncated == 0


def test_truncation_is_counted_prompt_keeps_its_end_and_bos():
    tok = build_tokenizer(corpus_files()[:1], 512)
    tok.bos_token = "<|endoftext|>"
    long_prompt = " ".join(f"word{i}" for i in range(200)) + " LAST"
    ex = RankedExample(long_prompt, ("a " * 100, "b " * 100), (1.0, 0.0))
    (t,), rep = tokenize_examples([ex], tok, max_prompt_length=16, max_response_length=8)
    assert len(t.prompt_ids) == 16 and t.prompt_ids[0] == tok.bos_token_id
    assert tok.decode(t.prompt_ids[1:]).endswith("LAST")
    assert all(len(r) == 8 for r in t.response_ids)
    assert rep.prompts_truncated == 1 and rep.responses_truncated == 2


def test_drop_mode_and_identical_after_truncation():
    long = RankedExample("p", ("same start " * 50 + "x", "same start " * 50 + "y"), (1.0, 0.0))
    kept, rep = tokenize_examples([long], TOK, max_response_length=8)
    assert kept == [] and rep.dropped["identical after truncation"] == 1
    kept, rep = tokenize_examples([long], TOK, max_response_length=8, truncation="drop")
    assert kept == [] and rep.dropped["over max length"] == 1


def test_data_fingerprint_sees_ids_and_labels():
    a = RankedExample("p", ("x", "y"), (1.0, 0.0))
    b = RankedExample("p", ("x", "y"), (0.0, 1.0))
    la, _ = tokenize_examples([a], TOK)
    lb, _ = tokenize_examples([b], TOK)
    assert data_fingerprint(la) != data_fingerprint(lb)
    assert data_fingerprint(la) == data_fingerprint(tokenize_examples([a], TOK)[0])


def test_prompts_the_chat_template_rejects_are_dropped_and_counted():
    tok = build_tokenizer(corpus_files()[:1], 512)
    # As strict templates (Llama 2, Mistral) do: no system turn.
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('System role not supported') }}{% endif %}"
                         "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    system = RankedExample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                           ("Hello.", "Go away."), (1.0, 0.0), row=3)
    plain = RankedExample([{"role": "user", "content": "Hi?"}], ("Hello.", "Go away."), (1.0, 0.0), row=4)
    lists, rep = tokenize_examples([system, plain, system], tok)
    assert [t.row for t in lists] == [4]
    assert rep.dropped == {"chat template error": 2}
    assert tok.decode(lists[0].prompt_ids) == "[user] Hi?\n"
