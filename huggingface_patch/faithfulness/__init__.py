"""How faithful ΔLP is next to the token-attribution methods people use, each computed by its own package.

* :mod:`.items`: what is attributed (random corpus targets; IOI and subject-verb agreement with known
  answers, generated from templates);
* :mod:`.methods`: the methods behind one interface, :func:`attribute`;
* :mod:`.metrics`: agreement with leave-one-out, deletion curves, the linear datamodeling score, reciprocal
  rank;
* :mod:`.benchmark`: every method and metric on the same items, with intervals, paired comparisons and cost.

The command line is ``python -m analysis.faithfulness``; docs/faithfulness.md says what each number means.
"""

from .benchmark import METHODS, METRIC_GROUPS, FaithfulnessResult, run_benchmark
from .items import Item, corpus_items, known_answer_items
from .methods import attribute, attribute_items, list_methods, missing_package

__all__ = ["METHODS", "METRIC_GROUPS", "FaithfulnessResult", "Item", "attribute", "attribute_items",
           "corpus_items", "known_answer_items", "list_methods", "missing_package", "run_benchmark"]
