"""One line per finding: does our result agree with the paper's claim, disagree, or not compare, and the most
likely reason. Each rule reads only the step's figures in ``results.json`` and was fixed before the runs; a
rule names the test it relies on (95 % intervals, p < 0.05)."""

from __future__ import annotations

import math

ALPHA = 0.05


def _ci(interval: dict | None) -> tuple[float, float]:
    if not interval:
        return (math.nan, math.nan)
    return (interval.get("low", math.nan), interval.get("high", math.nan))


def _sign(interval: dict | None) -> int:
    """+1 / -1 when the interval excludes 0 above / below, 0 otherwise."""
    low, high = _ci(interval)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def line(word: str, text: str) -> str:
    return f"**{word}.** {text}"


def knockout(data: dict) -> str:
    comparison = (data.get("comparisons") or {}).get("subject vs non-subject", {})
    layer = comparison.get("layer_of_largest_drop") or {}
    low, high = layer.get("ci_low"), layer.get("ci_high")
    if low is None or high is None:
        return line("Cannot compare", "the run has no subject vs non-subject comparison.")
    if low > 0:
        return line("Agrees", f"the non-subject (relation) edges' largest drop comes {layer['difference']:g} blocks "
                              f"before the subject edges' (interval [{low:g}, {high:g}] blocks, both selections "
                              "repeated): relation first, subject later.")
    if high < 0:
        return line("Disagrees", f"the subject edges' largest drop comes first ({layer['difference']:g} blocks, "
                                 f"[{low:g}, {high:g}]); a small model may route the relation differently.")
    return line("Cannot tell", f"the order of the two largest drops is not resolved ({layer['difference']:g} blocks, "
                               f"[{low:g}, {high:g}]).")


def extraction(data: dict) -> str:
    comparison = data.get("attention_vs_mlp") or {}
    sign = _sign(comparison.get("difference"))
    p = comparison.get("p_value", math.nan)
    if sign > 0 and p < ALPHA:
        return line("Agrees in direction", f"attention extracts more often than the MLP (paired by fact, p = {p:.2g});"
                                           " the rates themselves are low, most likely because a 135–270M model "
                                           "knows fewer facts and ranks the attribute first less often than GPT-2 XL.")
    if sign < 0 and p < ALPHA:
        return line("Disagrees", f"the MLP extracts more often than attention (p = {p:.2g}).")
    return line("Cannot tell", f"attention and MLP extraction rates are not distinguishable (p = {p:.2g}).")


def attributes_rate(data: dict) -> str:
    comparisons = data.get("comparisons") or {}
    peak = data.get("peak") or {}
    wins = [k.split(" vs ")[1] for k, c in comparisons.items()
            if _sign(c["peak_over_layers"]["difference"]) > 0 and c["peak_over_layers"]["p_value"] < ALPHA]
    losses = [k.split(" vs ")[1] for k, c in comparisons.items()
              if _sign(c["peak_over_layers"]["difference"]) < 0 and c["peak_over_layers"]["p_value"] < ALPHA]
    top = max(peak, key=lambda k: peak[k]["value"]["estimate"]) if peak else None
    reason = ("most likely our short reference paragraphs (written for this project, not Wikipedia) and the small "
              "models' vocabulary read-out")
    if comparisons and len(wins) == len(comparisons):
        return line("Agrees", "the last subject position's peak rate is above every other position's (paired by "
                              "fact).")
    if losses:
        return line("Disagrees", f"the last subject position does not stand out: {', '.join(losses)} peak higher "
                                 f"(paired, p < {ALPHA}); the highest peak is at {top}. Reason: {reason}.")
    return line("Does not reproduce", f"the last subject position is above {', '.join(wins) or 'no position'} only; "
                                      f"the highest peak is at {top}. Reason: {reason}.")


def sublayer(data: dict) -> str:
    out = []
    for name, comparison in (data.get("comparisons") or {}).items():
        mean = comparison.get("mean_over_layers") or {}
        sign, p = _sign(mean.get("difference")), mean.get("p_value", math.nan)
        other = name.split(" vs ")[1]
        if sign < 0 and p < ALPHA:
            out.append(f"MLP knock-outs lower the rate more than {other} (p = {p:.2g})")
        elif sign > 0 and p < ALPHA:
            out.append(f"{other} knock-outs lower it more than MLP (p = {p:.2g})")
        else:
            out.append(f"MLP vs {other}: not distinguishable (p = {p:.2g})")
    raised = [k for k, v in (data.get("largest_drop") or {}).items()
              if v["value"]["estimate"] > (data.get("baseline") or {}).get("mean", math.inf)]
    agree = out and all(s.startswith("MLP knock-outs") for s in out)
    text = "; ".join(out) + ("." if out else "no comparison in the run.")
    if raised:
        text += (f" Even the smallest rate under {', '.join(raised)} is above the unperturbed one: knocking it out "
                 "raises the rate.")
    return line("Agrees" if agree else "Partly agrees" if any(s.startswith("MLP knock-outs") for s in out)
                else "Disagrees", text)


