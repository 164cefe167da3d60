"""The git commit of the package's source tree, read once per process, when a run starts.

Run records name the code that produced them (:func:`huggingface_patch.records.source_commit`). Reading the
commit when a record is written would name whatever is checked out at the end of a long run, not the code the
run imported at its start; so :func:`commit` reads it the first time it is asked and keeps it, and every
command line asks when it starts (``cli.run_cli``), before any work. Importing the package runs no ``git``;
an installed package (no checkout) never does.
"""

from __future__ import annotations

import functools
import os
import subprocess


def _read() -> str | None:
    """``HEAD`` (12 hex digits), with ``+modified`` when tracked files differ from it; None outside a checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, ".git")):
        return None
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit[:12]}+modified" if changed else commit[:12]


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The commit read the first time this process asked (see the module)."""
    return _read()
