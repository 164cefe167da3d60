"""The report's factual-recall sections (Geva et al. 2023): knockout, extraction, attributes rate, sublayer
knockout, patching."""

from __future__ import annotations

from . import verdicts
from .format import MODELS, header, interval, num, pvalue
from .papers import CLAIMS, REFERENCES


class RecallSections:
    """Mixed into :class:`~report.render.Report` (``step``, ``runs_line``, ``figure``, ``models``)."""

    def recall(self) -> list[str]:
        lines = ["## Factual recall (Geva et al. 2023)", "", f"Paper: {REFERENCES['geva']}.", ""]
        lines += self._knockout() + self._extraction() + self._attributes_rate() + self._sublayer()
        lines += self._patching()
        return lines

    def _knockout(self) -> list[str]:
        lines = ["### Attention knockout", "",
                 "Relative change of the attribute's probability (%) when the last position cannot attend to a set "
                 "of positions in a window of blocks; the largest mean drop over windows is a selected extremum, "
                 "so its interval repeats the selection in every bootstrap resample (clusters: relations), and "
                 "\"stable\" is how often the resamples pick the same window.", "",
                 *header("model", "edges cut", "largest drop (%)", "at block", "stable", "window", "facts")]
        keys = []
        for model in self.models():
            entry = self.step(model, "recall", "knockout")
            keys.append(f"{model}/recall/knockout")
            if not entry:
                continue
            d = entry["data"]
            for name in ("subject", "non-subject", "last"):
                drop = (d.get("largest_drop") or {}).get(name)
                if drop:
                    share = drop["selection_share"].get(str(drop["point"]), 0)
                    lines.append(f"| {MODELS[model]} | {name} → last | {interval(drop['value'])} | {drop['point']} | "
                                 f"{100 * share:.0f}% | {d.get('window')} ({d.get('window_rule')}) | "
                                 f"{d.get('facts_used')} of {d.get('facts_known')} known ({d.get('facts_total')}) |")
        lines += ["", CLAIMS["knockout"], ""]
        for model in self.models():
            entry = self.steps.get(f"{model}/recall/knockout")
            if entry:
                lines += [f"- {MODELS[model]}: " + verdicts.knockout(entry["data"])]
        lines += ["", self.runs_line(keys), ""]
        for model in self.models():
            lines += self.figure(model, "knockout", "knockout", f"{MODELS[model]}: attention knockout")
        return lines

    def _extraction(self) -> list[str]:
        lines = ["### Attribute extraction", "",
                 "Share of known facts where a sublayer's output at the last position, projected to the vocabulary, "
                 "ranks the attribute first at some block (cluster-bootstrap intervals by relation); MHSA − MLP is "
                 "paired by fact. The paper projects without the final norm; both are shown.", "",
                 *header("model", "projection", "MHSA extracts (%)", "MLP extracts (%)", "MHSA − MLP (points)",
                         "p", "facts")]
        keys = []
        for model in self.models():
            for step in ("extraction", "extraction_final_norm"):
                keys.append(f"{model}/recall/{step}")
                entry = self.step(model, "recall", step)
                if not entry:
                    continue
                d = entry["data"]
                rates, diff = d.get("per_example_interval") or {}, d.get("attention_vs_mlp") or {}
                lines.append(f"| {MODELS[model]} | {'final norm' if d.get('final_norm') else 'no norm (paper)'} | "
                             f"{interval(rates.get('attention'), scale=100)} | "
                             f"{interval(rates.get('mlp'), scale=100)} | "
                             f"{interval(diff.get('difference'), scale=100)} | {pvalue(diff.get('p_value'))} | "
                             f"{d.get('n_examples')} |")
        lines += ["", CLAIMS["extraction"], ""]
        for model in self.models():
            entry = self.steps.get(f"{model}/recall/extraction")
            if entry:
                lines.append(f"- {MODELS[model]} (no norm): " + verdicts.extraction(entry["data"]))
        lines += ["", self.runs_line(keys), ""]
        for model in self.models():
            lines += self.figure(model, "extraction", "extraction", f"{MODELS[model]}: attribute extraction")
        return lines

    def _attributes_rate(self) -> list[str]:
        lines = ["### Attributes rate", "",
                 "Share (%) of a position's top-50 tokens (read through the unembedding, stopwords and short tokens "
                 "removed from the top 500) found in the subject's reference paragraph; the highest mean over "
                 "blocks per position, a selected extremum (interval with the selection repeated; clusters: "
                 "relations). Block −1 is the embedding output.", "",
                 *header("model", "projection", "position", "peak rate (%)", "at block", "last subject − this "
                         "position (points)", "p")]
        keys = []
        for model in self.models():
            for step in ("attributes_rate", "attributes_rate_final_norm"):
                keys.append(f"{model}/recall/{step}")
                entry = self.step(model, "recall", step)
                if not entry:
                    continue
                d = entry["data"]
                for position in ("subject-last", "subject-first", "after-subject", "first", "last"):
                    peak = (d.get("peak") or {}).get(position)
                    if not peak:
                        continue
                    comparison = (d.get("comparisons") or {}).get(f"subject-last vs {position}", {})
                    peak_diff = comparison.get("peak_over_layers") or {}
                    lines.append(f"| {MODELS[model]} | {'final norm' if 'final' in step else 'no norm (paper)'} | "
                                 f"{position} | {interval(peak['value'])} | {peak['point']} | "
                                 f"{interval(peak_diff.get('difference')) if peak_diff else '—'} | "
                                 f"{pvalue(peak_diff.get('p_value')) if peak_diff else '—'} |")
        lines += ["", CLAIMS["attributes_rate"], ""]
        for model in self.models():
            for step in ("attributes_rate", "attributes_rate_final_norm"):
                entry = self.steps.get(f"{model}/recall/{step}")
                if entry:
                    label = "final norm" if "final" in step else "no norm"
                    lines.append(f"- {MODELS[model]} ({label}): " + verdicts.attributes_rate(entry["data"]))
        lines += ["", self.runs_line(keys), ""]
        for model in self.models():
            lines += self.figure(model, "attributes_rate_final_norm", "attributes_rate",
                                 f"{MODELS[model]}: attributes rate (final norm)")
        return lines

    def _sublayer(self) -> list[str]:
        lines = ["### Sublayer knockout", "",
                 "Attributes rate (%) of the last subject position at the measure block when a window of sublayers "
                 "starting at a block is knocked out: MLP output zeroed; attention uniform over the prefix (what the "
                 "official code's mask does) or zeroed. The lowest mean over window starts is a selected extremum.",
                 "", *header("model", "knocked out", "lowest rate (%)", "window start", "mean, first third",
                             "unperturbed (%)", "measure block / window", "facts")]
        keys = []
        for model in self.models():
            keys.append(f"{model}/recall/sublayer")
            entry = self.step(model, "recall", "sublayer")
            if not entry:
                continue
            d = entry["data"]
            for kind, drop in (d.get("largest_drop") or {}).items():
                lines.append(f"| {MODELS[model]} | {kind} | {interval(drop['value'])} | {drop['point']} | "
                             f"{num(d['early_means'].get(kind))} | {interval(d.get('baseline'))} | "
                             f"{d.get('measure_layer')} / {d.get('window')} | {d.get('facts_used')} |")
        lines += ["", CLAIMS["sublayer"], ""]
        for model in self.models():
            entry = self.steps.get(f"{model}/recall/sublayer")
            if entry:
                lines.append(f"- {MODELS[model]}: " + verdicts.sublayer(entry["data"]))
        lines += ["", self.runs_line(keys), ""]
        for model in self.models():
            lines += self.figure(model, "sublayer", "sublayer", f"{MODELS[model]}: sublayer knockout")
        return lines

    def _patching(self) -> list[str]:
        lines = ["### Patching early representations", "",
                 "Share (%) of known facts with an MHSA extraction event at a later block when the input of every "
                 "later block at the named positions is replaced by the same prompt's state after an earlier block "
                 "(the source), minus the unpatched share; paired by fact (clusters: relations).", "",
                 *header("model", "positions", "source block", "extraction patched (%)", "patched − unpatched "
                         "(points)", "p")]
        keys = []
        for model in self.models():
            keys.append(f"{model}/recall/patching")
            entry = self.step(model, "recall", "patching")
            if not entry:
                continue
            d = entry["data"]
            for name, rows in (d.get("comparisons") or {}).items():
                for row, rate in zip(rows, d["patched"][name]):
                    diff = row["patched_minus_unpatched"]
                    lines.append(f"| {MODELS[model]} | {name} | {row['source_layer']} | {num(rate)} | "
                                 f"{interval(diff['difference'], scale=100)} | {pvalue(diff['p_value'])} |")
        lines += ["", CLAIMS["patching"], ""]
        for model in self.models():
            entry = self.steps.get(f"{model}/recall/patching")
            if entry:
                lines.append(f"- {MODELS[model]}: " + verdicts.patching(entry["data"]))
        lines += ["", self.runs_line(keys), ""]
        return lines
