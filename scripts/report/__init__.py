"""The reproduction report: ``collect`` reads the runs of ``scripts/reproduce.py`` into ``results.json`` (with
the per-item tables and figures), ``render`` turns ``results.json`` alone into ``docs/results.md``, ``papers``
holds what the papers say (only what ``PAPERS.md`` confirms), ``verdicts`` compares the two."""
