"""Library-level checks of the recall analyses on tiny random models (and two quick real-model checks)."""

from __future__ import annotations

import pytest
import torch

from huggingface_patch.architectures import model_parts
from huggingface_patch.recall.attributes_rate import (
    EXAMPLE_PARAGRAPHS,
    ParagraphsError,
    TokenStrings,
    attributes_rate,
    filtered_top_tokens,
    load_paragraphs,
    rate,
    reference_set,
    summarize_rates,
)
from huggingface_patch.recall.extraction import attribute_extraction, summarize_extraction
from huggingface_patch.recall.knockout import attention_knockout, layer_window, list_knockout_sets, summarize
from huggingface_patch.recall.patching import patching_extraction, summarize_patching
from huggingface_patch.recall.queries import prepare_queries
from huggingface_patch.recall.stopwords import STOPWORDS, is_filtered
from huggingface_patch.recall.sublayer import default_measure_layer, knockout_window, sublayer_knockout
from huggingface_patch.testing import build_tiny_model, tokenizer_folder

FACTS = [
    {"subject": "Vinson Massif", "prompt": "Vinson Massif is in", "attribute": ""},
    {"subject": "Nokia", "prompt": "In Nokia, people speak", "attribute": ""},
    {"subject": "Iron Man", "prompt": "Iron Man is part of the", "attribute": ""},
    {"subject": "Catalonia", "prompt": "Catalonia is in", "attribute": ""},
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_folder())


@pytest.fixture(scope="module", params=["opt-pre", "gpt2", "llama"])
def setup(request, tokenizer):
    model = build_tiny_model(request.param, decomposed=False)
    return model, prepare_queries(model, tokenizer, FACTS, filter="none")


def test_layer_window_matches_the_paper():
    assert list(layer_window(10, 48, 9)) == list(range(6, 15))
    assert list(layer_window(0, 48, 9)) == list(range(0, 5))
    assert list(layer_window(47, 48, 9)) == list(range(43, 48))
    assert list(layer_window(10, 48, 10)) == list(range(5, 15))
    assert list_knockout_sets()[:3] == ["subject", "non-subject", "last"]


def test_attention_knockout_records_and_batching(setup):
    model, queries = setup
    L = len(model_parts(model).layers)
    records = attention_knockout(model, queries, window=1)
    assert len(records) == len(queries) * 3 * L
    single = attention_knockout(model, queries, window=1, max_rows=1)
    for a, b in zip(sorted(records, key=lambda r: (r["index"], r["set"], r["layer"])),
                    sorted(single, key=lambda r: (r["index"], r["set"], r["layer"]))):
        assert a["p_new"] == pytest.approx(b["p_new"], rel=1e-4, abs=1e-7)
    for r in records:
        assert r["relative_change"] == pytest.approx((r["p_new"] - r["p_base"]) / r["p_base"] * 100)
    clusters = {q.index: q.index % 2 for q in queries}
    result = summarize(records, clusters=clusters, cluster_by="relation")
    summary = result["summary"]
    assert set(summary) == {"subject", "non-subject", "last"} == set(result["largest_drop"])
    assert all(row["ci_low"] <= row["mean"] <= row["ci_high"] for rows in summary.values() for row in rows
               if row["ci_low"] == row["ci_low"])
    assert result["cluster_by"] == "relation" and result["clusters"] == 2
    comparison = result["comparisons"]["subject vs non-subject"]
    per_fact = {}
    for r in records:
        if r["set"] in ("subject", "non-subject"):
            per_fact.setdefault(r["index"], {}).setdefault(r["set"], []).append(r["relative_change"])
    expected = sum(sum(v["subject"]) / L - sum(v["non-subject"]) / L for v in per_fact.values()) / len(per_fact)
    assert comparison["mean_over_layers"]["difference"]["estimate"] == pytest.approx(expected)


def test_attribute_extraction(setup, tokenizer):
    model, queries = setup
    L = len(model_parts(model).layers)
    records = attribute_extraction(model, tokenizer, queries)
    assert len(records) == len(queries) * 2 * L
    assert all(r["extraction"] == (r["rank"] == 0) for r in records)
    summary = summarize_extraction(records, L)
    assert len(summary["per_layer_rate"]["attention"]) == L
    assert 0 <= summary["per_example_rate"]["mlp"] <= 100


def test_extraction_summary_definitions():
    def rec(i, kind, layer, hit):
        return dict(index=i, sublayer=kind, layer=layer, extraction=hit)

    records = [rec(0, "attention", 1, 1), rec(0, "mlp", 2, 1), rec(1, "mlp", 0, 1), rec(1, "attention", 3, 1),
               rec(2, "attention", 0, 0), rec(2, "mlp", 0, 0), rec(3, "attention", 2, 1)]
    s = summarize_extraction(records, 4)
    assert s["per_example_rate"]["attention"] == 75.0
    assert s["per_example_rate"]["mlp"] == 50.0
    assert s["examples_with_any_extraction"] == 3
    assert s["attention_first_pct"] == pytest.approx(200 / 3)  # examples 0 and 3 (3: no MLP event)
    assert s["per_layer_rate"]["attention"] == [0.0, 25.0, 25.0, 25.0]


