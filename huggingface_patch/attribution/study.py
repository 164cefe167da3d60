"""ΔLP over a whole corpus, as ``analysis.deltalp`` reports it: pieces from the model or from a
``run_decompose.py`` folder, stitched rows (token, word or contrastive level), the per-target summary, and
the comparison of linearization conventions. :class:`DeltaLPStudy` writes its own outputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..corpus import StartToken, prepare_pieces
from ..errors import InputError
from ..paper_files import piece_record_name
from ..piece_reader import foreign_pieces, read_piece, run_pieces
from ..records import read_record
from ..tokens import raw_tokens, token_texts
from .contrastive import contrastive_deltalp
from .tables import PieceAnalysis, analyse_piece, deltalp_rows, infer_pieces, stitch_targets, summarize_targets
from .words import word_rows

log = logging.getLogger(__name__)

LEVELS = ("token", "word", "contrast")


def model_analyses(model, tokenizer, documents: list[str], window: int, start: StartToken, *,
                   context: int | None = None, conventions=None, progress: bool = True, precision: str = "fp32"):
    """``(pieces, analyses)``: the documents cut as ``run_decompose.py`` cuts them (or into ``context``-token
    pieces) and each piece decomposed (a generator: one piece in memory at a time)."""
    pieces = prepare_pieces(documents, tokenizer, model.config, start, context=context)

    def run():
        from tqdm.auto import tqdm

        for number, piece in enumerate(tqdm(pieces, desc="ΔLP", unit="piece", disable=not progress)):
            yield analyse_piece(model, tokenizer, piece.ids, window, document=piece.document, piece=number,
                                start=piece.start, offset=piece.offset, conventions=conventions,
                                precision=precision)

    return pieces, run()


def file_analyses(folder: str, model_name: str, tokenizer, identifiers: list[str] | None = None,
                  window: int | None = None, allow_unrecorded: bool = False) -> list[PieceAnalysis]:
    """The pieces of a ``run_decompose.py`` folder (all of its run, or ``identifiers``), each read and checked
    by :func:`huggingface_patch.piece_reader.read_piece`; documents and starts come from the piece records
    (for unrecorded files, from how the pieces overlap). ``window`` keeps only the first rows."""
    record = read_record(folder)
    if identifiers is None:
        identifiers = run_pieces(folder) if record is not None or not allow_unrecorded else foreign_pieces(folder)
    if not identifiers:
        raise InputError(f"{folder} has no pieces to read")
    pieces = [read_piece(folder, identifier, model_name, tokenizer, allow_unrecorded=allow_unrecorded)
              for identifier in identifiers]
    if record is not None:
        import json
        import os

        places = []
        for identifier in identifiers:
            with open(os.path.join(folder, piece_record_name(identifier)), encoding="utf-8") as handle:
                entry = json.load(handle)
            places.append((entry["document"], entry["start"]))
    else:
        places = infer_pieces([p.ids.tolist() for p in pieces])
    analyses = []
    for number, (piece, (document, start)) in enumerate(zip(pieces, places)):
        dec = piece.decomposition if window is None else piece.decomposition[:window]
        ids = piece.ids.long()
        analyses.append(PieceAnalysis(document, number, start, ids, raw_tokens(tokenizer, ids.tolist()),
                                      piece.final_state, dec, piece.readout, piece.bias,
                                      extra=dict(identifier=piece.identifier),
                                      texts=token_texts(tokenizer, ids.tolist()),
                                      offset=1 if piece.start_token else 0))
    return analyses


def piece_rows(analysis: PieceAnalysis, targets: list[int], *, level: str = "token", base: float = 2.0,
               foil_id: int | None = None, foil: str | None = None, tokenizer=None) -> list[dict]:
    """The rows of one piece's chosen targets, at ``level`` ``token``, ``word`` or ``contrast``."""
    if level == "word":
        return word_rows(analysis, base=base, targets=targets, tokenizer=tokenizer)
    if level == "contrast":
        return deltalp_rows(analysis, contrastive_deltalp(analysis, foil_id, base=base), targets, extra=dict(foil=foil))
    return deltalp_rows(analysis, analysis.deltalp(base), targets)


def targets_of(stitched: dict, analysis: PieceAnalysis) -> list[int]:
    """The piece positions of ``analysis`` that are its stitched targets (each article token once)."""
    return sorted(t for (doc, _), (number, t) in stitched.items()
                  if doc == analysis.document and number == analysis.piece)


