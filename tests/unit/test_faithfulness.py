"""The faithfulness benchmark: every attribution method runs, the decomposition's direct logit attribution equals
lxt's CP-LRP input x gradient, leave-one-out and ΔLP equal independent computations, each metric gives its
known answer on a toy model where one source alone matters, and a missing package is one line."""

from __future__ import annotations

import json
import math
import os
import types

import numpy as np
import pytest
import torch
from helpers import exit_code

from huggingface_patch.errors import InputError
from huggingface_patch.faithfulness import methods as methods_module
from huggingface_patch.faithfulness.benchmark import METHODS, run_benchmark
from huggingface_patch.faithfulness.items import Item, agreement_items, corpus_items, ioi_items
from huggingface_patch.faithfulness.methods import attribute, attribute_items, list_methods, missing_package
from huggingface_patch.faithfulness.metrics import (
    FRACTIONS,
    deletion_curves,
    lds,
    lds_subsets,
    reciprocal_rank,
    removal_orders,
    subset_drops,
)
from huggingface_patch.testing import build_tiny_model, save_tiny_model

#: DLA vs CP-LRP in float64: the families' RMSNorm computes in float32 whatever the model's dtype, so the two
#: agree to float32 round-off of the norm (measured 6e-8 relative), not to float64's
LRP_TOLERANCE = 1e-6
LXT_FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")


def _items(vocab: int, count: int = 3, length: int = 9, seed: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    return [Item([1] + rng.integers(2, vocab, length - 1).tolist(), int(rng.integers(2, vocab)), "corpus", n)
            for n in range(count)]


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("faithfulness") / "llama")
    save_tiny_model("llama", folder)
    from huggingface_patch.loading import load_model_and_tokenizer

    model, tokenizer, source = load_model_and_tokenizer(folder, dtype="float32")
    return model, tokenizer, source


@pytest.mark.parametrize("method", METHODS)
def test_every_method_scores_every_source(saved_llama, method):
    if missing_package(method):
        pytest.skip(f"{method} needs {missing_package(method)} (CI installs it: scripts/install.sh)")
    model, tokenizer, source = saved_llama
    items = _items(model.config.vocab_size)
    items.append(Item([1, 5, 6, 7, 8, 9], 10, "agreement", 0, foil=11, right=[2]))
    scores = attribute_items(model, items, method, tokenizer=tokenizer, model_path=source.path)
    assert len(scores) == len(items)
    for item, row in zip(items, scores):
        assert row.shape == (len(item.sources),), f"{method}: {row.shape} for {len(item.sources)} sources"
        assert np.all(np.isfinite(row)), f"{method}: non-finite scores {row}"


def test_the_window_interface_lays_sources_out_like_the_deltalp_tables(saved_llama):
    model, _, _ = saved_llama
    ids = [1, 7, 9, 11, 13, 15, 17, 19]
    table = attribute(model, ids, [2, 5], "leave-one-out", window=4)
    assert table.shape == (2, 4)
    assert np.isnan(table[0, 2:]).all() and np.isfinite(table[0, :2]).all(), "target 2 has sources 2 and 1 only"
    per_item = attribute_items(model, [Item(ids[:6], ids[6], "window", 0, first_source=2)], "leave-one-out")[0]
    np.testing.assert_allclose(table[1], per_item[::-1], rtol=0, atol=1e-12, err_msg="column k is source t - k")
    with pytest.raises(InputError, match="no next token"):
        attribute(model, ids, [7], "random")


def test_leave_one_out_equals_a_hand_computed_rerun(saved_llama):
    """Each source removed, the model rerun on its own (no batching), log p(answer) from the full logits."""
    model, _, _ = saved_llama
    item = Item([1, 20, 31, 42, 53, 64], 75, "corpus", 0)
    got = attribute_items(model, [item], "leave-one-out")[0]

    def logp(ids):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        return float(logits[item.answer] - torch.logsumexp(logits, -1))

    expected = [logp(item.ids) - logp(item.ids[:s] + item.ids[s + 1:]) for s in item.sources]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg="leave-one-out vs hand rerun (nats)")


