"""Every family, the built-in ones and one registered from this test package, through every entry point.

For each tiny model (all kinds of :data:`huggingface_patch.testing.TINY_KINDS` and ``renamed_llama``, a renamed
copy of Llama registered from :mod:`renamed_family`), each command-line tool runs end to end in-process and
writes its outputs; a few cheap invariants check that what it wrote is about this model.
"""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import redirect_stdout

import pytest
import torch
from helpers import IDENTITY_TOLERANCE, assert_close_rel, exit_code
from renamed_family import MODEL_TYPE, RenamedLlamaForCausalLM, build_renamed_model, register, save_renamed_model

import representations_to_deltalp
import run_decompose
from analysis import (
    ablation_agreement,
    attention_knockout,
    attribute_extraction,
    attributes_rate,
    decomposition_lens,
    embedding_space,
    logit_lens,
    patching,
    path_length,
    saturation,
    sublayer_knockout,
)
from analysis import deltalp as deltalp_cli
from huggingface_patch import AutoDecomposedModelForCausalLM, list_architectures
from huggingface_patch.testing import TINY_KINDS, save_tiny_model

register()

pytestmark = pytest.mark.slow

KINDS = TINY_KINDS + (MODEL_TYPE,)
TEXT = "The cat sat on the mat. A dog ran home fast, then slept in the sun."
FACTS = [
    {"subject": "Vinson Massif", "prompt": "Vinson Massif is located in the continent of", "attribute": "Antarctica"},
    {"subject": "Nokia", "prompt": "In Nokia, the language spoken is", "attribute": "Finnish"},
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    (root / "corpus.sentitems").write_text(f"!ARTICLE\n{TEXT}\n!ARTICLE\n{TEXT[::-1]}\n", encoding="utf-8")
    (root / "facts.json").write_text(json.dumps(FACTS), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def folders(workdir):
    """A saved tiny model of each kind (made on first use)."""
    made: dict[str, str] = {}

    def folder(kind: str) -> str:
        if kind not in made:
            path = str(workdir / "models" / kind)
            made[kind] = save_renamed_model(path) if kind == MODEL_TYPE else save_tiny_model(kind, path)
        return made[kind]

    return folder


def _ok(main, argv) -> None:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 0, f"{main.__module__} {argv} exited with {code}"


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _no_leftovers(folder) -> None:
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp-")], "temporary files left behind"


def test_renamed_family_is_a_family_everywhere(tmp_path):
    """Registering the adapter is all it takes: the registry lists it, the decomposing classes exist, and the
    Auto class picks them from a config and from a saved folder; the decomposition holds at every layer."""
    assert MODEL_TYPE in list_architectures()
    config = build_renamed_model().config
    model = AutoDecomposedModelForCausalLM.from_config(config)
    assert type(model).__name__ == "DecomposedRenamedLlamaForCausalLM"
    assert isinstance(model, RenamedLlamaForCausalLM)
    folder = save_renamed_model(str(tmp_path / "renamed"))
    loaded = AutoDecomposedModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    plain = RenamedLlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = torch.randint(3, 260, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = loaded(ids, decomposition_window=9, output_layer_decompositions=True, output_hidden_states=True)
        reference = plain(ids, output_hidden_states=True)
    assert torch.equal(out.logits, reference.logits)
    for layer, (dec, bias) in enumerate(zip(out.layer_decompositions[:-1], out.layer_decomposition_biases)):
        assert_close_rel(dec.sum(1) + bias, reference.hidden_states[layer], IDENTITY_TOLERANCE[torch.float32],
                         f"renamed layer {layer}")


@pytest.mark.parametrize("kind", KINDS)
def test_paper_scripts(kind, folders, workdir, tmp_path):
    """run_decompose.py then representations_to_deltalp.py: the ΔLP text has one block per target."""
    corpus = workdir / "corpus.sentitems"
    _ok(run_decompose.main, [corpus, folders(kind), 4, "--output-dir", tmp_path])
    name = os.path.basename(folders(kind))
    identifier = f"corpus_{name}_0"
    ids = torch.load(tmp_path / f"i_{identifier}.pt")
    decomposition = torch.load(tmp_path / f"d_{identifier}.pt")
    assert decomposition.shape[:2] == (4, ids.shape[1])
    printed = io.StringIO()
    with redirect_stdout(printed):
        _ok(representations_to_deltalp.main, [identifier, folders(kind), "--output-dir", tmp_path])
    assert printed.getvalue().count("Timestep ") == 2 * (ids.shape[1] - 1)
    _no_leftovers(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_attribution_tools(kind, folders, workdir, tmp_path):
    """analysis.deltalp, analysis.ablation_agreement and analysis.decomposition_lens."""
    corpus = workdir / "corpus.sentitems"
    _ok(deltalp_cli.main, ["--model", folders(kind), "--corpus", corpus, "--window", 4, "--context", 24,
                           "--plot-range", "0:0-5", "--output-dir", tmp_path / "deltalp"])
    rows = _csv(tmp_path / "deltalp" / "deltalp.csv")
    assert rows and all(r["delta_lp"] not in ("", "nan") for r in rows if r["is_bos"] == "False")
    _ok(ablation_agreement.main, ["--model", folders(kind), "--corpus", corpus, "--pairs", 6, "--max-tokens", 16,
                                  "--output-dir", tmp_path / "ablation"])
    assert json.loads((tmp_path / "ablation" / "ablation_summary.json").read_text())["n"] == 6
    _ok(decomposition_lens.main, ["--model", folders(kind), "--text", "The cat sat", "--target", 5, "--top-k", 2,
                                  "--output-dir", tmp_path / "lens"])
    assert json.loads((tmp_path / "lens" / "lens.json").read_text())["target"] == 5


@pytest.mark.parametrize("kind", KINDS)
def test_recall_tools(kind, folders, workdir, tmp_path):
    """The five Geva et al. tools on two facts (every fact kept: a random model knows none)."""
    common = ["--model", folders(kind), "--facts", workdir / "facts.json", "--filter", "none", "--sample", 2]
    tools = [(attention_knockout, ["--window", 1], "knockout.csv"),
             (attribute_extraction, [], "extraction.csv"),
             (sublayer_knockout, [], "sublayer.csv"),
             (patching, ["--sources", -1, 0], "patching.csv"),
             (attributes_rate, [], "attributes_rate.csv")]
    for tool, extra, table in tools:
        out = tmp_path / tool.__name__.rsplit(".", 1)[-1]
        _ok(tool.main, common + extra + ["--output-dir", out])
        assert _csv(out / table), f"{tool.__name__}: empty table"
        _no_leftovers(out)


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_space_tools(kind, folders, tmp_path):
    """FF keys/values, W_VO and W_QK (fused projections split by the adapter), t-SNE, the alignment and the
    rule-based selection."""
    from transformers import AutoModelForCausalLM

    from huggingface_patch.embedding_space.projections import has_head_weights, is_experts_layer

    model = AutoModelForCausalLM.from_pretrained(folders(kind))
    # a mixture-of-experts layer's neurons belong to its experts: read expert 0's
    expert = {layer: (["--expert", 0] if is_experts_layer(model, layer) else []) for layer in (0, 1)}
    skip = set()
    if all(is_experts_layer(model, layer) for layer in range(model.config.num_hidden_layers)):
        code = exit_code(embedding_space.main, ["align", "--model", folders(kind), "--output-dir", tmp_path / "a"])
        assert code == 2 and not (tmp_path / "a").exists(), "align on a model without dense neurons: one-line error"
        skip.add("align")
    if not has_head_weights(model, 1):  # latent attention: no fixed W_VO / W_QK, refused in one line
        for command in ("vo", "qk"):
            code = exit_code(embedding_space.main, [command, "--model", folders(kind), "--layer", 1, "--head", 1,
                                                    "--output-dir", tmp_path / f"no-{command}"])
            assert code == 2 and not (tmp_path / f"no-{command}").exists(), f"{command} on latent attention"
            skip.add(command)
    for command, extra in (("ff", ["--layer", 1, "--neuron", 3, *expert[1]]), ("vo", ["--layer", 1, "--head", 1]),
                           ("qk", ["--layer", 1, "--head", 1]), ("tsne", ["--layer", 0, "--neuron", 0, *expert[0]]),
                           ("align", []), ("select", ["--corpus", "examples/essays.sentitems", "--max-positions",
                                                      50])):
        if command in skip:
            continue
        out = tmp_path / command
        _ok(embedding_space.main, [command, "--model", folders(kind), "--output-dir", out, *extra])
        assert os.listdir(out), f"{command}: nothing written"
        _no_leftovers(out)


@pytest.mark.parametrize("kind", KINDS)
def test_lens_tools(kind, folders, workdir, tmp_path):
    """Logit lens (with mid-layer rows) and path length; the lens's last row is the model's own prediction."""
    _ok(logit_lens.main, ["--model", folders(kind), "--text", TEXT[:30], "--sublayers", "residual",
                          "--output-dir", tmp_path / "lens"])
    name = os.path.basename(folders(kind))
    data = json.loads((tmp_path / "lens" / f"logit_lens_{name}.json").read_text())
    assert all(rank == 1 for rank in data["documents"][0]["final_top1_rank"][-1])
    _ok(path_length.main, ["--model", folders(kind), "--corpus", workdir / "corpus.sentitems", "--max-tokens", 24,
                           "--output-dir", tmp_path / "path"])
    summary = json.loads((tmp_path / "path" / "path_length_summary.json").read_text())["models"]
    assert summary[0]["tokens_with_next"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_saturation_tools(kind, folders, workdir, tmp_path):
    """Saturation layers and their ordering."""
    corpus = workdir / "corpus.sentitems"
    _ok(saturation.main, ["layers", "--model", folders(kind), "--corpus", corpus, "--output-dir", tmp_path / "l"])
    _ok(saturation.main, ["order", "--model", folders(kind), "--corpus", corpus, "--permutations", 20,
                          "--output-dir", tmp_path / "o"])
    assert json.loads((tmp_path / "l" / "saturation_layers.json").read_text())["num_layers"] == 3