@dataclass
class DeltaLPStudy:
    """ΔLP of a corpus: ``rows`` (one per document, target and source), ``summary`` (per target: argmax source
    and distance; the distance histogram), ``settings``, the ``analyses`` kept for the page view (or None),
    and the convention comparison (or None)."""

    rows: list[dict]
    summary: dict
    settings: dict
    analyses: list[PieceAnalysis] | None = None
    conventions: dict | None = None
    extra: dict = field(default_factory=dict)
    #: decomposition-lens data for the page view: ``{document: {target index: ...}}`` (see :func:`lens_for_targets`)
    lens: dict = field(default_factory=dict)

    def documents(self) -> list[str]:
        return sorted({str(r["document"]) for r in self.rows}, key=lambda d: (len(d), d))

    def page(self, document, title: str | None = None) -> str:
        """The interactive HTML view of ``document`` (:mod:`huggingface_patch.attribution.page`)."""
        from .page import deltalp_page, page_data

        data = page_data(self.rows, document, self.settings, self.lens.get(str(document)))
        return deltalp_page(data, title or f"{self.settings.get('model', 'model')}: ΔLP, document {document}")

    def _repr_html_(self) -> str:
        """In a notebook: the page of the first document, in a sandboxed frame."""
        import html as _html

        page = self.page(self.documents()[0])
        return (f'<iframe srcdoc="{_html.escape(page, quote=True)}" style="width:100%;height:520px;border:1px solid '
                '#ddd" sandbox="allow-scripts"></iframe>')

    @classmethod
    def from_folder(cls, folder: str) -> "DeltaLPStudy":
        """See :func:`read_study`."""
        return read_study(folder)

    def selected(self, document, first: int, last: int) -> list[dict]:
        """Rows of ``document`` whose target index lies in ``[first, last]`` (the plotted range)."""
        return [r for r in self.rows if str(r["document"]) == str(document) and first <= r["target_index"] <= last]

    def write(self, folder, plot_range: tuple, model_name: str, html: bool = False) -> None:
        """``deltalp.csv``, ``deltalp_summary.json``, ``heatmap.png`` and ``bars.png`` of ``plot_range``
        ``(document, first, last)``, ``conventions.json`` when conventions were compared, and with ``html`` one
        page per document (``deltalp_doc{d}.html``); ``folder`` is a :class:`~huggingface_patch.files.ResultFolder`."""
        from ..files import write_csv, write_json, write_text
        from .plots import plot_heatmap, plot_target_bars

        document, first, last = plot_range
        selected = self.selected(document, first, last)
        if not selected:
            documents = ", ".join(str(d) for d in sorted({r["document"] for r in self.rows}, key=str))
            raise InputError(f"the plot range {document}:{first}-{last} selects no targets (documents: {documents})")
        units = self.settings["units"]
        write_csv(self.rows, folder.path("deltalp.csv"))
        write_json(dict(self.settings, **self.summary), folder.path("deltalp_summary.json"))
        what = {"word": "word ", "contrast": "contrastive "}.get(self.settings["level"], "")
        plot_heatmap(selected, folder.path("heatmap.png"), units=units,
                     title=f"{model_name}: {what}ΔLP, document {document}, targets {first}-{last}")
        last_target = max(r["target_index"] for r in selected)
        plot_target_bars([r for r in selected if r["target_index"] == last_target], folder.path("bars.png"),
                         units=units)
        if self.conventions is not None:
            write_json(dict(model=model_name, window=self.settings.get("window"), units=units, reference="default",
                            variants=self.conventions), folder.path("conventions.json"))
        if html:
            for doc in self.documents():
                write_text(self.page(doc, f"{model_name}: {what}ΔLP, document {doc}"),
                           folder.path(f"deltalp_doc{doc}.html"))


#: the keys of ``deltalp_summary.json`` that are the summary (:func:`~.tables.summarize_targets`); the rest are
#: the settings
SUMMARY_KEYS = ("include_bos", "n_targets", "n_targets_with_argmax", "mean_distance", "max_distance",
                "distance_histogram", "targets")


def read_study(folder: str) -> DeltaLPStudy:
    """The study :meth:`DeltaLPStudy.write` put into ``folder`` (rows, summary, settings, the convention
    comparison; the pieces' analyses and lens data are not files, so they are absent)."""
    from ..stored import StoredFolder

    stored = StoredFolder(folder)
    written = stored.json("deltalp_summary.json")
    summary = {key: written[key] for key in SUMMARY_KEYS if key in written}
    settings = {key: value for key, value in written.items() if key not in SUMMARY_KEYS or key == "include_bos"}
    conventions = stored.json("conventions.json")["variants"] if stored.has("conventions.json") else None
    return DeltaLPStudy(stored.table("deltalp.csv"), summary, settings, conventions=conventions)