def test_deltalp_method_equals_the_library_deltalp():
    """The benchmark's ΔLP equals :func:`compute_deltalp` of the paper pipeline at the same target (nats)."""
    from huggingface_patch.architectures import readout
    from huggingface_patch.attribution.tables import head_input
    from huggingface_patch.deltalp import compute_deltalp

    model = build_tiny_model("gemma3").double()
    ids = [1, 12, 23, 34, 45, 56, 67]
    t = 5
    item = Item(ids[: t + 1], ids[t + 1], "corpus", 0)
    got = attribute_items(model, [item], "deltalp")[0]  # sources 1 .. t
    state, decomposition, _ = head_input(model, torch.tensor(ids), len(ids))
    reference = compute_deltalp(state, decomposition, readout(model).weight, torch.tensor(ids), base=math.e)
    expected = reference.delta[:, t].numpy()[: t][::-1]  # rows k = source t - k, k = 0 .. t-1
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg="faithfulness ΔLP vs compute_deltalp")


def _lrp_case(tmp_path, kind: str):
    """A saved tiny ``kind`` model in float64, its loading source, and two corpus items and a contrast."""
    if missing_package("cp-lrp"):
        pytest.skip("lxt is not installed (CI installs it: scripts/install.sh)")
    from huggingface_patch.loading import load_model_and_tokenizer

    folder = save_tiny_model(kind, str(tmp_path / kind))
    model, _, source = load_model_and_tokenizer(folder, dtype="float64")
    items = _items(model.config.vocab_size, count=2, length=8)
    items.append(Item([1, 5, 6, 7, 8, 9], 10, "agreement", 0, foil=11))
    return model, source, items


@pytest.mark.parametrize("kind", LXT_FAMILIES)
def test_direct_logit_attribution_equals_cp_lrp_from_lxt(tmp_path, kind):
    model, source, items = _lrp_case(tmp_path, kind)
    dla = attribute_items(model, items, "dla")
    lrp = attribute_items(model, items, "cp-lrp", model_path=source.path)
    for index, (a, b) in enumerate(zip(dla, lrp)):
        worst = float(np.max(np.abs(a - b)))
        scale = float(np.max(np.abs(b)))
        assert worst <= LRP_TOLERANCE * scale, (
            f"{kind} item {index}: DLA vs CP-LRP largest difference {worst:.3e} > {LRP_TOLERANCE:g} x {scale:.3e}")


class OneSourceModel(torch.nn.Module):
    """A toy causal LM over 2 tokens' logits: the last position's logit of token 0 is 3 when token ``KEY`` is
    anywhere in the input, else 0 (token 1's logit is 0); one source alone matters."""

    KEY = 7

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **_):
        present = (input_ids == self.KEY).any(-1).double() * 3.0
        logits = torch.stack([present, torch.zeros_like(present)], -1)[:, None, :]
        return types.SimpleNamespace(logits=logits)


def _toy():
    ids = [0, 2, 3, 4, OneSourceModel.KEY, 5, 6, 8, 9, 10, 11]  # sources 1 .. 10, the key at position 4
    return OneSourceModel(), Item(ids, 0, "corpus", 0, right=[4])


def test_metrics_on_a_model_where_one_source_alone_matters():
    model, item = _toy()
    drop = 3 - math.log(math.exp(3) + 1) + math.log(2)  # log p(0) with the key minus without it
    loo = attribute_items(model, [item], "leave-one-out")[0]
    np.testing.assert_allclose(loo, [drop if p == 4 else 0.0 for p in item.sources], atol=1e-12)
    perfect = loo
    curves = deletion_curves(model, item, {"perfect": perfect, "backwards": -perfect})
    # MoRF loses the key at the first removal, LeRF only when everything goes (11 fractions: 9 in between)
    np.testing.assert_allclose(curves["perfect"]["morf"], [0.0] + [-drop] * 10, atol=1e-12)
    np.testing.assert_allclose(curves["perfect"]["lerf"], [0.0] * 10 + [-drop], atol=1e-12)
    assert curves["perfect"]["area_between"] == pytest.approx(9 * drop / len(FRACTIONS), abs=1e-12)
    assert curves["backwards"]["area_between"] == pytest.approx(-9 * drop / len(FRACTIONS), abs=1e-12)
    subsets = lds_subsets(item, seed=0)
    drops = subset_drops(model, item, subsets)
    assert lds(perfect, subsets, drops) == pytest.approx(1.0)
    assert lds(-perfect, subsets, drops) == pytest.approx(-1.0)
    assert reciprocal_rank(perfect, item) == 1.0
    assert reciprocal_rank(np.arange(10.0), item) == pytest.approx(1 / 7)  # position 4 ranks 7th of 10


