"""Statistics the analyses share: intervals that respect bounds and clusters, paired comparisons, maxima
picked over layers reported as selected, correlations. ``docs/statistics.md`` says what each resamples and
why."""

from .correlation import correlations
from .intervals import Interval, bootstrap_mean, cluster_ids, rate_interval, wilson
from .paired import PairedComparison, holm, mcnemar, paired_comparison
from .selection import SelectedExtremum, curve_with_intervals, selected_extremum

__all__ = [
    "Interval",
    "PairedComparison",
    "SelectedExtremum",
    "bootstrap_mean",
    "cluster_ids",
    "correlations",
    "curve_with_intervals",
    "holm",
    "mcnemar",
    "paired_comparison",
    "rate_interval",
    "selected_extremum",
    "wilson",
]
