"""Every skip in ``tests/`` is listed, with its reason, in ``tests/SKIPS.md``."""

import os
import re

from helpers import TESTS as HERE  # noqa: E402

SKIP = re.compile(r"pytest\.skip\(|pytest\.mark\.skip\b|pytest\.mark\.skipif\(|pytest\.importorskip\(")


def test_every_skip_is_listed():
    with open(os.path.join(HERE, "SKIPS.md"), encoding="utf-8") as handle:
        listed = set(re.findall(r"^\| `(test_[a-z0-9_]+\.py)` \|", handle.read(), re.M))
    skipping = set()
    for folder, _, names in os.walk(HERE):  # every tier
        for name in sorted(names):
            if name.startswith("test_") and name.endswith(".py") and name != "test_skip_list.py":
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    if SKIP.search(handle.read()):
                        skipping.add(name)
    unlisted = sorted(skipping - listed)
    assert not unlisted, f"skips not listed in tests/SKIPS.md (add a row saying why): {unlisted}"
    stale = sorted(listed - skipping)
    assert not stale, f"tests/SKIPS.md lists files that no longer skip (remove their rows): {stale}"
