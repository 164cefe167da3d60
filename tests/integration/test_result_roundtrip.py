"""Every analysis result reads itself back: a tool writes a folder, the result class's ``from_folder`` reads it,
and writing the read-back result again gives the same tables and summaries, byte for byte )."""

from __future__ import annotations

import json
import math
import os

import pytest

from huggingface_patch.errors import RecordError
from huggingface_patch.files import ResultFolder
from huggingface_patch.records import read_record
from huggingface_patch.stored import StoredFolder, read_table
from huggingface_patch.testing import save_tiny_model

TEXT = "The keys to the cabinet are on the table, and the cat sat on the mat."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("models") / "tiny-llama"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.sentitems"
    path.write_text("!ARTICLE\nThe cat sat on the mat and looked at the dog.\n!ARTICLE\n"
                    "A dog ran home fast, then slept by the warm fire all night.\n")
    return str(path)


def _rewrite(result_write, source: str, target: str) -> None:
    """Write a read-back result into ``target`` with ``source``'s record (as the tool did)."""
    record = {k: v for k, v in read_record(source).items() if k not in ("files", "settings_sha256")}
    with ResultFolder(target, record) as out:
        result_write(out)


def _same_files(first: str, second: str) -> None:
    names = sorted(n for n in os.listdir(first) if n.endswith((".csv", ".json")) and n != "run.json")
    assert names, f"{first} holds no table"
    for name in names:
        a, b = (open(os.path.join(folder, name), encoding="utf-8").read() for folder in (first, second))
        assert a == b, f"{name} differs after reading back and writing again"


def _run(main, argv) -> None:
    """Run a tool in-process; its record must name the tool as a user runs it (``python -m analysis...``, with
    the subcommand where it has one)."""
    import sys

    argv = [str(a) for a in argv]
    assert main(argv) == 0
    prog = sys.modules[main.__module__].PROG
    tool = read_record(argv[argv.index("--output-dir") + 1])["tool"]
    assert tool == prog or tool.startswith(prog + " "), f"the run record names the tool {tool!r}, not {prog!r}"


def test_deltalp_ablation_and_lens(tiny, corpus, tmp_path):
    from analysis import ablation_agreement, decomposition_lens
    from analysis import deltalp as deltalp_cli
    from huggingface_patch.attribution.ablation import AblationStudy
    from huggingface_patch.attribution.decomposition_lens import DecompositionLensTable
    from huggingface_patch.attribution.study import DeltaLPStudy

    _run(deltalp_cli.main, ["--model", tiny, "--corpus", corpus, "--window", 6, "--plot-range", "0:0-6",
                            "--output-dir", tmp_path / "d"])
    study = DeltaLPStudy.from_folder(str(tmp_path / "d"))
    assert study.rows == read_table(str(tmp_path / "d" / "deltalp.csv")) and study.summary["n_targets"] > 0
    _rewrite(lambda out: study.write(out, ("0", 0, 6), "tiny-llama"), str(tmp_path / "d"), str(tmp_path / "d2"))
    _same_files(str(tmp_path / "d"), str(tmp_path / "d2"))

    _run(ablation_agreement.main, ["--model", tiny, "--corpus", corpus, "--window", 6, "--pairs", 12,
                                   "--max-tokens", 16, "--output-dir", tmp_path / "a"])
    ablation = AblationStudy.from_folder(str(tmp_path / "a"))
    assert len(ablation.pairs) == ablation.stats["n"] == len(ablation.rows)
    _rewrite(lambda out: ablation.write(out, "tiny-llama"), str(tmp_path / "a"), str(tmp_path / "a2"))
    _same_files(str(tmp_path / "a"), str(tmp_path / "a2"))

    _run(decomposition_lens.main, ["--model", tiny, "--text", TEXT, "--top-k", 3, "--output-dir", tmp_path / "l"])
    lens = DecompositionLensTable.from_folder(str(tmp_path / "l"))
    assert lens.column.shape == (len(set(r["layer"] for r in lens.rows)), len(lens.result.sources))
    _rewrite(lambda out: lens.write(out, "tiny-llama"), str(tmp_path / "l"), str(tmp_path / "l2"))
    _same_files(str(tmp_path / "l"), str(tmp_path / "l2"))


@pytest.mark.parametrize("argv, report", [
    (["ff", "--layer", 1, "--neuron", 3], "NeuronReport"),
    (["vo", "--layer", 1, "--head", 0, "--min-k", 20, "--max-k", 200], "PairsReport"),
    (["qk", "--layer", 0, "--head", 1, "--min-k", 20, "--max-k", 200], "PairsReport"),
    (["tsne", "--layer", 1, "--neuron", 3, "--k", 12], "TSNEReport"),
    (["align", "--max-positions", 40], "AlignmentReport"),
    (["select", "--max-positions", 40], "SelectionReport"),
])
def test_embedding_space_reports(tiny, corpus, tmp_path, argv, report):
    from analysis import embedding_space
    from huggingface_patch.embedding_space import reports

    extra = ["--corpus", corpus] if argv[0] in ("align", "select") else []
    _run(embedding_space.main, [*argv, "--model", tiny, *extra, "--output-dir", tmp_path / "e"])
    result = getattr(reports, report).from_folder(str(tmp_path / "e"))
    _rewrite(lambda out: result.write(out, "tiny-llama"), str(tmp_path / "e"), str(tmp_path / "e2"))
    _same_files(str(tmp_path / "e"), str(tmp_path / "e2"))


