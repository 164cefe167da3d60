"""The recall command-line tools, called in-process on a tiny saved model: --help, a small run writing
CSV/JSON/PNG, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import csv
import json
import os

import pytest

from analysis import attention_knockout, attribute_extraction, attributes_rate, patching, sublayer_knockout
from huggingface_patch.testing import save_tiny_model

TOOLS = {
    "attention_knockout": (attention_knockout,
                           ["knockout.csv", "knockout_summary.json", "knockout.png", "queries.json"]),
    "attribute_extraction": (attribute_extraction, ["extraction.csv", "extraction_summary.json", "extraction.png"]),
    "sublayer_knockout": (sublayer_knockout, ["sublayer.csv", "sublayer_summary.json", "sublayer.png"]),
    "patching": (patching, ["patching.csv", "patching_summary.json", "patching.png"]),
    "attributes_rate": (attributes_rate,
                        ["attributes_rate.csv", "attributes_rate_summary.json", "attributes_rate.png"]),
}

# subjects from the shipped example paragraphs CSV, so attributes_rate finds references
FACTS = [
    {"subject": "Vinson Massif", "prompt": "Vinson Massif is located in the continent of", "attribute": "Antarctica"},
    {"subject": "Nokia", "prompt": "In Nokia, the language spoken is", "attribute": "Finnish"},
    {"subject": "Iron Man", "prompt": "Iron Man is affiliated with the", "attribute": "Avengers"},
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("recall_cli")
    model = save_tiny_model("gpt2", str(root / "gpt2"))
    facts = root / "facts.json"
    facts.write_text(json.dumps(FACTS))
    return dict(root=root, model=model, facts=str(facts))


def error_lines(err: str) -> list[str]:
    """The error lines of stderr (progress bars from model loading also go to stderr)."""
    return [line for line in err.strip().splitlines() if "error" in line.lower() or "Traceback" in line]


def run(tool, argv) -> int:
    try:
        return tool.main(argv)
    except SystemExit as exc:  # argparse (--help, bad option values)
        return exc.code


@pytest.mark.parametrize("name", TOOLS)
def test_help(name, capsys):
    tool, _ = TOOLS[name]
    assert run(tool, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--model" in out and "--sample" in out and "--cluster" in out and "--output-dir" in out


@pytest.mark.parametrize("name", TOOLS)
def test_run_on_tiny_model(name, workspace):
    tool, outputs = TOOLS[name]
    out = workspace["root"] / f"out_{name}"
    extra = ["--window", "1"] if name == "attention_knockout" else []
    if name == "patching":
        extra = ["--sources", "-1", "0"]
    code = run(tool, ["--model", workspace["model"], "--facts", workspace["facts"], "--filter", "none",
                      "--sample", "2", "--output-dir", str(out), *extra])
    assert code == 0
    for filename in outputs:
        path = out / filename
        assert path.is_file() and path.stat().st_size > 0, filename
    with open(out / outputs[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and len({r["index"] for r in rows}) <= 2
    summary = json.loads((out / outputs[1]).read_text())
    assert summary["facts_used"] <= 2 and summary["facts_known"] == 3
    assert summary["sample"] == {"size": 2, "seed": 0, "drawn_from": 3}
    assert "0-based" in summary["layer_convention"]
    assert (out / outputs[2]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    # the result reads itself back: the same rows, the facts it used, the same summary
    from huggingface_patch.recall.result import RecallResult
    from huggingface_patch.stored import read_table

    result = RecallResult.from_folder(str(out), outputs[0], outputs[1])
    assert result.records == read_table(str(out / outputs[0])) and result.summary == summary
    assert [{k: "" if v is None else str(v) for k, v in r.items()} for r in result.records] == rows
    assert len(result.queries) == summary["facts_used"] >= len({r["index"] for r in rows})


def test_an_incomplete_recall_folder_is_refused(tmp_path):
    from huggingface_patch.errors import RecordError
    from huggingface_patch.recall.result import RecallResult

    with pytest.raises(RecordError, match="no run.json, so it is not a finished result"):
        RecallResult.from_folder(str(tmp_path), "knockout.csv", "knockout_summary.json")


def test_knockout_summary_counts_known_facts(workspace):
    out = workspace["root"] / "out_known"
    assert run(attention_knockout, ["--model", workspace["model"], "--facts", workspace["facts"], "--filter", "none",
                                    "--window", "1", "--sets", "last", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "knockout_summary.json").read_text())
    assert summary["facts_total"] == 3 and summary["facts_known"] == 3 and list(summary["summary"]) == ["last"]


def test_random_model_knows_nothing_with_the_default_filter(workspace, capsys):
    code = run(attention_knockout, ["--model", workspace["model"], "--facts", workspace["facts"],
                                    "--output-dir", str(workspace["root"] / "none")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "knows none" in err and len(error_lines(err)) == 1


def _bad_inputs(workspace):
    root = workspace["root"]
    malformed = root / "malformed.json"
    malformed.write_text("[{\"subject\": ")
    unsupported = root / "mamba"
    if not unsupported.exists():
        from helpers import save_unsupported_model

        save_unsupported_model(unsupported)
    model, facts = workspace["model"], workspace["facts"]
    return {
        "missing facts": (["--model", model, "--facts", str(root / "nope.json")], "file not found"),
        "malformed JSON": (["--model", model, "--facts", str(malformed)], "malformed JSON"),
        "bad sample": (["--model", model, "--facts", facts, "--sample", "0"], "positive integer"),
        "bad sample text": (["--model", model, "--facts", facts, "--sample", "ten"], "positive integer"),
        "missing model": (["--model", str(root / "no_such_model"), "--facts", facts], "not found"),
        "unsupported model": (["--model", str(unsupported), "--facts", facts], "unsupported architecture"),
    }


@pytest.mark.parametrize("case", ["missing facts", "malformed JSON", "bad sample", "bad sample text",
                                  "missing model", "unsupported model"])
@pytest.mark.parametrize("name", ["attention_knockout", "attribute_extraction", "sublayer_knockout", "patching",
                                  "attributes_rate"])
def test_bad_input_one_line_exit_2(name, case, workspace, capsys):
    tool, _ = TOOLS[name]
    argv, message = _bad_inputs(workspace)[case]
    code = run(tool, argv + ["--filter", "none", "--output-dir", str(workspace["root"] / "bad")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error_lines(err)) == 1 and "error:" in err and message in error_lines(err)[0], err
    assert "Traceback" not in err


def test_paragraphs_errors(workspace, capsys):
    bad = workspace["root"] / "bad.csv"
    bad.write_text("name,text\nx,y\n")
    code = run(attributes_rate, ["--model", workspace["model"], "--facts", workspace["facts"], "--paragraphs",
                                 str(bad), "--output-dir", str(workspace["root"] / "bad2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'subject' and 'paragraphs'" in err and len(error_lines(err)) == 1
    code = run(sublayer_knockout, ["--model", workspace["model"], "--facts", workspace["facts"], "--metric",
                                   "attributes-rate", "--output-dir", str(workspace["root"] / "bad3")])
    assert code == 2 and "--paragraphs" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["attention_knockout", "sublayer_knockout"])
def test_layer_window_has_one_meaning_and_keeps_its_older_name(module):
    """``--layer-window`` (blocks) is the name; ``--window`` still parses to the same setting."""
    import importlib

    tool = importlib.import_module(f"analysis.{module}").TOOL
    new, old = tool.parser().parse_args(["--layer-window", "3"]), tool.parser().parse_args(["--window", "3"])
    assert new.window == old.window == 3


def test_offset_window_of_saturation_intervene():
    from analysis.saturation import build_parser

    parser = build_parser()
    assert parser.parse_args(["intervene", "--offset-window", "2"]).window == 2
    assert parser.parse_args(["intervene", "--window", "2"]).window == 2
