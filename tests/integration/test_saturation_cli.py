"""``python -m analysis.saturation`` end to end.

Every subcommand on tiny random text models (OPT, GPT-2, Llama), a tiny random ViT on synthetic images and a
tiny random Whisper on synthetic audio; help; one-line errors.
"""

from __future__ import annotations

import json
import os
import wave

import numpy as np
import pytest
import torch

from analysis.saturation import main
from huggingface_patch.saturation.backends import ViTBackend, WhisperBackend, read_wav
from huggingface_patch.testing import save_tiny_model

TEXT_KINDS = ("opt-pre", "gpt2", "llama")
SUBCOMMANDS = ("layers", "order", "probe", "intervene", "early-exit", "lm")
#: options that let the paper's thresholds work on 6-block models
SMALL = {
    "order": ["--permutations", "200"],
    "probe": ["--min-per-class", "2", "--folds", "3"],
    "intervene": ["--min-gap", "1", "--min-saturation", "1", "--max-pairs", "5", "--window", "2"],
    "early-exit": ["--min-per-class", "2"],
    "lm": ["--late-margin", "2"],
}
OUTPUTS = {
    "layers": ["saturation_layers.csv", "saturation_layers.json", "saturation_layers.png"],
    "order": ["saturation_order.json", "saturation_order_positions.csv", "saturation_rank_correspondence.png"],
    "probe": ["saturation_probe.json", "saturation_probe.png"],
    "intervene": ["saturation_intervene.csv", "saturation_intervene.json", "saturation_intervene.png"],
    "early-exit": ["saturation_early_exit.csv", "saturation_early_exit.json", "saturation_early_exit.png"],
    "lm": ["saturation_lm.json", "saturation_lm.png"],
}
TEXT = ("The keys to the old cabinet are on the table. Nobody knows who left them there, but the cabinet has "
        "been locked for years. Every morning the baker opens her shop before the sun comes up.")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread (no intra-op synchronisation); restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("saturation")


