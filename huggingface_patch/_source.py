"""The git commit of the package's source tree, read once when the package is imported.

Run records name the code that produced them (:func:`huggingface_patch.records.source_commit`). Reading the
commit when a record is written would name whatever is checked out at the end of a long run, not the code
that was imported at its start; so it is read here, at import, and only when the package lives in a git
checkout (two ``git`` calls; nothing at all for an installed package).
"""

from __future__ import annotations

import os
import subprocess


def _read() -> str | None:
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


AT_IMPORT = _read()