def test_sublayer_knockout(setup, tokenizer):
    model, queries = setup
    L = len(model_parts(model).layers)
    m = default_measure_layer(L)
    records = sublayer_knockout(model, tokenizer, queries, window=11)
    kinds = {r["kind"] for r in records}
    assert kinds == {"none", "mlp", "attention-uniform", "attention-zero"}
    assert len(records) == len(queries) * (1 + 3 * m)
    assert default_measure_layer(48) == 40 and list(knockout_window(0, 11, 40)) == list(range(11))
    # knocking out layers that come after the measured state changes nothing... the measured state is the
    # output of layer m, so knocking out all of 0..m-1 must change the value
    none = {r["index"]: r["value"] for r in records if r["kind"] == "none"}
    changed = [r for r in records if r["kind"] == "mlp" and r["start"] == 0 and r["value"] != none[r["index"]]]
    assert changed


def test_sublayer_knockout_attributes_rate(setup, tokenizer):
    model, queries = setup
    references = {q.subject: {"abc", "Mas", "Iron"} for q in queries}
    records = sublayer_knockout(model, tokenizer, queries, kinds=["mlp"], metric="attributes-rate",
                                references=references, top_k=50, keep=10)
    assert all(0 <= r["value"] <= 100 for r in records)


def test_patching(setup):
    model, queries = setup
    records = patching_extraction(model, queries, sources=[-1, 0, 50])
    patched = [r for r in records if r["set"] != "none"]
    assert {r["source_layer"] for r in patched} <= {-1, 0}
    assert all(r["layer"] >= r["source_layer"] + 2 for r in patched)
    summary = summarize_patching(records)
    assert summary["sources"] and len(summary["unpatched"]) == len(summary["sources"])
    for name, rows in summary["comparisons"].items():
        for j, row in enumerate(rows):
            comparison = row["patched_minus_unpatched"]
            assert comparison["a_mean"] * 100 == pytest.approx(summary["patched"][name][j])
            assert comparison["b_mean"] * 100 == pytest.approx(summary["unpatched"][j])
            assert 0 <= comparison["p_value"] <= 1


def test_patching_with_clean_states_is_identity(setup):
    """Patching the input of a layer with the clean run's own state of the same layer changes nothing, so
    patched ranks with ``l' = l - 1`` at the non-subject set... are compared against the clean run via the
    'last' set patched with the clean state of the previous layer's *output* (= this layer's input)."""
    model, queries = setup
    from huggingface_patch.layer_states import residual_states
    from huggingface_patch.recall.extraction import sublayer_extraction_ranks
    from huggingface_patch.recall.interventions import patch_layer_input
    from huggingface_patch.recall.queries import stack_ids

    q = queries[0]
    ids = stack_ids([q])
    targets = torch.tensor([q.target_id])
    states, _ = residual_states(model, ids)
    clean = sublayer_extraction_ranks(model, ids, targets)["attention"][0]
    with patch_layer_input(model, 1, states[1], q.positions("subject")):
        same = sublayer_extraction_ranks(model, ids, targets)["attention"][0]
    assert torch.equal(clean, same)


def test_stopwords_and_filter():
    assert {"the", "and", "of", "which"} <= STOPWORDS
    assert is_filtered(" The") and is_filtered("ab") and is_filtered(" of")
    assert not is_filtered(" Paris") and not is_filtered("Antarctica")


def test_reference_set_and_rate(tokenizer):
    ref = reference_set(tokenizer, "Paris is the capital of France")
    assert ref == set()  # byte-level tokens are single characters: all dropped by the length filter

    class WordTokenizer:
        words = ["Paris", " is", " the", " capital", " of", " France", " in", " Europe"]

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [i for i, w in enumerate(self.words) if w.strip() in text.split()]}

        def decode(self, ids):
            return "".join(self.words[i] for i in ids)

    ref = reference_set(WordTokenizer(), "Paris is the capital of France")
    assert ref == {"Paris", "capital", "France"}
    assert rate(["Paris", "Berlin", "France", "river"], ref) == 50.0
    assert rate([], ref) == 0.0


def test_filtered_top_tokens_filters_then_keeps(tokenizer):
    strings = TokenStrings(tokenizer, 260)
    strings.strings[10], strings.strings[11], strings.strings[12] = " Paris", " the", " Rome"
    strings.filtered[10], strings.filtered[11], strings.filtered[12] = False, True, False
    logits = torch.zeros(260)
    logits[10], logits[11], logits[12] = 3.0, 5.0, 1.0
    assert filtered_top_tokens(logits, strings, top_k=3, keep=2) == ["Paris", "Rome"]
    assert filtered_top_tokens(logits, strings, top_k=2, keep=2) == ["Paris"]


def test_paragraphs_csv(tmp_path):
    paragraphs = load_paragraphs(EXAMPLE_PARAGRAPHS)
    assert len(paragraphs) >= 5 and "Vinson Massif" in paragraphs
    bad = tmp_path / "bad.csv"
    bad.write_text("name,text\nx,y\n")
    with pytest.raises(ParagraphsError):
        load_paragraphs(str(bad))
    with pytest.raises(FileNotFoundError):
        load_paragraphs(str(tmp_path / "missing.csv"))


def test_attributes_rate_on_tiny(setup, tokenizer):
    model, queries = setup
    references = {q.subject: {"a"} for q in queries}
    records = attributes_rate(model, tokenizer, queries, references, top_k=20, keep=5)
    L = len(model_parts(model).layers)
    assert len(records) == len(queries) * 5 * L
    assert {r["layer"] for r in records} == set(range(-1, L - 1))  # -1 = the embeddings
    result = summarize_rates(records)
    assert set(result["summary"]) == {"first", "subject-first", "subject-last", "after-subject", "last"}
    assert set(result["comparisons"]) == {f"subject-last vs {p}" for p in ("first", "subject-first", "after-subject",
                                                                           "last")}
    assert result["peak"]["last"]["point"] in range(-1, L - 1)
