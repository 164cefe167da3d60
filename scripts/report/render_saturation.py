"""The report's saturation sections (Lioubashevski et al.): order of the top-k tokens, the probe, early
exit, the rank-2 LM."""

from __future__ import annotations

from . import verdicts
from .format import MODELS, header, interval, num, pvalue
from .papers import CLAIMS, REFERENCES


class SaturationSections:
    """Mixed into :class:`~report.render.Report`."""

    def saturation(self) -> list[str]:
        lines = ["## Saturation of the top-k tokens (Lioubashevski et al.)", "",
                 f"Paper: {REFERENCES['lioubashevski']}.", "",
                 "k = 5; positions are kept when the top-1 saturates by ⌊0.85 L⌋ (the official code's filter). "
                 "The untrained control is the same architecture re-initialised (seed 0) on the same text.", "",
                 "### Saturation in order", "",
                 "Strict Kendall τ between rank and saturation layer (ties discordant), over kept positions with at "
                 "least 3 saturated ranks; interval: cluster bootstrap by document. Two p-values: the official "
                 "code's test shuffles the saturation layers of the positions the filter kept, which ignores that "
                 "the filter selected them on s₁ (it is biased: on null tables it rejects far too often, "
                 "`docs/statistics.md`); the selection-aware test shuffles every position's layers before the "
                 "filter and applies the filter again.", "",
                 *header("model", "weights", "kept positions", "τ", "paper's test: null mean, p (biased)",
                         "selection-aware: null mean, p")]
        keys = []
        for model in self.models():
            for step, label in (("all", "trained"), ("random_init", "untrained (re-initialised)")):
                keys.append(f"{model}/saturation/{step}")
                entry = self.step(model, "saturation", step)
                if not entry or "order" not in entry["data"]:
                    continue
                d = entry["data"]
                kendall, layers = d["order"]["kendall"], d["layers"]
                paper, aware = kendall.get("paper", {}), kendall.get("selection_aware", {})
                lines.append(f"| {MODELS[model]} | {label} | {layers.get('kept_positions')} of "
                             f"{layers.get('positions')} | {interval(d['order'].get('tau_interval'), 3)} over "
                             f"{aware.get('positions')} | "
                             f"{num(paper.get('null_mean'), 3)}, {pvalue(paper.get('p_value'))} | "
                             f"{num(aware.get('null_mean'), 3)}, {pvalue(aware.get('p_value'))} |")
        lines += ["", CLAIMS["ordering"], CLAIMS["untrained"], ""]
        for model in self.models():
            for step in ("all", "random_init"):
                entry = self.steps.get(f"{model}/saturation/{step}")
                if entry and "order" in entry["data"]:
                    lines.append(f"- {MODELS[model]}: " + verdicts.ordering(entry["data"]["order"]["kendall"],
                                                                           untrained=step == "random_init"))
        lines += ["", self.runs_line(keys), ""]
        for model in self.models():
            lines += self.figure(model, "all", "saturation_rank_correspondence",
                                 f"{MODELS[model]}: rank correspondence")
        lines += self._probe() + self._early_exit() + self._rank2()
        return lines

    def _probe(self) -> list[str]:
        rows, counts = [], set()
        for model in self.models():
            for step, label in (("all", "trained"), ("random_init", "untrained")):
                entry = self.step(model, "saturation", step)
                if not entry or "probe" not in entry["data"]:
                    continue
                p = entry["data"]["probe"]
                null = p["permuted_labels"]
                counts.add(null.get("permutations"))
                probe, tasks = p["probe"], len(p.get("examples_per_task", {}))
                rows.append(f"| {MODELS[model]} | {label} | {p['examples']} ({tasks}) | "
                            f"{num(probe['balanced_accuracy'], 3)} ± {num(probe.get('balanced_accuracy_se'), 3)} | "
                            f"{num(p['chance'], 3)} | {num(p['gaussian_control']['balanced_accuracy'], 3)} | "
                            f"{num(null.get('balanced_accuracy_mean'), 3)} ± "
                            f"{num(null.get('balanced_accuracy_sd'), 3)} ({null.get('permutations')}) | "
                            f"{pvalue(null.get('p_value'))} |")
        # the p-value floor of the permutation null, from the permutation count the runs recorded
        floor = "".join(f" With {n} permutations the smallest possible p is 1/{n + 1} = {num(1 / (n + 1), 3)}."
                        for n in sorted(c for c in counts if c))
        lines = ["### Which rank is being fixed: the task probe", "",
                 "Balanced accuracy of a logistic-regression probe (5 folds grouped by position, so one position's "
                 "layers never straddle train and test), against the class-scalar Gaussian control of the official "
                 "code and a permuted-label null (labels shuffled within each layer). The ± is the standard error over "
                 "the folds of one split (balancing and folds drawn once, seed 0); it leaves out the spread between "
                 "splits, which can be as large: on Gemma, two runs whose saturation layers differed at 1 of 15,822 "
                 "positions drew different folds and scored 0.600 and 0.627 (runs at b581481 and 6373b4b)." + floor,
                 "", *header("model", "weights", "examples (tasks)", "probe", "chance", "Gaussian control",
                             "permuted labels: mean ± sd", "p"), *rows]
        return lines + self._verdicts("probe", "probe", verdicts.probe)

    def _verdicts(self, claim: str, part: str, verdict) -> list[str]:
        """The paper's claim, then one verdict line per model whose ``saturation/all`` run has ``part``."""
        lines = ["", CLAIMS[claim], ""]
        for model in self.models():
            entry = self.steps.get(f"{model}/saturation/all")
            if entry and part in entry["data"]:
                lines.append(f"- {MODELS[model]}: " + verdict(entry["data"][part]))
        return lines + [""]

    def _early_exit(self) -> list[str]:
        lines = ["### Early exit", "",
                 "Held-out positions (split by document): the probe exits at the first layer it predicts \"top-1 "
                 "already fixed\"; each baseline is taken at its threshold whose speed-up is nearest the probe's, and "
                 "accuracy (against the actual next token) is compared position by position (clusters: documents).",
                 "", *header("model", "probe: accuracy at speed-up", "baseline", "baseline threshold (speed-up)",
                             "probe − baseline (points)", "p", "oracle (s₁)", "positions")]
        for model in self.models():
            entry = self.step(model, "saturation", "all")
            if not entry or "early_exit" not in entry["data"]:
                continue
            e = entry["data"]["early_exit"]
            probe = e.get("probe")
            oracle = e.get("oracle")
            for name, c in (e.get("comparisons") or {}).items():
                d = c["accuracy_probe_minus_baseline"]
                lines.append(f"| {MODELS[model]} | {num(probe and probe['accuracy'], 1, 100)}% at ×"
                             f"{num(probe and probe['speedup'], 2)} | {name} | {c['baseline_threshold']} "
                             f"(×{num(c['baseline_speedup'], 2)}) | {interval(d['difference'], scale=100)} | "
                             f"{pvalue(d['p_value'])} | {num(oracle and oracle['accuracy'], 1, 100)}% at ×"
                             f"{num(oracle and oracle['speedup'], 2)} | {e.get('test_positions')} |")
        return lines + self._verdicts("early_exit", "early_exit", verdicts.early_exit)

    def _rank2(self) -> list[str]:
        lines = ["### The rank-2 token when the top-1 is wrong", "",
                 "Among positions whose final top-1 is wrong: how often the final rank-2 token is the actual next "
                 "token, when rank 2 saturates only at the last layer (late, s₂ = L−1) vs at least 7 layers earlier "
                 "(early, s₂ ≤ L−7); Wilson intervals, two-proportion z-test.", "",
                 *header("model", "late: rank-2 right", "early: rank-2 right", "z", "p")]
        for model in self.models():
            entry = self.step(model, "saturation", "all")
            if not entry or "lm" not in entry["data"]:
                continue
            lm = entry["data"]["lm"]
            late, early = lm.get("late") or {}, lm.get("early") or {}
            lines.append(f"| {MODELS[model]} | {interval(late.get('interval'), scale=100)}% of "
                         f"{late.get('positions')} | "
                         f"{interval(early.get('interval'), scale=100)}% of {early.get('positions')} | "
                         f"{num(lm.get('z'), 2)} | {pvalue(lm.get('p_value'))} |")
        return lines + self._verdicts("rank2", "lm", verdicts.rank2)
