"""Assertion helpers shared by the tests (named tolerances, failure messages with the largest difference)."""

from __future__ import annotations

import os

import torch

#: the tests folder (its tiers are unit/, integration/, acceptance/), its fixtures and the repository
TESTS = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(TESTS, "fixtures")
REPO = os.path.dirname(TESTS)

#: identity tolerance relative to max|h| per dtype (fp32 1e-4, fp64 1e-10)
IDENTITY_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str,
                     scale: float | None = None) -> None:
    """Assert ``max|actual - expected| <= tolerance * scale`` (default ``scale = max|expected|``); the message
    gives the largest difference and where it is."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    missing = torch.isnan(actual) | torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), f"{what}: NaN at different places"
    actual, expected = actual[~missing], expected[~missing]
    diff = (actual - expected).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if diff.numel() else ()
    assert worst <= tolerance * max(scale, 1e-30), (
        f"{what}: largest difference {worst:.3e} at index {where} exceeds {tolerance:g} x scale = "
        f"{tolerance * scale:.3e}"
    )


def save_unsupported_model(folder) -> str:
    """Save a tiny Mamba model (a causal-LM family without an adapter: state-space layers, no attention to
    freeze) with the byte-level tokenizer."""
    import os
    import shutil

    from transformers import MambaConfig, MambaForCausalLM

    from huggingface_patch.testing import tokenizer_folder

    folder = str(folder)
    MambaForCausalLM(MambaConfig(vocab_size=260, hidden_size=32, num_hidden_layers=1, state_size=4,
                                 expand=2)).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_folder(), name), os.path.join(folder, name))
    return folder


def exit_code(main, argv) -> int:
    """What a command-line ``main(argv)`` exits with (argparse errors raise ``SystemExit``)."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


#: subjects whose tokens are word pieces of several kinds: the recall tests on the byte tokenizer and on
#: SmolLM2-135M's read the same
RECALL_PROMPTS = [
    ("Vinson Massif", "Vinson Massif is located in the continent of"),
    ("Roman Republic", "The capital of Roman Republic is"),
    ("Audible.com", "Audible.com is owned by"),
    ("Iron Man", "Iron Man is affiliated with the"),
]


def subject_span_text(tokenizer, prompt: str, subject: str):
    """``(ids, (start, end), text)``: the prompt's token ids, the subject's token span and its decoded text."""
    from huggingface_patch.recall.queries import encode_prompt, find_subject, subject_token_span

    ids, offsets = encode_prompt(tokenizer, prompt)
    start, end = subject_token_span(offsets, *find_subject(prompt, subject))
    return ids, (start, end), tokenizer.decode(ids[start:end])