def test_removal_orders_break_ties_by_position():
    most, least = removal_orders(np.array([0.0, 2.0, 1.0, 2.0]), 0.5)
    assert most == [1, 3] and least == [0, 2]


def test_the_benchmark_on_the_toy_model_ranks_the_perfect_method_first(monkeypatch):
    model, item = _toy()
    corpus = [Item(list(item.ids), 0, "corpus", n, right=[4]) for n in range(4)]
    tasks = [Item(list(item.ids), 0, "agreement", "key", foil=1, right=[4]) for _ in range(3)]
    result = run_benchmark(model, corpus, tasks, ["leave-one-out", "random"], progress=False)
    assert result.summary["leave-one-out"]["area_between"]["estimate"] > 0.5
    assert result.summary["leave-one-out"]["mrr_agreement"]["estimate"] == 1.0
    assert result.summary["leave-one-out"]["spearman_loo"]["estimate"] == pytest.approx(1.0)
    assert result.comparisons == {}, "no ΔLP in the run: nothing to compare it with"


def test_corpus_items_are_seeded_and_bounded():
    from transformers import AutoTokenizer

    from huggingface_patch.corpus import StartToken
    from huggingface_patch.testing import tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder())
    start = StartToken(0, "<s>", "test")
    documents = ["one two three four five six seven eight nine ten eleven twelve"] * 2
    items = corpus_items(tokenizer, documents, start, 5, context=6, seed=1)
    assert len(items) == 5 and all(i.ids[0] == 0 and len(i.ids) <= 7 for i in items)
    assert items == corpus_items(tokenizer, documents, start, 5, context=6, seed=1), "seeded"
    # a byte-level tokenizer has one first token for " are" and " is", and for every " Name": no contrast
    assert agreement_items(tokenizer, start, count=5) == [] and ioi_items(tokenizer, start, count=5) == []


def test_generators_stop_when_their_distinct_texts_run_out(monkeypatch):
    """Asking for more items than a task has distinct texts returns every one (agreement: 12 subjects x 8
    attractors x 6 prepositions x 2 numbers = 1,152) instead of drawing repeats for ever (the reproduction's
    ``--task-items 200`` asks for 2,000 candidates)."""
    import time

    from transformers import AutoTokenizer

    from huggingface_patch.corpus import StartToken
    from huggingface_patch.faithfulness import items as module
    from huggingface_patch.testing import tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder())
    # a byte tokenizer gives " are" and " is" one first token: give them two, as a word-piece tokenizer does
    monkeypatch.setattr(module, "_first_token", lambda tokenizer, word: {"are": 5, "is": 6}.get(word, 7))
    started = time.perf_counter()
    got = module.agreement_items(tokenizer, StartToken(0, "<s>", "test"), count=2000)
    assert len(got) == 1152 == len({item.text for item in got}), len(got)
    assert time.perf_counter() - started < 60
    assert module.agreement_items(tokenizer, StartToken(0, "<s>", "test"), count=10) == got[:10], "same order"


