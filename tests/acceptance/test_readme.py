"""The README runs as written: every ``python`` and ``bash`` block is executed (hub ids replaced by the bundled
models), in a scratch folder that sees the repository's files; the generated family table matches the
registry.

Two blocks are not run, each for a stated reason (:data:`NOT_RUN`): ``.ci/run`` (it runs this test) and
the reproduction (hours). The demo runs with ``HFP_SKIP_INSTALL=1`` (the environment exists already).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO  # noqa: E402

from huggingface_patch.architectures import family_table
from huggingface_patch.architectures.registry import registered_adapters

README = os.path.join(REPO, "README.md")
#: blocks that are not run, by a command they contain, and why
NOT_RUN = {"bash .ci/run": "it runs this test suite", "scripts/reproduce.sh": "it takes hours"}
#: hub ids a README example may use, and the bundled model that stands in for each
HUB_IDS = {"HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m", "google/gemma-3-270m": "gemma3-270m"}
#: what the scratch folder links to (relative paths in the examples resolve as in the repository)
LINKED = ("examples", "scripts", "analysis", "benchmarks", "huggingface_patch", "run_decompose.py",
          "representations_to_deltalp.py", ".venv", "setup.py", "pyproject.toml")


def readme_blocks() -> list[tuple[str, int, str]]:
    """``(language, line, code)`` of every fenced ``python`` / ``bash`` block of the README."""
    text = open(README, encoding="utf-8").read()
    blocks = []
    for match in re.finditer(r"^```(python|bash)\n(.*?)^```", text, re.S | re.M):
        line = text[: match.start()].count("\n") + 1
        blocks.append((match.group(1), line, match.group(2)))
    return blocks


def _runnable():
    params = []
    for language, line, code in readme_blocks():
        reason = next((why for command, why in NOT_RUN.items() if command in code), None)
        marks = [pytest.mark.skip(reason=f"not run: {reason}")] if reason else []
        params.append(pytest.param(language, code, id=f"{language}-line{line}", marks=marks))
    return params


def test_readme_has_runnable_examples():
    languages = [language for language, _, _ in readme_blocks()]
    assert languages.count("python") >= 1 and languages.count("bash") >= 3, languages


def test_family_table_is_the_registry():
    text = open(README, encoding="utf-8").read()
    block = re.search(r"<!-- families:start[^\n]*-->\n(.*?)\n<!-- families:end -->", text, re.S)
    assert block, "the README lost its generated family table"
    # the package's own families: a test module registers a renamed one from outside, which the README omits
    own = [a for a in registered_adapters() if type(a).__module__.startswith("huggingface_patch.")]
    assert block.group(1).strip() == family_table(own).strip(), \
        "the README's family table is stale: paste huggingface_patch.architectures.family_table() between the markers"


def test_coverage_table_is_the_installed_transformers():
    """Every causal-LM family of the installed Transformers is in the README, with its status and reason."""
    from huggingface_patch.architectures import coverage, coverage_table

    text = open(README, encoding="utf-8").read()
    block = re.search(r"<!-- coverage:start[^\n]*-->\n(.*?)\n<!-- coverage:end -->", text, re.S)
    assert block, "the README lost its generated coverage table"
    assert block.group(1).strip() == coverage_table().strip(), \
        "stale README coverage table: paste huggingface_patch.architectures.coverage_table() between the markers"
    rows = {r["model_type"]: r for r in coverage()}
    assert rows["mixtral"]["supported"] and rows["olmo2"]["supported"] and rows["bloom"]["supported"]
    assert not rows["mamba"]["supported"] and "state-space" in rows["mamba"]["reason"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    for name in LINKED:
        if os.path.exists(os.path.join(REPO, name)):
            os.symlink(os.path.join(REPO, name), folder / name)
    return folder


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.parametrize("language,code", _runnable())
def test_readme_block_runs(language, code, scratch):
    for hub, bundled in HUB_IDS.items():
        code = code.replace(hub, bundled)
    env = dict(os.environ, HFP_SKIP_INSTALL="1", PYTHONPATH=REPO, MPLBACKEND="Agg")
    if language == "python":
        command = [sys.executable, "-c", code]
    else:
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        command = ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"README {language} block failed ({result.returncode}):\n{code}\n" \
        f"--- stderr (end) ---\n{result.stderr[-3000:]}"
