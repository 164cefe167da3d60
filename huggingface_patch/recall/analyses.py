"""The five factual-recall analyses of Geva et al. (2023) as library functions, each returning a
:class:`~.result.RecallResult` (the per-item records, the facts used and the summary with its statistics) that
writes itself and reads itself back. The command-line tools (``analysis.attention_knockout`` and the others)
call these and add what they know of the run (facts known, sample, timing) to the summary.

``queries``: the facts to analyse (:func:`~.queries.known_queries`, :func:`~.queries.sample_queries`);
``clusters``: one label per query for the cluster-bootstrap intervals and paired tests
(:func:`~.statistics.cluster_labels`; None: facts independent); ``progress``: a tqdm bar advanced per fact.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .result import RecallResult

#: what the knockout's per-item value is
KNOCKOUT_METRIC = "(p_new - p_base) / p_base * 100"


def _result(files: tuple[str, str], records: list[dict], queries, summary: dict) -> RecallResult:
    return RecallResult(files[0], files[1], records, [q.summary() for q in queries], summary)


def knockout_result(model, queries, *, window: int, window_rule: str | None = None, sets: Sequence[str] | None = None,
                    clusters=None, cluster_by: str = "relation", seed: int = 0, max_rows: int = 256,
                    progress=None) -> RecallResult:
    """Attention knockout from the last position to each target set over windows of ``window`` blocks."""
    from .knockout import attention_knockout, list_knockout_sets, summarize

    records = attention_knockout(model, queries, window=window, sets=list(sets or list_knockout_sets()),
                                 max_rows=max_rows, progress=progress)
    summary = dict(window=window, window_rule=window_rule, metric=KNOCKOUT_METRIC,
                   **summarize(records, clusters=clusters, cluster_by=cluster_by, seed=seed))
    return _result(("knockout.csv", "knockout_summary.json"), records, queries, summary)


def extraction_result(model, tokenizer, queries, *, final_norm: bool = False, clusters=None,
                      cluster_by: str = "relation", seed: int = 0, max_rows: int = 256, progress=None) -> RecallResult:
    """Attribute extraction by the attention and MLP sublayers at the last position."""
    from .extraction import attribute_extraction, num_layers, summarize_extraction

    records = attribute_extraction(model, tokenizer, queries, apply_final_norm=final_norm, max_rows=max_rows,
                                   progress=progress)
    layers = num_layers(model)
    summary = dict(final_norm=final_norm, num_layers=layers,
                   **summarize_extraction(records, layers, clusters, cluster_by, seed))
    return _result(("extraction.csv", "extraction_summary.json"), records, queries, summary)


def attributes_rate_result(model, tokenizer, queries, paragraphs: Mapping[str, str], *, positions=None,
                           top_k: int = 500, keep: int = 50, final_norm: bool = False, clusters=None,
                           cluster_by: str = "relation", seed: int = 0, max_rows: int = 256,
                           progress=None) -> RecallResult:
    """The attributes rate per position and layer, against each subject's reference ``paragraphs``."""
    from .attributes_rate import POSITIONS, attributes_rate, reference_set, summarize_rates

    references = {s: reference_set(tokenizer, text) for s, text in paragraphs.items()}
    records = attributes_rate(model, tokenizer, queries, references, positions=list(positions or POSITIONS),
                              top_k=top_k, keep=keep, apply_final_norm=final_norm, max_rows=max_rows,
                              progress=progress)
    summary = dict(top_k=top_k, keep=keep,
                   **summarize_rates(records, clusters=clusters, cluster_by=cluster_by, seed=seed))
    return _result(("attributes_rate.csv", "attributes_rate_summary.json"), records, queries, summary)


def sublayer_result(model, tokenizer, queries, *, kinds: Sequence[str], measure_layer: int, window: int,
                    metric: str = "attribute-prob", paragraphs: Mapping[str, str] | None = None,
                    position: str = "subject-last", top_k: int = 500, final_norm: bool = False,
                    measure_rule: str | None = None, window_rule: str | None = None, clusters=None,
                    cluster_by: str = "relation", seed: int = 0, max_rows: int = 256, progress=None) -> RecallResult:
    """MLP or attention knockout over windows of ``window`` blocks, measured at block ``measure_layer``."""
    from .attributes_rate import reference_set
    from .sublayer import sublayer_knockout, summarize_sublayer

    references = None
    if metric == "attributes-rate":
        references = {s: reference_set(tokenizer, text) for s, text in (paragraphs or {}).items()}
    records = sublayer_knockout(model, tokenizer, queries, kinds=kinds, measure_layer=measure_layer, window=window,
                                metric=metric, position=position, references=references, top_k=top_k,
                                apply_final_norm=final_norm, max_rows=max_rows, progress=progress)
    summary = dict(metric=metric, position=position, measure_layer=measure_layer, measure_rule=measure_rule,
                   window=window, window_rule=window_rule,
                   **summarize_sublayer(records, clusters, cluster_by, seed))
    return _result(("sublayer.csv", "sublayer_summary.json"), records, queries, summary)


def patching_result(model, queries, *, sources: Sequence[int], position_sets=None, final_norm: bool = False,
                    clusters=None, cluster_by: str = "relation", seed: int = 0, max_rows: int = 256,
                    progress=None) -> RecallResult:
    """Extraction when earlier-layer states of the same prompt are patched in from each source block."""
    from .patching import POSITION_SETS, patching_extraction, summarize_patching

    records = patching_extraction(model, queries, sources=sources, position_sets=list(position_sets or POSITION_SETS),
                                  apply_final_norm=final_norm, max_rows=max_rows, progress=progress)
    return _result(("patching.csv", "patching_summary.json"), records, queries,
                   summarize_patching(records, clusters, cluster_by, seed))
