"""Real ablation: remove a source token from the input, re-run the model, and compare the drop in the target's
log-probability with ΔLP from the decomposition (Spearman and Pearson correlations, scatter plot).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


@dataclass
class AblationPair:
    """One (target, source) pair of a piece: ``target`` ``t`` predicts ``ids[t+1]``; ``source`` ``s`` (1 <= s <= t)."""

    document: int | str
    target: int
    source: int
    delta_lp: float = math.nan
    real_delta_lp: float = math.nan


def sample_pairs(length: int, window: int, count: int, rng: random.Random, document=0) -> list[AblationPair]:
    """Up to ``count`` distinct pairs ``(t, s)`` with ``1 <= s <= t <= length - 2`` and ``t - s < window``
    (the BOS is never removed), uniformly at random.
    """
    candidates = [(t, s) for t in range(1, length - 1) for s in range(max(1, t - window + 1), t + 1)]
    chosen = rng.sample(candidates, min(count, len(candidates)))
    return [AblationPair(document, t, s) for t, s in sorted(chosen)]


@torch.no_grad()
def real_ablation(model, ids: torch.Tensor, pairs: list[AblationPair], base: float = 2.0) -> list[AblationPair]:
    """Fill ``real_delta_lp`` of each pair: ``LP(t) - LP(t | input without token s)`` (positions after ``s``
    shift left by one, so target ``t`` is read at ``t - 1``).

    Only what the pairs read is computed. One clean pass runs the text up to its last target and keeps its
    key/value cache; each distinct source then runs just the positions from ``s`` to its last target,
    continuing that cache cut to the ``s`` positions before it, which the removal leaves as they were (where
    the cache cannot be cut exactly, the shortened text is run whole). The LM head sees only the rows read,
    so a 262k-word head costs a few rows per run instead of the whole text.
    """
    from ..compat import cache_prefix

    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long)
    scale = 1.0 / math.log(base)
    # a target at its own source is read at s - 1, before the cut: a clean position
    rows = sorted({p.target for p in pairs} | {p.target - 1 for p in pairs if p.target == p.source})
    clean, cache = _log_probs_at(model, ids[: max(rows) + 1], rows, device, keep_cache=True)
    clean = dict(zip(rows, clean.mul_(scale)))
    for source in sorted({p.source for p in pairs}):
        chosen = [p for p in pairs if p.source == source]
        after = [p for p in chosen if p.target > source]
        removed = {}
        if after:
            last = max(p.target for p in after)
            prefix = cache_prefix(cache, source)
            if prefix is None:
                cut, offset = torch.cat([ids[:source], ids[source + 1: last + 1]]), 0
            else:
                cut, offset = ids[source + 1: last + 1], source
            values = _log_probs_at(model, cut, [p.target - 1 - offset for p in after], device, cache=prefix)[0]
            removed = {p.target: row for p, row in zip(after, values.mul_(scale))}
        for pair in chosen:
            gold = int(ids[pair.target + 1])
            row = removed[pair.target] if pair.target > source else clean[pair.target - 1]
            pair.real_delta_lp = float(clean[pair.target][gold] - row[gold])
    return pairs


def _log_probs_at(model, input_ids: torch.Tensor, positions: list[int], device, *, cache=None,
                  keep_cache: bool = False):
    """``(len(positions), V)`` next-token log-probabilities of ``input_ids`` ``(T,)`` at ``positions`` only
    (positions of ``input_ids``, which continue ``cache`` when one is given), and the key/value cache of the
    run (None unless ``keep_cache``). A pre-hook hands the LM head just those rows (whatever the model does
    after the head, such as softcapping, applies row by row)."""
    from ..compat import cached_step

    keep = torch.tensor(positions, dtype=torch.long, device=device)
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (args[0][:, keep], *args[1:]))
    input_ids = input_ids[None].to(device)
    try:
        if cache is None and not keep_cache:
            out, cache = model(input_ids), None
        else:
            past = 0 if cache is None else cache.get_seq_length()
            mask = torch.ones(1, past + input_ids.shape[1], dtype=torch.long, device=device)
            out, cache = cached_step(model, input_ids, cache, attention_mask=mask)
    finally:
        handle.remove()
    return torch.log_softmax(out.logits[0].float().cpu(), -1), cache


def agreement(x, y, documents=None, seed: int = 0) -> dict:
    """Spearman and Pearson correlation of two sequences (with their p-values and n), and the Spearman
    correlation's interval from a bootstrap that resamples whole documents (``documents`` ``(n,)``: pairs of
    one essay share its context, so they are not independent; None: pairs resampled singly)."""
    from ..errors import InputError
    from ..stats import correlations
    from ..stats.correlation import correlation_interval

    if len(x) < 3:
        raise InputError(f"need at least 3 pairs to correlate, got {len(x)}")
    result = correlations(x, y)
    interval = correlation_interval(x, y, documents, cluster_by=None if documents is None else "document",
                                    seed=seed)
    return dict(n=result["n"], spearman=result["spearman"], spearman_p=result["spearman_p"],
                pearson=result["pearson"], pearson_p=result["pearson_p"], spearman_interval=interval.to_dict())


@dataclass
class AblationStudy:
    """ΔLP against real ablation over sampled pairs: ``rows`` (one per pair), ``stats`` (:func:`agreement`),
    the ``pairs`` themselves and the settings."""

    rows: list[dict]
    stats: dict
    pairs: list[AblationPair]
    settings: dict

    def write(self, folder, model_name: str) -> None:
        """``ablation_pairs.csv``, ``ablation_summary.json`` and ``ablation_scatter.png`` into a
        :class:`~huggingface_patch.files.ResultFolder`."""
        from ..files import write_csv, write_json

        write_csv(self.rows, folder.path("ablation_pairs.csv"))
        write_json(dict(self.settings, model=model_name,
                        positions="target/source are piece positions (0 = the start token, never removed)",
                        **self.stats), folder.path("ablation_summary.json"))
        plot_agreement(self.pairs, folder.path("ablation_scatter.png"), units=self.settings["units"],
                       title=f"{model_name}: ΔLP vs real ablation (n={self.stats['n']}, Spearman "
                             f"{self.stats['spearman']:.2f}, Pearson {self.stats['pearson']:.2f})")

    @classmethod
    def from_folder(cls, folder: str) -> "AblationStudy":
        """The study :meth:`write` put into ``folder`` (checked against its ``run.json``)."""
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        rows = stored.table("ablation_pairs.csv")
        summary = stored.json("ablation_summary.json")
        settings = {key: summary[key] for key in _SETTINGS if key in summary}
        stats = {key: value for key, value in summary.items() if key not in (*_SETTINGS, "model", "positions")}
        pairs = [AblationPair(r["document"], r["target_index"], r["source_index"], r["delta_lp"], r["real_delta_lp"])
                 for r in rows]
        return cls(rows, stats, pairs, settings)


#: the keys of :attr:`AblationStudy.settings` (the summary JSON holds them next to the statistics)
_SETTINGS = ("window", "units", "seed", "max_tokens", "pairs_requested", "start_token")


def ablation_study(model, tokenizer, documents: list[str], start, *, window: int = 50, pairs: int = 200,
                   max_tokens: int = 128, seed: int = 0, units: str = "bits", progress: bool = True) -> AblationStudy:
    """Sample ``pairs`` (target, source) pairs uniformly over the documents (each cut to ``max_tokens`` tokens
    after ``start``), compute ΔLP from the decomposition and the real drop when the source token is removed
    and the model re-run, and correlate them."""
    from tqdm.auto import tqdm

    from ..errors import InputError
    from ..tokens import token_texts
    from .tables import UNITS, analyse_piece

    base = UNITS[units]
    sequences = [start.prepend(ids[: max_tokens - (start.id is not None)])
                 for ids in (list(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in documents)]
    sequences = [s for s in sequences if len(s) >= 3]
    if not sequences:
        raise InputError("the corpus has no document of at least 2 tokens")
    rng = random.Random(seed)
    everything = [p for d, s in enumerate(sequences)
                  for p in sample_pairs(len(s), window, 10**9, random.Random(0), document=d)]
    chosen = rng.sample(everything, min(pairs, len(everything)))
    by_doc: dict[int, list[AblationPair]] = {}
    for pair in chosen:
        by_doc.setdefault(pair.document, []).append(pair)
    rows = []
    for document, doc_pairs in tqdm(sorted(by_doc.items()), desc="documents", unit="doc", disable=not progress):
        ids = torch.tensor(sequences[document])
        analysis = analyse_piece(model, tokenizer, ids, window, document=document)
        delta = analysis.deltalp_at([p.target - p.source for p in doc_pairs], [p.target for p in doc_pairs], base)
        for pair, value in zip(doc_pairs, delta.tolist()):
            pair.delta_lp = value
        real_ablation(model, ids, doc_pairs, base)
        texts = token_texts(tokenizer, ids.tolist())
        for pair in doc_pairs:
            rows.append(dict(document=document, target_index=pair.target, target_token=texts[pair.target + 1],
                             target_token_raw=analysis.tokens[pair.target + 1], source_index=pair.source,
                             source_token=texts[pair.source], source_token_raw=analysis.tokens[pair.source],
                             distance=pair.target - pair.source + 1, delta_lp=pair.delta_lp,
                             real_delta_lp=pair.real_delta_lp))
    flat = [p for group in by_doc.values() for p in group]
    rows.sort(key=lambda r: (r["document"], r["target_index"], r["source_index"]))
    stats = agreement([p.delta_lp for p in flat], [p.real_delta_lp for p in flat], [p.document for p in flat], seed)
    settings = dict(window=window, units=units, seed=seed, max_tokens=max_tokens, pairs_requested=pairs,
                    start_token=start.describe())
    return AblationStudy(rows, stats, flat, settings)


def plot_agreement(pairs: list[AblationPair], path: str, title: str = "", units: str = "bits") -> None:
    """Scatter of ΔLP (decomposition) against the real drop in LP when the source is removed."""
    from ..files import pyplot, save_figure

    plt = pyplot()

    x = [p.delta_lp for p in pairs]
    y = [p.real_delta_lp for p in pairs]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(x, y, s=10, alpha=0.6)
    lo, hi = min(x + y), max(x + y)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"ΔLP from the decomposition ({units})")
    ax.set_ylabel(f"LP drop when the token is removed and the model re-run ({units})")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
