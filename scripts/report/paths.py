"""Where the report reads and writes."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, "docs", "results")
ITEMS = os.path.join(RESULTS, "items")
FIGURES = os.path.join(REPO, "docs", "figures")
REPORT = os.path.join(REPO, "docs", "results.md")
README = os.path.join(REPO, "README.md")