def patching(data: dict) -> str:
    rows = (data.get("comparisons") or {}).get("subject") or []
    early = [r for r in rows if r["source_layer"] <= 0]
    detail = "; ".join(f"from block {r['source_layer']}: "
                       f"{100 * r['patched_minus_unpatched']['difference']['estimate']:+.1f} points "
                       f"(p = {r['patched_minus_unpatched']['p_value']:.2g})" for r in early)
    cuts = [r for r in early if _sign(r["patched_minus_unpatched"]["difference"]) < 0
            and r["patched_minus_unpatched"]["p_value"] < ALPHA]
    if early and len(cuts) == len(early):
        return line("Agrees in direction (with the secondary description)",
                    f"patching the subject positions with early states lowers MHSA extraction ({detail}).")
    if cuts:
        return line("Partly agrees", f"only some early sources lower extraction significantly ({detail}).")
    return line("Does not reproduce", f"no early source lowers extraction significantly ({detail}).")


def ordering(kendall: dict, untrained: bool = False) -> str:
    aware = kendall.get("selection_aware") or {}
    tau, p, null = aware.get("tau", math.nan), aware.get("p_value", math.nan), aware.get("null_mean", math.nan)
    what = "the untrained model" if untrained else "the model"
    if tau > null and p < ALPHA:
        return line("Agrees", f"in {what} the top tokens saturate in order beyond what the position filter alone "
                              f"gives (τ = {tau:.3f} against a selection-aware null of {null:.3f}, p = {p:.2g}).")
    if p < ALPHA:
        return line("Disagrees", f"in {what} τ = {tau:.3f} is below the selection-aware null ({null:.3f}, p = "
                                 f"{p:.2g}).")
    return line("Does not reproduce" if not untrained else "Disagrees",
                f"in {what} τ = {tau:.3f} is not above what the filter alone gives ({null:.3f}, p = {p:.2g}); "
                "the paper's own test (the column before) does not account for the filter.")


def probe(data: dict) -> str:
    accuracy = data["probe"]["balanced_accuracy"]
    null = data["permuted_labels"]
    control = data["gaussian_control"]["balanced_accuracy"]
    if null.get("p_value", 1) < ALPHA and accuracy > control:
        return line("Agrees", f"the task is decodable: {accuracy:.3f} against {null['balanced_accuracy_mean']:.3f} "
                              f"with permuted labels (p = {null['p_value']:.2g}) and {control:.3f} for the "
                              "class-scalar Gaussian control.")
    return line("Does not reproduce", f"{accuracy:.3f} is not above the permuted-label null "
                                      f"({null.get('balanced_accuracy_mean', math.nan):.3f}, p = "
                                      f"{null.get('p_value', math.nan):.2g}) and the control ({control:.3f}).")


#: a baseline threshold whose speed-up is within this fraction of the probe's counts as the same cost
SAME_COST = 0.10


def early_exit(data: dict) -> str:
    """Only comparisons at about the probe's speed-up decide (a baseline that exits later or earlier trades
    accuracy for cost, so beating it says nothing); the others are reported and marked."""
    comparisons = data.get("comparisons") or {}
    if not comparisons:
        return line("Cannot compare", data.get("note") or "the probe was not trained.")
    parts, signs = [], []
    for name, c in comparisons.items():
        d = c["accuracy_probe_minus_baseline"]
        sign, p = _sign(d["difference"]), d["p_value"]
        text = f"{name} {100 * d['difference']['estimate']:+.1f} points (p = {p:.2g})"
        probe, base = c.get("probe_speedup"), c.get("baseline_speedup")
        if probe and base and abs(base - probe) > SAME_COST * probe:
            text += f", at ×{base:.2f} against the probe's ×{probe:.2f}: not the same cost, not counted"
        else:
            signs.append(sign if p < ALPHA else 0)
        parts.append(text)
    better, worse = any(s > 0 for s in signs), any(s < 0 for s in signs)
    if not signs:
        word = "Cannot compare"
    elif better and worse:
        word = "Mixed"
    elif worse:
        word = "Disagrees"
    elif better:
        word = "Agrees" if all(s > 0 for s in signs) else "Partly agrees"
    else:
        word = "Cannot tell"
    return line(word, "probe minus baseline at the baseline's nearest speed-up: " + "; ".join(parts) + ".")


def rank2(data: dict) -> str:
    if data.get("small_group"):
        early = (data.get("early") or {}).get("positions")
        return line("Cannot compare", f"the early group (s₂ ≤ L−7) has {early} positions: too few for the test.")
    p = data.get("p_value")
    late, early = data["late"]["rank2_accuracy"], data["early"]["rank2_accuracy"]
    if p is not None and p < ALPHA:
        return line("Agrees in direction" if early > late else "Disagrees",
                    f"rank-2 accuracy {100 * early:.1f}% when s₂ is early vs {100 * late:.1f}% when late "
                    f"(p = {p:.2g}).")
    return line("Cannot tell", f"{100 * early:.1f}% vs {100 * late:.1f}% (p = {p if p is None else f'{p:.2g}'}).")


def embedding(align: dict) -> str:
    parts = align.get("parts") or {}
    if not parts:
        return line("Cannot compare", "no alignment run.")
    above = all(p["mean_recall"] > p["mean_baseline"] for p in parts.values())
    detail = "; ".join(f"{name}: {p['mean_recall']:.3f} vs {p['mean_baseline']:.3f}, {p['layers_above']} of "
                       f"{p['layers']} layers above" for name, p in parts.items())
    return line("Agrees in direction" if above else "Disagrees", f"recall against the permuted baseline: {detail}.")