def test_a_missing_package_is_one_line_naming_the_install(monkeypatch, tmp_path, capsys):
    from analysis import faithfulness

    monkeypatch.setattr(methods_module, "missing_package", lambda m: "captum" if "gradient" in m else None)
    with pytest.raises(InputError, match=r"pip install captum==0\.9\.0"):
        attribute_items(None, [], "input-x-gradient")
    code = exit_code(faithfulness.main, ["--model", "nowhere", "--methods", "deltalp", "integrated-gradients",
                                         "--output-dir", tmp_path / "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "integrated-gradients (captum)" in err[0], err
    assert not os.path.exists(tmp_path / "out")


def test_unknown_method_names_the_choices():
    with pytest.raises(InputError, match="choose from"):
        attribute_items(None, [], "shapley")
    assert set(METHODS) <= set(list_methods())


def test_cli_on_a_tiny_model_writes_every_table(tmp_path):
    from analysis import faithfulness

    folder = save_tiny_model("qwen2", str(tmp_path / "qwen2"))
    methods = [m for m in ("deltalp", "dla", "random", "attention-rollout", "cp-lrp") if not missing_package(m)]
    out = tmp_path / "out"
    code = exit_code(faithfulness.main, ["--model", folder, "--items", 3, "--task-items", 0, "--context", 6,
                                         "--methods", *methods, "--output-dir", out])
    assert code == 0
    names = set(os.listdir(out))
    assert {"faithfulness.csv", "faithfulness_scores.csv", "faithfulness_curves.csv", "faithfulness_summary.json",
            "faithfulness.png", "run.json"} <= names, names
    summary = json.loads((out / "faithfulness_summary.json").read_text())
    assert set(summary["summary"]) == set(methods) | {"leave-one-out"}, "agreement needs leave-one-out"
    assert all("p_holm" in c for other in summary["comparisons"].values() for c in other.values())
    assert summary["cost"]["deltalp"]["forward_pass_equivalents_per_item"] > 0
    assert exit_code(faithfulness.main, ["--model", folder, "--items", 0, "--task-items", 0,
                                         "--output-dir", tmp_path / "none"]) == 2


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_lrp_reports_its_conservation_against_the_plain_models_logit(tmp_path, kind):
    """The worker's ``explained`` is the plain model's logit (difference), computed here without lxt. CP-LRP's
    relevances (frozen attention and norms: input x gradient of a function linear in the embeddings) sum to
    the logit less what the biases carry, which is the decomposition's sum over every position (the start
    token's included) read through the head: the tiny families have biases, so the two differ from the logit."""
    from huggingface_patch.architectures import readout
    from huggingface_patch.attribution.tables import head_input
    from huggingface_patch.faithfulness.benchmark import conservation

    model, source, items = _lrp_case(tmp_path, kind)
    details: dict = {}
    attribute_items(model, items, "cp-lrp", model_path=source.path, details=details)
    weight = readout(model).weight
    with torch.no_grad():
        for index, item in enumerate(items):
            logits = model(input_ids=torch.tensor([item.ids])).logits[0, -1]
            expected = float(logits[item.answer] - (0 if item.foil is None else logits[item.foil]))
            got = details["explained"][index]
            assert abs(got - expected) <= 1e-9 * max(1.0, abs(expected)), f"item {index}: explained {got} vs {expected}"
            _, decomposition, _ = head_input(model, torch.tensor(item.ids), len(item.ids))
            direction = weight[item.answer] - (0 if item.foil is None else weight[item.foil])
            sources = float((decomposition[: item.target + 1, item.target] @ direction).sum())  # rows: t - s
            total = details["relevance_sum"][index]
            assert abs(total - sources) <= LRP_TOLERANCE * max(1.0, abs(sources)), (
                f"{kind} item {index}: CP-LRP relevances sum to {total:.9g}, the decomposition's sources to "
                f"{sources:.9g} (difference {abs(total - sources):.3e})")
    rows = [{"method": "cp-lrp", "task": item.task, "item": index, "relevance_sum": details["relevance_sum"][index],
             "explained": details["explained"][index]} for index, item in enumerate(items)]
    summary = conservation(rows)["cp-lrp"]
    assert summary["corpus"]["items"] == 2 and summary["agreement"]["items"] == 1, summary


def test_conservation_summary_counts_the_items_within_the_margin():
    from huggingface_patch.faithfulness.benchmark import conservation

    ratios = [1.0, 1.04, 0.5, 2.0]
    rows = [{"method": "attnlrp", "task": "ioi", "item": i, "relevance_sum": 3.0 * r, "explained": 3.0}
            for i, r in enumerate(ratios)]
    rows.append({"method": "dla", "task": "ioi", "item": 0})  # methods that report nothing are left out
    got = conservation(rows)
    assert list(got) == ["attnlrp"]
    assert got["attnlrp"]["ioi"]["share_conserved"] == 0.5
    assert got["attnlrp"]["ioi"]["median_ratio"] == pytest.approx(float(np.median(ratios)))
    assert got["attnlrp"]["ioi"]["quartiles"] == pytest.approx(np.percentile(ratios, [25, 75]).tolist())
