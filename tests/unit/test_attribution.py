"""ΔLP toolkit: paper parity, identity checks, words, spans, contrasts, stitching, lens, ablation."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re

import pytest
import torch

from huggingface_patch import relative_to_absolute
from huggingface_patch.attribution.ablation import AblationPair, agreement, real_ablation, sample_pairs
from huggingface_patch.attribution.contrastive import contrastive_deltalp
from huggingface_patch.attribution.decomposition_lens import decomposition_lens, lens_of, lens_run
from huggingface_patch.attribution.tables import (
    PieceAnalysis,
    analyse_piece,
    deltalp_rows,
    head_input,
    infer_pieces,
    stitch_targets,
    summarize_targets,
)
from huggingface_patch.attribution.words import span_deltalp, word_groups, word_rows
from huggingface_patch.corpus import split_article
from huggingface_patch.deltalp import bias_only_lp, compute_deltalp, compute_group_deltalp
from huggingface_patch.testing import TINY_KINDS, build_tiny_model

#: agreement with the paper's printed numbers (fp32 round-off of log-softmax over the vocabulary)
PAPER_TOLERANCE = 1e-4
#: float32 agreement between two computations of the same log-probabilities
LP_TOLERANCE = 1e-4


class _Tokens:
    """Stand-in tokenizer: token strings are ``t{id}`` (for tests that need no real vocabulary)."""

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]

    def decode(self, ids, **kwargs):
        return "".join(f" t{i}" for i in ids)


def _parse_paper(path):
    """``[(lp, [(lp_without, delta), ...], argmax, distance), ...]`` per timestep of a paper .deltalp file."""
    steps = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.startswith("LP("):
                steps.append([float(line.rsplit(" = ", 1)[1]), [], None, None])
            elif ";\tDelta LP: " in line:
                left, delta = line.split(";\tDelta LP: ")
                steps[-1][1].append((float(left.rsplit(" = ", 1)[1]), float(delta)))
            elif line.startswith("Timestep ") and "argmax" in line:
                match = re.search(r"argmax: (-?\d+), distance: (-?\d+)", line)
                steps[-1][2], steps[-1][3] = int(match.group(1)), int(match.group(2))
    return steps


def _fixture_analysis(fixtures_dir, number):
    from huggingface_patch.piece_reader import read_piece

    folder = os.path.join(fixtures_dir, "paper-reference")
    piece = read_piece(folder, f"stories_opt-tiny_{number}", "opt-tiny", allow_unrecorded=True)
    ids = piece.ids.long()
    return PieceAnalysis(0, number, 0, ids, _Tokens().convert_ids_to_tokens(ids.tolist()), piece.final_state,
                         piece.decomposition, piece.readout)


@pytest.mark.parametrize("number", [0, 1, 2, 3])
def test_deltalp_rows_match_paper_reference(fixtures_dir, number):
    analysis = _fixture_analysis(fixtures_dir, number)
    steps = _parse_paper(os.path.join(fixtures_dir, "paper-reference", f"stories_opt-tiny_{number}.deltalp"))
    rows = deltalp_rows(analysis, analysis.deltalp(2.0))
    assert len(steps) == len(analysis.ids) - 1
    by_target: dict[int, list[dict]] = {}
    for row in rows:
        by_target.setdefault(row["context_length"], []).append(row)
    worst = 0.0
    for t, (lp, sources, argmax, distance) in enumerate(steps):
        mine = sorted(by_target[t], key=lambda r: r["source_index"])
        assert len(mine) == len(sources), f"timestep {t + 1}: {len(mine)} sources, paper {len(sources)}"
        worst = max(worst, abs(mine[0]["lp"] - lp))
        for row, (without, delta) in zip(mine, sources):
            worst = max(worst, abs(row["lp_without"] - without), abs(row["delta_lp"] - delta))
        summary = summarize_targets(by_target[t])["targets"][0]
        if argmax == -1:
            assert summary["argmax_source_index"] is None
        else:
            assert summary["argmax_source_index"] == argmax - 1  # article index = piece index - 1
            assert summary["distance"] == distance
    assert worst <= PAPER_TOLERANCE, f"largest difference from the paper's numbers: {worst:.3e}"


@pytest.fixture(scope="module", params=["llama", "opt-pre", "gpt2"])
def tiny_case(request):
    model = build_tiny_model(request.param)
    ids = torch.tensor([2, 84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116, 46])
    analysis = analyse_piece(model, _Tokens(), ids, window=len(ids))
    return model, analysis


def test_removing_nothing_gives_real_logits(tiny_case):
    model, analysis = tiny_case
    logits = model(analysis.ids[None]).logits[0, :-1].detach().double()
    expected = torch.log_softmax(logits, -1).gather(-1, analysis.ids[1:, None])[:, 0] / math.log(2)
    result = compute_group_deltalp(analysis.final_state, analysis.decomposition, analysis.proj, analysis.ids, [[]])
    assert torch.isnan(result.ablated).all(), "an empty group removes nothing and has no value"
    worst = float((result.lp.double() - expected).abs().max())
    assert worst <= LP_TOLERANCE, f"LP differs from the real logits' by {worst:.3e}"


def test_removing_every_source_leaves_the_bias(tiny_case):
    _, analysis = tiny_case
    length = len(analysis.ids)
    result = compute_group_deltalp(analysis.final_state, analysis.decomposition, analysis.proj, analysis.ids,
                                   [list(range(length))])
    expected = bias_only_lp(analysis.bias, analysis.proj, analysis.ids)
    logits = analysis.bias[:-1].double() @ analysis.proj.double().t()
    independent = torch.log_softmax(logits, -1).gather(-1, analysis.ids[1:, None])[:, 0] / math.log(2)
    assert float((expected.double() - independent).abs().max()) <= LP_TOLERANCE
    worst = float((result.ablated[0].double() - independent).abs().max())
    assert worst <= LP_TOLERANCE, f"LP without every source differs from log-softmax(bias @ proj.T) by {worst:.3e}"


def test_single_source_groups_equal_token_deltalp(tiny_case):
    _, analysis = tiny_case
    length = len(analysis.ids)
    token = analysis.deltalp()
    groups = span_deltalp(analysis, [[s] for s in range(length)])
    for s in range(length):
        for t in range(s, length - 1):
            assert abs(float(groups.delta[s, t] - token.delta[t - s, t])) <= LP_TOLERANCE


def test_word_deltalp_equals_joint_removal(tiny_case):
    _, analysis = tiny_case
    tokens = ["</s>", "T", "h", "e", "Ġc", "a", "t", "Ġs", "a", "t", "."] + ["x"] * (len(analysis.ids) - 11)
    analysis = dataclasses.replace(analysis, tokens=tokens)
    groups = word_groups(tokens)
    assert groups[:4] == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11, 12]]
    rows = word_rows(analysis)
    absolute = relative_to_absolute(analysis.decomposition)  # (S, T, H)
    proj = analysis.proj.double()
    checked = 0
    for row in rows:
        t = row["context_length"]
        group = next(g for g in groups if g[0] == row["source_index"] + 1 or (g == [0] and row["is_bos"]))
        members = [s for s in group if s <= t]
        state = analysis.final_state[t].double() - absolute[members, t].double().sum(0)
        lp = torch.log_softmax(state @ proj.t(), -1)[analysis.ids[t + 1]] / math.log(2)
        assert abs(row["lp_without"] - float(lp)) <= LP_TOLERANCE
        assert row["n_tokens_removed"] == len(members)
        checked += len(members) > 1
    assert checked > 0, "no multi-token word was checked"


def test_contrastive_equals_difference_of_deltalps(tiny_case):
    _, analysis = tiny_case
    foil = 120
    result = contrastive_deltalp(analysis, foil)
    target = analysis.deltalp().delta
    foil_ids = torch.cat([analysis.ids[:1], torch.full((len(analysis.ids) - 1,), foil)])
    foil_delta = compute_deltalp(analysis.final_state, analysis.decomposition, analysis.proj, foil_ids).delta
    expected = target - foil_delta
    mask = ~torch.isnan(expected)
    assert torch.equal(mask, ~torch.isnan(result.delta))
    worst = float((result.delta[mask].double() - expected[mask].double()).abs().max())
    assert worst <= LP_TOLERANCE, f"contrastive ΔLP differs from ΔLP(target) - ΔLP(foil) by {worst:.3e}"


def test_stitching_gives_each_target_once_with_most_context():
    article = list(range(10, 40))
    pieces = split_article(article, bos_id=2, context=8)
    assert len(pieces) > 3
    chosen = stitch_targets(pieces)
    assert sorted(index for (_, index) in chosen) == list(range(len(article)))
    for (_, index), (number, t) in chosen.items():
        options = [p_t for p in pieces for p_t in range(len(p.ids) - 1) if p.start + p_t == index]
        assert t == max(options)
        assert pieces[number].ids[t + 1] == article[index]
    assert infer_pieces([p.ids for p in pieces]) == [(0, p.start) for p in pieces]
    other = split_article([50, 51, 52], bos_id=2, context=8, document=1)
    assert infer_pieces([p.ids for p in pieces + other])[-1] == (1, 0)


def test_bos_excluded_from_argmax_by_default():
    rows = [dict(document=0, target_index=3, target_token="x", context_length=2, lp=-1.0, source_index=s,
                 source_token=str(s), distance=2 - s - 1 + 1, is_bos=s == -1, lp_without=-1.0 - d, delta_lp=d)
            for s, d in [(-1, 5.0), (0, 1.0), (1, 2.0)]]
    assert summarize_targets(rows)["targets"][0]["argmax_source_index"] == 1
    assert summarize_targets(rows, include_bos=True)["targets"][0]["argmax_source_index"] == -1


def test_lens_last_layer_equals_decomposition():
    model = build_tiny_model("opt-post")
    ids = torch.tensor([2, 40, 50, 60, 70, 80])
    result = decomposition_lens(model, ids, target=4)
    _, decomposition, _ = head_input(model, ids, len(ids))
    expected = decomposition[:5, 4].flip(0).double() @ model.get_output_embeddings().weight.detach().double().t()
    assert result.sources == [0, 1, 2, 3, 4]
    assert result.logits.shape[0] == model.config.num_hidden_layers + 1
    assert float((result.logits[-1] - expected).abs().max()) <= 1e-5


@pytest.mark.parametrize("kind", ["opt-post", "llama", "gemma2"])
def test_lens_read_from_one_run_equals_a_run_per_target(kind):
    """The ΔLP page reads every target's lens from one run over the text; each must equal the lens of a run that
    stops at the target's next token (causality), and its last layer the head's reading of the decomposition."""
    model = build_tiny_model(kind)
    ids = torch.tensor([2, 40, 50, 60, 70, 80, 90, 33])
    window = 4
    shared = lens_run(model, ids, window)
    head = model.get_output_embeddings().weight.detach().double()
    _, decomposition, _ = head_input(model, ids, window)
    for target in range(len(ids)):
        alone = decomposition_lens(model, ids[: target + 2], target, window)
        read = lens_of(model, shared, target)
        scale = float(alone.logits.abs().max())
        worst = float((read.logits - alone.logits).abs().max())
        assert read.sources == alone.sources and read.next_id == alone.next_id
        assert worst <= 1e-5 * scale, f"target {target}: largest difference {worst:.3g} (scale {scale:.3g})"
        expected = decomposition[: len(read.sources), target].flip(0).double() @ head.t()
        last = float((read.logits[-1] - expected).abs().max())
        assert last <= 1e-5 * scale, f"target {target}: last layer differs by {last:.3g}"


@pytest.mark.parametrize("kind", ["llama", "gemma2", "gptj"])  # plain head, softcapped logits, head with a bias
def test_deltalp_at_chosen_pairs_equals_the_full_table(kind):
    """The ablation study reads ΔLP only at its sampled pairs; each must equal the full table's entry, and for
    the plain head a hand-computed log-softmax of ``state[t] - n[k, t]``."""

    model = build_tiny_model(kind)
    ids = torch.tensor([2, 84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116, 46])
    analysis = analyse_piece(model, _Tokens(), ids, window=6)
    full = analysis.deltalp().delta
    pairs = [(k, t) for t in range(len(ids) - 1) for k in range(min(6, t + 1))]
    chosen = random.Random(0).sample(pairs, 20)
    got = analysis.deltalp_at([k for k, _ in chosen], [t for _, t in chosen])
    expected = torch.stack([full[k, t] for k, t in chosen])
    worst = float((got - expected).abs().max())
    assert worst <= LP_TOLERANCE, f"ΔLP at chosen pairs differs from the full table by {worst:.3e}"
    if kind == "llama":
        weight = analysis.proj.double()
        manual = []
        for k, t in chosen:
            state = analysis.final_state[t].double()
            gold = int(ids[t + 1])
            manual.append(torch.log_softmax(state @ weight.t(), -1)[gold]
                          - torch.log_softmax((state - analysis.decomposition[k, t].double()) @ weight.t(), -1)[gold])
        worst = float((got.double() - torch.stack(manual) / math.log(2)).abs().max())
        assert worst <= LP_TOLERANCE, f"ΔLP at chosen pairs differs from a hand-computed log-softmax by {worst:.3e}"
    with pytest.raises(ValueError, match="pairs must satisfy"):
        analysis.deltalp_at([3], [1])  # source before the text
    with pytest.raises(ValueError, match="pairs must satisfy"):
        analysis.deltalp_at([6], [10])  # outside the window


def _manual_drop(model, ids, pair) -> float:
    """The drop in bits from two whole forward passes: the text, and the text without the source."""
    full = torch.log_softmax(model(ids[None]).logits[0, pair.target], -1)[ids[pair.target + 1]]
    cut = torch.cat([ids[: pair.source], ids[pair.source + 1:]])
    removed = torch.log_softmax(model(cut[None]).logits[0, pair.target - 1], -1)[ids[pair.target + 1]]
    return float((full - removed).detach()) / math.log(2)


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("cut_cache", [True, False], ids=["cached-prefix", "whole-rerun"])
def test_real_ablation_matches_a_manual_rerun(kind, cut_cache, monkeypatch):
    """real_ablation continues the clean pass's cache cut before the source and hands the LM head only the
    rows it reads (or, where the cache cannot be cut, re-runs the shortened text): either way each drop must
    equal two whole forward passes by hand. The 12-token text is longer than the tiny sliding windows (5)."""
    import huggingface_patch.compat as compat

    model = build_tiny_model(kind)
    cuts = []  # what each re-run got from cache_prefix (None: the whole shortened text)
    real_cut = compat.cache_prefix

    def recorded_cut(cache, length):
        cuts.append(real_cut(cache, length) if cut_cache else None)
        return cuts[-1]

    monkeypatch.setattr(compat, "cache_prefix", recorded_cut)
    for ids, pairs in ((torch.tensor([2, 40, 50, 60, 70]), [(3, 1), (3, 3), (2, 2)]),
                       (torch.tensor([2, 40, 50, 60, 70, 80, 90, 33, 44, 55, 66, 77]),
                        [(4, 2), (5, 2), (5, 5), (9, 1), (10, 6), (7, 7), (10, 10)])):
        got = real_ablation(model, ids, [AblationPair(0, t, s) for t, s in pairs])
        gaps = [abs(pair.real_delta_lp - _manual_drop(model, ids, pair)) for pair in got]
        worst = max(gaps)
        assert worst <= 1e-5, (f"{kind}, {len(ids)} tokens: a drop differs from two whole forward passes by "
                               f"{worst:.3e} bits (pair {got[gaps.index(worst)]})")
        if len(ids) == 5:  # the short text fits every sliding window: its re-runs continue the cache
            assert all(cut is not None for cut in cuts) == cut_cache and cuts, f"{kind}: cache cuts {cuts}"


def test_ablation_pairs_and_agreement():
    """Sampled pairs respect the window and the BOS; a perfect monotone relation has Spearman 1."""
    sampled = sample_pairs(10, 3, 100, random.Random(0))
    assert all(1 <= p.source <= p.target <= 8 and p.target - p.source < 3 for p in sampled)
    assert len({(p.target, p.source) for p in sampled}) == len(sampled)
    stats = agreement([1, 2, 3, 4], [2, 4, 6, 9])
    assert stats["spearman"] == pytest.approx(1.0) and stats["n"] == 4