def deltalp_study(analyses, stitched: dict, *, level: str = "token", units: str = "bits", base: float = 2.0,
                  foil_id: int | None = None, foil: str | None = None, tokenizer=None, include_bos: bool = False,
                  keep: bool = False, settings: dict | None = None) -> DeltaLPStudy:
    """Rows and summary over ``analyses`` (an iterable of :class:`PieceAnalysis`), each target taken from the
    piece where it has the most context (``stitched``). ``keep``: hold the analyses (for the page view)."""
    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}: choose from {', '.join(LEVELS)}")
    rows, kept = [], []
    for analysis in analyses:
        rows.extend(piece_rows(analysis, targets_of(stitched, analysis), level=level, base=base, foil_id=foil_id,
                               foil=foil, tokenizer=tokenizer))
        if keep:
            kept.append(analysis)
    rows.sort(key=lambda r: (str(r["document"]), r["target_index"], r["source_index"]))
    summary = summarize_targets(rows, include_bos=include_bos)
    settings = dict(settings or {}, units=units, level=level, foil=foil, foil_id=foil_id, n_rows=len(rows),
                    n_documents=len({r["document"] for r in rows}))
    return DeltaLPStudy(rows, summary, settings, kept if keep else None)


def lens_for_targets(model, tokenizer, pieces, stitched: dict, document, first: int, last: int, window: int,
                     top_k: int = 3, progress: bool = True) -> dict:
    """Decomposition-lens data (:func:`~huggingface_patch.attribution.page.lens_data`) of the targets
    ``first..last`` of ``document``, each in the piece where it has the most context: ``{target index: data}``."""
    import torch
    from tqdm.auto import tqdm

    from ..architectures import readout
    from .decomposition_lens import lens_run, lens_table
    from .page import lens_data

    wanted = [(index, stitched[key]) for key in sorted(stitched) if str(key[0]) == str(document)
              and first <= (index := key[1]) <= last]
    proj = readout(model).weight.detach().double().cpu()  # once: 1.3 GB for a 262k vocabulary
    runs = {}  # one decomposing run per piece, up to its last wanted target's next token
    for number in sorted({number for _, (number, _) in wanted}):
        end = max(t for _, (n, t) in wanted if n == number) + 2
        runs[number] = lens_run(model, torch.tensor(pieces[number].ids[:end]), window, proj)
    out = {}
    for index, (number, t) in tqdm(wanted, desc="decomposition lens", unit="target", disable=not progress):
        piece = pieces[number]
        table = lens_table(model, tokenizer, runs[number].ids, t, window, top_k, run=runs[number])
        out[index] = lens_data(table, piece.offset, piece.start)
    return out


def compare_conventions(model, tokenizer, documents: list[str], window: int, start: StartToken, reference_rows,
                        *, context: int | None = None, base: float = 2.0) -> dict:
    """Spearman and Pearson correlation of token-level ΔLP between the default linearization and each other
    convention, and how often the argmax source stays the same."""
    from ..engine.conventions import Conventions
    from ..stats import correlations

    key = lambda r: (r["document"], r["target_index"], r["source_index"])  # noqa: E731
    reference = {key(r): r["delta_lp"] for r in reference_rows}
    results = {}
    for conventions in Conventions.all_variants():
        pieces, analyses = model_analyses(model, tokenizer, documents, window, start, context=context,
                                          conventions=conventions, progress=False)
        stitched = stitch_targets(pieces)
        values = {}
        for analysis in analyses:
            for row in piece_rows(analysis, targets_of(stitched, analysis), base=base):
                values[key(row)] = row["delta_lp"]
        common = [k for k in reference if k in values and not math.isnan(reference[k]) and not math.isnan(values[k])]
        result = correlations([reference[k] for k in common], [values[k] for k in common])
        results[conventions.name] = dict(n_pairs=len(common), spearman=result["spearman"], pearson=result["pearson"],
                                         argmax_agreement=_same_argmax(reference_rows, values, key))
        log.info("%s: Spearman %.3f over %d pairs", conventions.name, result["spearman"], len(common))
    return results


def _same_argmax(rows, values, key) -> float | None:
    groups: dict = {}
    for row in rows:
        if not row["is_bos"]:
            groups.setdefault((row["document"], row["target_index"]), []).append(row)
    agree = total = 0
    for group in groups.values():
        if all(key(r) in values for r in group):
            total += 1
            agree += max(group, key=lambda r: r["delta_lp"]) is max(group, key=lambda r: values[key(r)])
    return agree / total if total else None


def token_level_rows(model, tokenizer, documents, window, start, *, context=None, base: float = 2.0) -> list[dict]:
    """Token-level rows of a corpus (the reference of :func:`compare_conventions` when the study itself is at
    word or contrast level)."""
    pieces, analyses = model_analyses(model, tokenizer, documents, window, start, context=context, progress=False)
    return deltalp_study(analyses, stitch_targets(pieces), base=base).rows