@pytest.fixture(scope="module")
def corpus(workdir):
    path = workdir / "corpus.sentitems"
    path.write_text(f"!ARTICLE\n{TEXT}\n!ARTICLE\n{TEXT[::-1]}\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def text_models(workdir):
    # initializer_range 0.2 makes the random layers change the logit lens, so the saturation layers vary
    return {kind: save_tiny_model(kind, str(workdir / kind), num_hidden_layers=6, initializer_range=0.2)
            for kind in TEXT_KINDS}


@pytest.fixture(scope="module")
def vit_setup(workdir):
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=10, initializer_range=0.2)
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    folder = str(workdir / "vit")
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    images = workdir / "images"
    rng = np.random.default_rng(0)
    for i in range(16):
        sub = images / config.id2label[i % 3]
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(24 + i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img{i}.png")
    return folder, str(images), model


def write_wav(path, seconds: float, rate: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((signal * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def whisper_setup(workdir):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=6, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100,
                           num_mel_bins=80, max_source_positions=50, max_target_positions=64, pad_token_id=1,
                           bos_token_id=2, eos_token_id=3, decoder_start_token_id=4, suppress_tokens=None,
                           begin_suppress_tokens=None)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    folder = str(workdir / "whisper")
    model.save_pretrained(folder)
    # 1-second chunks: 100 mel frames -> 50 encoder positions (= max_source_positions)
    WhisperFeatureExtractor(feature_size=80, chunk_length=1).save_pretrained(folder)
    audio = workdir / "audio"
    audio.mkdir()
    for i in range(4):
        write_wav(audio / f"clip{i}.wav", 0.6, 8000 if i % 2 else 16000, i)
    return folder, str(audio), model


def run(argv, out) -> int:
    return main(argv + ["--output-dir", str(out), "--no-progress"])


def check_outputs(command: str, out) -> None:
    for name in OUTPUTS[command]:
        path = os.path.join(out, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, f"missing output {name}"
    leftovers = [name for name in os.listdir(out) if name.startswith(".tmp-")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_every_subcommand_on_tiny_text_models(kind, text_models, corpus, tmp_path):
    for command in SUBCOMMANDS:
        out = tmp_path / command
        code = run([command, "--model", text_models[kind], "--corpus", corpus] + SMALL.get(command, []), out)
        assert code == 0, f"{command} on {kind} exited with {code}"
        check_outputs(command, out)
    layers = json.loads((tmp_path / "layers" / "saturation_layers.json").read_text())
    assert layers["num_layers"] == 6 and layers["k"] == 5 and layers["positions"] > 100
    order = json.loads((tmp_path / "order" / "saturation_order.json").read_text())
    assert order["kendall"]["selection_aware"]["permutations"] == 200 == order["kendall"]["paper"]["permutations"]
    assert len(order["rank_correspondence"]["mean_index_plus_one"]) == 5
    early = json.loads((tmp_path / "early-exit" / "saturation_early_exit.json").read_text())
    full = early["curves"]["full"][0]
    oracle = early["curves"]["oracle"][0]
    assert oracle["accuracy"] == pytest.approx(full["accuracy"])  # the oracle exits where the top-1 is final
    assert oracle["speedup"] >= 1.0 and full["speedup"] == pytest.approx(1.0)


def test_all_equals_the_separate_subcommands(text_models, corpus, tmp_path):
    """``all`` collects once and writes every file of layers, order, probe, early-exit and lm, with the numbers
    the separate subcommands compute."""
    model = text_models["llama"]
    options = ["--permutations", "200", "--min-per-class", "2", "--folds", "3", "--late-margin", "2"]
    assert run(["all", "--model", model, "--corpus", corpus] + options, tmp_path / "all") == 0
    for command in ("layers", "order", "probe", "early-exit", "lm"):
        check_outputs(command, tmp_path / "all")
        own = SMALL.get(command, [])
        assert run([command, "--model", model, "--corpus", corpus] + own, tmp_path / command) == 0
        for name in OUTPUTS[command]:
            if name.endswith((".json", ".csv")):
                ours = (tmp_path / "all" / name).read_text()
                theirs = (tmp_path / command / name).read_text()
                assert ours == theirs, f"{name} from 'all' differs from the '{command}' subcommand's"
    record = json.loads((tmp_path / "all" / "run.json").read_text())
    assert record["tool"] == "python -m analysis.saturation all"


def test_layers_csv_matches_library_on_gpt2(text_models, corpus, tmp_path):
    import csv

    from huggingface_patch.loading import load_model_and_tokenizer
    from huggingface_patch.saturation.backends import TextBackend
    from huggingface_patch.saturation.layers import collect

    assert run(["layers", "--model", text_models["gpt2"], "--corpus", corpus, "--k", "3"], tmp_path) == 0
    with open(tmp_path / "saturation_layers.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    model, tokenizer, _ = load_model_and_tokenizer(text_models["gpt2"], decomposed=False)
    data = collect(TextBackend(model, tokenizer, [TEXT, TEXT[::-1]]), 3, progress=False)
    assert len(rows) == data.size
    assert [[int(r["s1"]), int(r["s2"]), int(r["s3"])] for r in rows] == data.saturation.tolist()
    # the last lens layer is the model's own prediction
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"][:127]  # the first piece (context 128)
    with torch.no_grad():
        logits = model(torch.tensor([[2] + ids])).logits[0, 1:]
    assert data.top[: len(ids), 0].tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_on_tiny_vit(command, vit_setup, tmp_path):
    folder, images, _ = vit_setup
    code = run([command, "--model", folder, "--images", images] + SMALL.get(command, []), tmp_path)
    assert code == 0
    check_outputs(command, tmp_path)


def test_vit_read_out_matches_classifier(vit_setup):
    from transformers import ViTImageProcessor

    folder, images, model = vit_setup
    backend = ViTBackend(model, ViTImageProcessor.from_pretrained(folder), images)
    item = backend.items()[0]
    states = backend.states(item.inputs)
    assert states.shape[0] == 7
    expected = model(**item.inputs).logits[0]
    torch.testing.assert_close(backend.read_out(states[-1, 0, 0]), expected, rtol=1e-5, atol=1e-5)
    assert item.targets[0] in (0, 1, 2)  # the folder name is a label of the model


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_on_tiny_whisper(command, whisper_setup, tmp_path):
    folder, audio, _ = whisper_setup
    code = run([command, "--model", folder, "--audio", audio] + SMALL.get(command, []), tmp_path)
    assert code == 0
    check_outputs(command, tmp_path)


def test_whisper_read_out_matches_model(whisper_setup):
    from transformers import WhisperFeatureExtractor

    folder, audio, model = whisper_setup
    backend = WhisperBackend(model, WhisperFeatureExtractor.from_pretrained(folder), audio, max_new_tokens=8)
    backend.files = backend.files[1:2]
    item = backend.items()[0]  # an 8 kHz file, resampled
    states = backend.states(item.inputs)
    assert states.shape[0] == 7
    expected = model(**item.inputs).logits[0]
    torch.testing.assert_close(backend.read_out(states[-1, 0]), expected, rtol=1e-5, atol=1e-5)
    assert item.inputs["decoder_input_ids"][0, 0].item() == 4
    assert read_wav(os.path.join(audio, "clip1.wav")).shape[0] == int(0.6 * 16000)


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in text
    with pytest.raises(SystemExit) as exc:
        main(["order", "--help"])
    assert exc.value.code == 0
    assert "--permutations" in capsys.readouterr().out


def _one_line_error(capsys, argv, needle: str):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    # weight-loading progress bars may share stderr; the error itself is one line
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error" in line]
    assert code == 2
    assert len(errors) == 1, err
    assert "Traceback" not in err and needle in errors[0], err


def test_errors_are_one_line(capsys, tmp_path, text_models, corpus, vit_setup):
    model = text_models["gpt2"]
    out = ["--output-dir", str(tmp_path / "out"), "--no-progress"]
    _one_line_error(capsys, ["layers", "--model", model, "--corpus", str(tmp_path / "nope.txt")] + out, "not found")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    _one_line_error(capsys, ["layers", "--model", model, "--corpus", str(empty)] + out, "empty")
    _one_line_error(capsys, ["layers", "--model", model, "--corpus", corpus, "--k", "0"] + out, "--k")
    _one_line_error(capsys, ["layers", "--model", model, "--corpus", corpus, "--k", "-3"] + out, "--k")
    _one_line_error(capsys, ["layers", "--model", model, "--corpus", corpus, "--k", "1000"] + out, "exceeds")
    _one_line_error(capsys, ["layers", "--model", model, "--images", str(tmp_path / "noimages")] + out, "not found")
    (tmp_path / "emptydir").mkdir()
    _one_line_error(capsys, ["layers", "--model", vit_setup[0], "--images", str(tmp_path / "emptydir")] + out,
                    "no image files")
    _one_line_error(capsys, ["layers", "--model", model, "--audio", str(tmp_path / "noaudio")] + out, "not found")
    _one_line_error(capsys, ["layers", "--model", str(tmp_path / "missing-model"), "--corpus", corpus] + out,
                    "not found")
    _one_line_error(capsys, ["layers", "--model", vit_setup[0], "--corpus", corpus] + out, "--images")
    _one_line_error(capsys, ["layers", "--model", model, "--images", vit_setup[1]] + out, "ViT")
    _one_line_error(capsys, ["nonsense"] + out, "invalid choice")


def test_unsupported_model_is_one_line_error(capsys, tmp_path, corpus):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                               vocab_size=100)).save_pretrained(folder)
    capsys.readouterr()
    _one_line_error(capsys, ["layers", "--model", str(folder), "--corpus", corpus,
                             "--output-dir", str(tmp_path / "out")], "unsupported")


def _table(path, rows, columns=("s1", "s2", "s3", "s4", "s5")):
    lines = [",".join(columns)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_order_from_a_users_table(tmp_path):
    """``order --from-table`` runs both tests on a table, with no model, and matches the library."""
    import math

    from huggingface_patch.saturation.ordering import kendall_tests

    rng = np.random.default_rng(0)
    sat = np.sort(rng.integers(0, 29, size=(60, 5)), axis=1)
    sat[:10, 0] = 29  # some positions fail the filter
    table = _table(tmp_path / "table.csv", sat.tolist())
    out = tmp_path / "out"
    assert main(["order", "--from-table", table, "--num-layers", "30", "--permutations", "300",
                 "--output-dir", str(out)]) == 0
    result = json.loads((out / "saturation_order.json").read_text())
    expected = kendall_tests(sat, 30, math.floor(0.85 * 30), 300, seed=0)
    for test in ("paper", "selection_aware"):
        for key in ("tau", "null_mean", "null_sd", "p_value", "positions"):
            assert result["kendall"][test][key] == pytest.approx(expected[test][key]), (test, key)
    assert result["kept_positions"] == 50 and result["positions"] == 60
    record = json.loads((out / "run.json").read_text())
    assert record["inputs"]["table"]["file"] == "table.csv"


def test_order_from_table_bad_tables_are_one_line_errors(capsys, tmp_path):
    out = ["--output-dir", str(tmp_path / "out"), "--num-layers", "10"]
    good = _table(tmp_path / "good.csv", [[1, 2, 3, 4, 5]])
    _one_line_error(capsys, ["order", "--from-table", good, "--output-dir", str(tmp_path / "o")], "--num-layers")
    _one_line_error(capsys, ["order", "--from-table", str(tmp_path / "missing.csv")] + out, "not found")
    _one_line_error(capsys, ["order", "--from-table", _table(tmp_path / "a.csv", [[1, 2]], ("a", "b"))] + out,
                    "s1, s2")
    _one_line_error(capsys, ["order", "--from-table", _table(tmp_path / "b.csv", [[1]], ("s1",))] + out,
                    "at least two")
    _one_line_error(capsys, ["order", "--from-table", _table(tmp_path / "c.csv", [[1, 12, 3, 4, 5]])] + out,
                    "outside 0..9")
    _one_line_error(capsys, ["order", "--from-table", _table(tmp_path / "d.csv", [[1, "x", 3, 4, 5]])] + out,
                    "not a whole number")
    _one_line_error(capsys, ["order", "--from-table", _table(tmp_path / "e.csv", [[1, 2]], ("s1", "s3"))] + out,
                    "without gaps")
    assert not (tmp_path / "out").exists()


def test_random_init_is_the_untrained_control(text_models, corpus, tmp_path):
    """``--random-init SEED`` re-initialises the weights (same architecture and tokenizer), records it, and
    the same seed gives the same numbers."""
    model = text_models["llama"]
    base = ["layers", "--model", model, "--corpus", corpus]
    assert run(base, tmp_path / "trained") == 0
    assert run(base + ["--random-init", "3"], tmp_path / "random") == 0
    assert run(base + ["--random-init", "3"], tmp_path / "again") == 0
    trained = (tmp_path / "trained" / "saturation_layers.csv").read_text()
    random = (tmp_path / "random" / "saturation_layers.csv").read_text()
    assert random != trained
    assert random == (tmp_path / "again" / "saturation_layers.csv").read_text()
    record = json.loads((tmp_path / "random" / "run.json").read_text())
    assert record["settings"]["random_init"] == 3
    assert record["model"]["weights_fingerprint"] != json.loads((tmp_path / "trained" / "run.json").read_text())[
        "model"]["weights_fingerprint"]


def test_settings_come_from_the_options_not_a_namespace():
    """The library reads a typed SaturationSettings; the CLI's options map onto its fields."""
    from analysis.saturation import build_parser
    from huggingface_patch.saturation.settings import SaturationSettings

    args = build_parser().parse_args(["intervene", "--offset-window", "3", "--max-pairs", "7", "--no-progress",
                                      "--seed", "4"])
    settings = SaturationSettings.from_mapping(vars(args))
    assert (settings.window, settings.max_pairs, settings.progress, settings.seed) == (3, 7, False, 4)
    assert settings.permutations == SaturationSettings().permutations  # not an option of intervene: the default
