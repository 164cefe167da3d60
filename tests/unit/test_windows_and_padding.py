"""``docs/design.md`` §2: windows keep exactly the in-window contributions; padding changes nothing; layouts convert."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel

from huggingface_patch import absolute_to_relative, relative_to_absolute
from huggingface_patch.testing import TINY_KINDS, build_tiny_model

WINDOW_TOLERANCE = 1e-6  # fp32 round-off only: the kept contributions are computed identically


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_window_gives_first_rows_of_full_decomposition(kind):
    model = build_tiny_model(kind)
    ids = torch.randint(3, 260, (2, 23), generator=torch.Generator().manual_seed(3))
    full = model(ids, decomposition_window=23).decomposition
    for window, block in [(1, None), (5, 4), (7, 3), (22, 5)]:
        part = model(ids, decomposition_window=window, decomposition_block_size=block)
        assert part.decomposition.shape == (2, window, 23, full.shape[-1])
        assert_close_rel(part.decomposition, full[:, :window], WINDOW_TOLERANCE, f"{kind} window {window}")
        assert_close_rel(part.decomposition_bias, model(ids, decomposition_window=23).decomposition_bias,
                         WINDOW_TOLERANCE, f"{kind} bias with window {window}")


def test_window_larger_than_sequence_is_full_decomposition():
    model = build_tiny_model("opt-pre")
    ids = torch.randint(3, 260, (1, 9))
    big = model(ids, decomposition_window=1000)
    assert big.decomposition.shape[1] == 9
    assert_close_rel(big.decomposition, model(ids, decomposition_window=9).decomposition, 0.0, "window >= T")


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_block_sizes_agree(kind):
    model = build_tiny_model(kind)
    ids = torch.randint(3, 260, (1, 19), generator=torch.Generator().manual_seed(4))
    reference = model(ids, decomposition_window=6, decomposition_block_size=19)
    for block in (1, 2, 5, 7, 64):
        out = model(ids, decomposition_window=6, decomposition_block_size=block)
        assert_close_rel(out.decomposition, reference.decomposition, WINDOW_TOLERANCE, f"{kind} block size {block}")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("kind", TINY_KINDS)
def test_padded_batch_equals_each_sequence_alone(kind, side):
    model = build_tiny_model(kind)
    gen = torch.Generator().manual_seed(5)
    lengths = [12, 7, 9]
    total = max(lengths)
    ids = torch.full((3, total), 1, dtype=torch.long)
    mask = torch.zeros(3, total, dtype=torch.long)
    seqs = [torch.randint(3, 260, (n,), generator=gen) for n in lengths]
    for row, seq in enumerate(seqs):
        n = len(seq)
        span = slice(total - n, total) if side == "left" else slice(0, n)
        ids[row, span] = seq
        mask[row, span] = 1
    window = 5
    batch = model(ids, attention_mask=mask, decomposition_window=window, output_layer_decompositions=True)
    for row, seq in enumerate(seqs):
        n = len(seq)
        alone = model(seq[None], decomposition_window=window, output_layer_decompositions=True)
        span = slice(total - n, total) if side == "left" else slice(0, n)
        pad = slice(0, total - n) if side == "left" else slice(n, total)
        what = f"{kind} {side} padding, sequence {row}"
        assert_close_rel(batch.decomposition[row, :, span], alone.decomposition[0], 1e-5, what)
        # the bias term relative to the state's scale: a family without biases (OLMo) has only round-off there
        state_scale = float((alone.decomposition[0].sum(0) + alone.decomposition_bias[0]).abs().max())
        assert_close_rel(batch.decomposition_bias[row, span], alone.decomposition_bias[0], 1e-5, what + " bias",
                         scale=state_scale)
        assert_close_rel(batch.layer_decompositions[1][row, :, span], alone.layer_decompositions[1][0], 1e-5,
                         what + " layer 1")
        assert float(batch.decomposition[row, :, pad].abs().sum()) == 0.0, "padding targets must be zero"
        assert float(batch.decomposition_bias[row, pad].abs().sum()) == 0.0, "padding bias must be zero"


def test_layout_round_trip():
    rel = torch.randn(2, 4, 6, 3)
    for k in range(4):
        rel[:, k, :k] = 0  # rows with t - k < 0 are zero by definition
    absolute = relative_to_absolute(rel)
    assert absolute.shape == (2, 6, 6, 3)
    # entry [s, t] is zero for s > t and for t - s >= W
    s, t = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert float(absolute[:, (s > t) | (t - s >= 4)].abs().max()) == 0.0
    assert torch.equal(absolute_to_relative(absolute, 4), rel)
    assert torch.equal(absolute[:, 1, 3], rel[:, 2, 3])  # source 1 -> target 3 is k = 2


def test_absolute_layout_sums_to_state():
    model = build_tiny_model("llama")
    ids = torch.randint(3, 260, (1, 8))
    out = model(ids, decomposition_window=8, output_hidden_states=True)
    absolute = relative_to_absolute(out.decomposition)
    assert_close_rel(absolute.sum(1) + out.decomposition_bias, out.hidden_states[-1], 1e-4, "absolute layout identity")