def test_logit_lens_and_path_length(tiny, corpus, tmp_path):
    from analysis import logit_lens, path_length
    from huggingface_patch.residual_stream.report import LogitLensReport, PathLengthReport

    _run(logit_lens.main, ["--model", tiny, "--corpus", corpus, "--colour", "prob", "--colour", "kl",
                           "--output-dir", tmp_path / "ll"])
    lens = LogitLensReport.from_folder(str(tmp_path / "ll"))
    _rewrite(lambda out: lens.write(out, ("prob", "kl")), str(tmp_path / "ll"), str(tmp_path / "ll2"))
    _same_files(str(tmp_path / "ll"), str(tmp_path / "ll2"))
    assert sorted(os.listdir(tmp_path / "ll")) == sorted(os.listdir(tmp_path / "ll2")), "the heat maps too"

    _run(path_length.main, ["--model", tiny, "--corpus", corpus, "--output-dir", tmp_path / "p"])
    paths = PathLengthReport.from_folder(str(tmp_path / "p"))
    assert [m.num_layers for m in paths.models] == [len(paths.models[0].tokens[0]["steps"])]
    _rewrite(lambda out: paths.write(out), str(tmp_path / "p"), str(tmp_path / "p2"))
    _same_files(str(tmp_path / "p"), str(tmp_path / "p2"), )


def test_faithfulness(tmp_path):
    from analysis import faithfulness
    from huggingface_patch.faithfulness.benchmark import FaithfulnessResult

    folder = save_tiny_model("qwen2", str(tmp_path / "qwen2"))
    _run(faithfulness.main, ["--model", folder, "--items", 3, "--task-items", 0, "--context", 6,
                             "--methods", "deltalp", "random", "--output-dir", tmp_path / "f"])
    result = FaithfulnessResult.from_folder(str(tmp_path / "f"))
    assert set(result.curves) == set(result.summary)
    _rewrite(lambda out: result.write(out, "qwen2"), str(tmp_path / "f"), str(tmp_path / "f2"))
    _same_files(str(tmp_path / "f"), str(tmp_path / "f2"))


def test_saturation_reads_every_part(tiny, corpus, tmp_path):
    from analysis import saturation
    from huggingface_patch.saturation.result import SaturationResult

    _run(saturation.main, ["all", "--model", tiny, "--corpus", corpus, "--permutations", 50, "--min-per-class", 2,
                           "--folds", 2, "--late-margin", 2, "--no-progress", "--output-dir", tmp_path / "s"])
    result = SaturationResult.from_folder(str(tmp_path / "s"))
    for part, summary in result.summaries.items():
        with open(tmp_path / "s" / f"saturation_{part}.json", encoding="utf-8") as handle:
            assert summary == json.load(handle), part
    assert "layers" in result.summaries and len(result.tables["layers"]) == result.summaries["layers"]["positions"]
    # the figures need the collected data; the tables and summaries come out the same
    _rewrite(result.write, str(tmp_path / "s"), str(tmp_path / "s2"))
    _same_files(str(tmp_path / "s"), str(tmp_path / "s2"))

    _run(saturation.main, ["intervene", "--model", tiny, "--corpus", corpus, "--no-progress",
                           "--output-dir", tmp_path / "i"])
    intervene = SaturationResult.from_folder(str(tmp_path / "i"))
    assert list(intervene.parts) == ["intervene"] and not intervene.skipped
    _rewrite(intervene.write, str(tmp_path / "i"), str(tmp_path / "i2"))
    _same_files(str(tmp_path / "i"), str(tmp_path / "i2"))


def test_unfinished_or_foreign_folders_are_refused(tiny, tmp_path):
    from huggingface_patch.attribution.ablation import AblationStudy

    os.makedirs(tmp_path / "empty")
    with pytest.raises(RecordError, match="no run.json"):
        AblationStudy.from_folder(str(tmp_path / "empty"))
    with pytest.raises(RecordError, match="not found"):
        StoredFolder(str(tmp_path / "nowhere"))
    from analysis import decomposition_lens

    _run(decomposition_lens.main, ["--model", tiny, "--text", TEXT, "--output-dir", tmp_path / "l"])
    with pytest.raises(RecordError, match="wrote no ablation_pairs.csv"):
        AblationStudy.from_folder(str(tmp_path / "l"))
    with pytest.raises(RecordError, match="not of 'python -m analysis.ablation_agreement'"):
        StoredFolder(str(tmp_path / "l"), tool="python -m analysis.ablation_agreement")


def test_table_columns_are_typed(tmp_path):
    from huggingface_patch.atomic import write_csv

    path = str(tmp_path / "t.csv")
    write_csv([{"n": 1, "x": 0.5, "flag": True, "token": "=SUM(A1)", "digits": "7", "gap": None},
               {"n": 2, "x": float("nan"), "flag": False, "token": "-5.1", "digits": "the", "gap": 3.0}], path)
    rows = read_table(path)
    assert rows[0]["n"] == 1 and rows[1]["n"] == 2 and isinstance(rows[0]["n"], int)
    assert rows[0]["x"] == 0.5 and math.isnan(rows[1]["x"])
    assert rows[0]["flag"] is True and rows[1]["flag"] is False
    assert rows[0]["token"] == "=SUM(A1)", "the spreadsheet guard is removed"
    assert rows[1]["token"] == "-5.1" and rows[0]["digits"] == "7", "a text column stays text"
    assert rows[0]["gap"] is None and rows[1]["gap"] == 3.0
