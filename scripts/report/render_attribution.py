"""The report's ΔLP, embedding-space, faithfulness and path-length sections."""

from __future__ import annotations

import re

from . import verdicts
from .format import MODELS, header, interval, num
from .papers import CLAIMS, REFERENCES

#: below this many clusters a cluster-bootstrap interval is not read as a finding
FEW_CLUSTERS = 5
#: a reserved slot of a tokenizer (Gemma's ``<unusedN>``), as a reading shows it
UNUSED_SLOT = re.compile(r"<unused\d+>")


class AttributionSections:
    """Mixed into :class:`~report.render.Report`."""

    def deltalp(self) -> list[str]:
        from huggingface_patch.stats import wilson

        lines = ["## ΔLP: which context token matters most (Oh & Schuler 2023)", "", f"Paper: {REFERENCES['oh']}.", "",
                 "Text: the project's essays; window 50; exact fp32 decomposition. The argmax source excludes the "
                 "start token (as the official code). ΔLP against real ablation: the same (target, source) pairs "
                 "scored by ΔLP and by removing the source token from the input and re-running (essays cut to 128 "
                 "tokens; interval: cluster bootstrap by document).", "",
                 *header("model", "targets", "argmax = previous token (%)", "within 5 tokens (%)", "mean distance",
                         "ΔLP vs ablation: Spearman", "Pearson", "pairs")]
        keys = []
        for model in self.models():
            keys += [f"{model}/deltalp/deltalp", f"{model}/deltalp/ablation"]
            a, b = self.step(model, "deltalp", "deltalp"), self.step(model, "deltalp", "ablation")
            if not a and not b:
                continue
            cells = ["n/a"] * 4
            if a:
                d = a["data"]
                share = wilson(d["previous"], d["targets"])
                cells = [str(d["targets"]), interval(share.to_dict(), scale=100),
                         num(100 * d["within5"] / d["targets"] if d["targets"] else None), num(d["mean_distance"], 2)]
            ab = b["data"] if b else {}
            lines.append(f"| {MODELS[model]} | {' | '.join(cells)} | "
                         f"{interval(ab.get('spearman_interval'), 3) if ab else 'not run'} | "
                         f"{num(ab.get('pearson'), 3)} | {ab.get('n', 'n/a')} |")
        lines += ["", CLAIMS["deltalp"], "",
                  "**Cannot compare numerically.** The paper's abstract gives no previous-token share and no "
                  "ablation correlation; ours are descriptive. ΔLP removes a token's contribution from the final "
                  "state, real ablation removes the token from the input, so the two differ wherever a token also "
                  "changes how the others are processed.", "", self.runs_line(keys), ""]
        if self.results.get("page_screenshot"):
            lines += ["The ΔLP page of the first essay (SmolLM2-135M), a target selected:", "",
                      "![ΔLP page](figures/deltalp_page.png)", ""]
        for model in self.models():
            lines += self.figure(model, "ablation", "ablation_scatter", f"{MODELS[model]}: ΔLP vs ablation")
        return lines

    # -------------------------------------------------------------------------------- embedding

    def embedding(self) -> list[str]:
        lines = ["## Parameters read in embedding space (Dar et al. 2023)", "", f"Paper: {REFERENCES['dar']}.", ""]
        keys = []
        for model in self.models():
            keys.append(f"{model}/embedding/select")
            select = self.step(model, "embedding", "select")
            if not select:
                continue
            rule = select["data"].get("rule") or "see `analysis.embedding_space select`"
            lines += [f"**{MODELS[model]}.** Selection rule, stated before reading: {rule}", "",
                      *header("block", "FF neuron: value · E (top 8)", "VO head: top token pairs",
                              "QK head: top token pairs")]
            for chosen in select["data"]["chosen"]:
                layer = chosen["layer"]
                cells = []
                for kind in ("ff", "vo", "qk"):
                    key = f"{model}/embedding/{kind}_L{layer}"
                    keys.append(key)
                    reading = (self.steps.get(key) or {}).get("data") or {}
                    self.shown.add(key)
                    if kind == "ff":
                        tokens = (reading.get("top") or {}).get("value", [])
                        listed = ", ".join(f"`{t}`" for t in tokens) or "n/a"
                        cells.append(f"neuron {chosen.get('neuron')}: {listed}")
                    else:
                        head = chosen.get(f"{kind}_head")
                        pairs = reading.get("pairs") or []
                        cells.append(f"head {head}: " + ("; ".join(f"`{a}`→`{b}`" for a, b in pairs) or "n/a"))
                lines.append(f"| {layer} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            if any(UNUSED_SLOT.search(line) for line in lines[-len(select["data"]["chosen"]):]):
                lines += ["", "`<unusedN>` entries are reserved special tokens of the tokenizer. These readings, and "
                              "the alignment below, ran before the filters excluded the added tokens a tokenizer "
                              "flags special (commit 03da0f3); a rerun would leave them out, show the next pairs "
                              "instead and rank the alignment's top tokens without them."]
            lines.append("")
        lines += ["Parameters vs hidden states: recall of the hidden state's top-50 tokens among the top tokens of "
                  "the 5 most activated units' projections, against the same read-out at randomly permuted positions "
                  "(the official notebook's baseline).", "",
                  *header("model", "part", "mean recall", "permuted baseline", "layers above", "positions")]
        for model in self.models():
            keys.append(f"{model}/embedding/align")
            align = self.step(model, "embedding", "align")
            if not align:
                continue
            for part, p in align["data"]["parts"].items():
                lines.append(f"| {MODELS[model]} | {part} | {num(p['mean_recall'], 3)} | "
                             f"{num(p['mean_baseline'], 3)} | "
                             f"{p['layers_above']} of {p['layers']} | {align['data'].get('positions')} |")
        lines += ["", CLAIMS["embedding"], ""]
        for model in self.models():
            align = self.steps.get(f"{model}/embedding/align")
            if align:
                lines.append(f"- {MODELS[model]}: " + verdicts.embedding(align["data"]))
        lines += ["", self.runs_line(keys), ""]
        for model in self.models():
            lines += self.figure(model, "align", "align", f"{MODELS[model]}: parameters vs hidden states")
        return lines

    # ----------------------------------------------------------------------------- faithfulness

    METRICS = (("spearman_loo", "Spearman with leave-one-out"), ("top1_loo", "top-1 = leave-one-out's"),
               ("area_between", "LeRF − MoRF (nats)"), ("lds", "LDS"), ("mrr_ioi", "MRR, IOI"),
               ("mrr_agreement", "MRR, agreement"))

    def faithfulness(self) -> list[str]:
        lines = ["## How faithful is ΔLP? (the faithfulness benchmark)", "",
                 "ΔLP next to the attribution methods people use, each peer from its own package (captum 0.9.0, "
                 "lxt 2.1), on the same items: random essay targets (24 tokens of context each; clusters: essays) "
                 "and generated IOI and subject-verb agreement items the model gets right (clusters: templates, "
                 "subject nouns). Means with 95 % cluster-bootstrap intervals; cost in forward passes of an item, "
                 "measured in the same run. Leave-one-out is the reference of the first two columns. The DLA and "
                 "CP-LRP rows agree to round-off by construction: with the decomposition's frozen attention and "
                 "norms, DLA is CP-LRP's input × gradient (checked against lxt in the tests). Definitions: "
                 "[faithfulness.md](faithfulness.md).", ""]
        keys = []
        for model in self.models():
            keys.append(f"{model}/faithfulness/benchmark")
            entry = self.step(model, "faithfulness", "benchmark")
            if not entry:
                continue
            d = entry["data"]
            present = [(k, label) for k, label in self.METRICS if any(k in m for m in d["summary"].values())]
            lines += [f"**{MODELS[model]}** ({d.get('corpus_items')} essay targets; known-answer items: "
                      + ", ".join(f"{t} {n}" for t, n in (d.get("task_items") or {}).items()) + ")", "",
                      *header("method", *[label for _, label in present], "forward passes per item")]
            for method, metrics in d["summary"].items():
                cells = [interval(metrics.get(k), 3) for k, _ in present]
                cost = (d.get("cost") or {}).get(method, {}).get("forward_pass_equivalents_per_item")
                lines.append(f"| {method} | " + " | ".join(cells) + f" | {num(cost, 1)} |")
            lines += ["", f"- {MODELS[model]}: " + self._faithfulness_reading(d)]
            if d.get("conservation"):
                lines.append(f"- {MODELS[model]}: " + self._conservation_reading(d["conservation"]))
            lines.append("")
            lines += self.figure(model, "benchmark", "faithfulness", f"{MODELS[model]}: faithfulness")
        lines += [self.runs_line(keys), ""]
        return lines

    @staticmethod
    def _conservation_reading(conservation: dict) -> str:
        """How far each LRP method's relevances (every input position's, the start token's included) sum to the
        logit (difference) they explain, per task: median ratio with its quartiles."""
        parts = []
        for method, tasks in conservation.items():
            cells = [f"{task} {num(c['median_ratio'], 2)} (quartiles {num(c['quartiles'][0], 2)} to "
                     f"{num(c['quartiles'][1], 2)}; "
                     f"{num(100 * c['share_conserved'], 0)} % of {c['items']} within "
                     f"{num(100 * c['within'], 0)} %)" for task, c in tasks.items()]
            parts.append(f"{method}: " + ", ".join(cells))
        return ("Conservation: LRP's relevances, summed over every input position, against the logit (difference) "
                "they explain, median ratio per task with its quartiles (1 = conserved) — " + "; ".join(parts)
                + ". Neither bundled model has bias parameters, so a rule set that conserves relevance gives 1 up to "
                "round-off; a ratio far from 1 means the rules, as the package applies them to this model, lose or "
                "add relevance on the way to the inputs, so the scores are not a split of the logit.")

    @staticmethod
    def _faithfulness_reading(d: dict) -> str:
        """Where ΔLP wins and loses: the paired comparisons with Holm-adjusted p < 0.05; then those whose 95 %
        interval of the difference excludes 0 without reaching it, labelled unadjusted; and the metrics where
        the exact cluster sign-flip test cannot reach 0.05 after Holm at all (too few clusters)."""
        comparisons = d.get("comparisons") or {}
        family = sum(len(metrics) for metrics in comparisons.values())
        found: dict = {"better": {}, "worse": {}, "above": {}, "below": {}}
        floors = {}
        for other, metrics in comparisons.items():
            for metric, c in metrics.items():
                diff = c["difference"]
                clusters = diff.get("clusters")
                if clusters and clusters <= 16 and family * 2 / 2 ** clusters >= 0.05:
                    floors[metric] = clusters
                if c.get("p_holm", 1) < 0.05:
                    found["better" if diff["estimate"] > 0 else "worse"].setdefault(metric, []).append(other)
                elif (diff.get("low") is not None and (diff["low"] > 0 or diff["high"] < 0)
                      and (clusters is None or clusters >= FEW_CLUSTERS)):
                    found["above" if diff["low"] > 0 else "below"].setdefault(metric, []).append(other)

        def listed(kind: str) -> str:
            return "; ".join(f"{', '.join(v)} on {k}" for k, v in found[kind].items())

        parts = [f"ΔLP is {kind} than {listed(kind)}" for kind in ("better", "worse") if found[kind]]
        text = (" and ".join(parts) + " (paired by item, Holm-adjusted p < 0.05 over every comparison)." if parts
                else "ΔLP is not distinguishable from any method on any metric after the Holm adjustment.")
        unadjusted = [f"{'above' if kind == 'above' else 'below'} {listed(kind)}" for kind in ("above", "below")
                      if found[kind]]
        if unadjusted:
            text += (" Without the adjustment, the 95 % interval of the paired difference puts ΔLP "
                     + "; ".join(unadjusted) + f" (metrics with fewer than {FEW_CLUSTERS} clusters left out: a "
                     "bootstrap over so few clusters does not hold its level).")
        if floors:
            groups = sorted(set(floors.values()), reverse=True)
            text += (" The exact cluster sign-flip test cannot go below p = "
                     + ", ".join(f"{2 / 2 ** g:.2g} with {g} clusters" for g in groups)
                     + f", so after Holm over {family} comparisons no difference on {', '.join(sorted(floors))} can "
                     "reach 0.05: a limit of the design (more essays and templates would lift it), not evidence of "
                     "no difference.")
        return text

    # ------------------------------------------------------------------------------ path length

    def path_length(self) -> list[str]:
        key = "both/path_length/path_length"
        self.shown.add(key)
        entry = self.steps.get(key)
        lines = ["## Path length of the residual stream vs the next-token logit", ""]
        if not entry:
            return lines + [self.runs_line([key]), ""]
        d = entry["data"]
        lines += [f"Definition: {d.get('definition')}. Text: the saturation text, cut to 256 tokens per document. "
                  "This is the project's own analysis; no paper figure to compare.", "",
                  *header("model", "layers", "tokens", "Pearson / Spearman with the next-token logit "
                          "(Spearman: 95 % cluster-bootstrap interval over documents)", "with its log-probability",
                          "mean path length per layer")]
        for row in d["models"]:
            spearman = interval(row.get("spearman_next_logit_interval"), 3) \
                if row.get("spearman_next_logit_interval") else num(row.get("spearman_next_logit"), 3)
            lines.append(f"| {row['model']} | {row['num_layers']} | {row['tokens_with_next']} | "
                         f"{num(row.get('pearson_next_logit'), 3)} / {spearman} | "
                         f"{num(row.get('pearson_next_logprob'), 3)} / {num(row.get('spearman_next_logprob'), 3)} | "
                         f"{num(row.get('mean_path_length_per_layer'), 2)} |")
        lines += ["", self.runs_line([key]), ""]
        for png in ("path_length_vs_logit", "path_length_cumulative"):
            name = f"results_both_path_length_{png}.png"
            if name in self.results.get("figures", {}):
                lines += [f"![{png.replace('_', ' ')}](figures/{name})", ""]
        return lines
