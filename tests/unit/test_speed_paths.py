"""Issue 4: every speed and memory path gives the result of the straightforward one.

* the sparse ReLU MLP path equals the dense path (and the per-source reference);
* packed (lower-triangle) attention probabilities equal full ones;
* streaming blocks reassemble to the full decomposition, and streaming ΔLP equals ΔLP of the full tensor;
* block sizes that do not divide T, blocks whose windows run past the end, memory budgets;
* half-precision models accumulate in fp32.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel

from huggingface_patch.architectures import get_adapter
from huggingface_patch.deltalp import compute_deltalp, stream_deltalp
from huggingface_patch.engine import memory as memory_module
from huggingface_patch.engine import sparse as sparse_module
from huggingface_patch.engine.capture import capture
from huggingface_patch.engine.layouts import relative_to_absolute
from huggingface_patch.engine.memory import MemoryBudgetError, choose_block_size, parse_memory
from huggingface_patch.engine.packed import PackedCausal
from huggingface_patch.engine.reference import reference_decomposition
from huggingface_patch.testing import TINY_KINDS, build_tiny_model


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 260, (batch, length), generator=torch.Generator().manual_seed(seed))


def _relu_model(kind: str, dtype=torch.float64, active: float = 0.2):
    """A tiny OPT model whose fc1 biases are shifted so that few neurons fire (trained-model-like)."""
    model = build_tiny_model(kind).to(dtype)
    with torch.no_grad():
        for layer in model.model.decoder.layers:
            layer.fc1.bias -= 0.6  # random init fires ~50%; this leaves roughly 15-30% active
    return model


@pytest.mark.parametrize("kind", ["opt-pre", "opt-post"])
@pytest.mark.parametrize("window,block", [(7, 5), (37, 4), (1, 8), (12, 37)])
def test_sparse_mlp_path_equals_dense(kind, window, block):
    model = _relu_model(kind)
    ids = _ids(2, 37)
    dense = model(ids, decomposition_window=window, decomposition_block_size=block, decomposition_mlp_path="dense",
                  output_layer_decompositions=True)
    fast = model(ids, decomposition_window=window, decomposition_block_size=block, decomposition_mlp_path="sparse",
                 output_layer_decompositions=True)
    assert_close_rel(fast.decomposition, dense.decomposition, 1e-12, f"{kind} W={window} S={block} sparse vs dense")
    for layer, (a, b) in enumerate(zip(fast.layer_decompositions, dense.layer_decompositions)):
        assert_close_rel(a, b, 1e-12, f"{kind} layer {layer} sparse vs dense")
    assert torch.equal(fast.decomposition_bias, dense.decomposition_bias)


def test_sparse_path_really_skips_inactive_neurons():
    """The path is taken (active fraction < 1 and an index is built) and matches the per-source reference."""
    model = _relu_model("opt-pre")
    ids = _ids(1, 13, seed=3)
    spec = get_adapter(model).spec(model)
    with capture(model, spec) as record:
        model(ids)
    expected, _ = reference_decomposition(spec, record.layer_inputs, record.attention)
    fractions = []
    original = sparse_module.plan_sparse

    def spy(frozen, path, device):
        result = original(frozen, path, device)
        fractions.extend(result)
        assert all(mlp.sparse is not None for mlp in frozen.mlps())
        return result

    sparse_module_plan = pytest.MonkeyPatch()
    sparse_module_plan.setattr("huggingface_patch.engine.decompose.plan_sparse", spy)
    try:
        out = model(ids, decomposition_window=13, decomposition_block_size=4, decomposition_mlp_path="sparse")
    finally:
        sparse_module_plan.undo()
    assert fractions and max(fractions) < 0.6, f"active fractions {fractions}"
    assert_close_rel(relative_to_absolute(out.decomposition)[0], expected, 1e-10, "sparse path vs reference")


def test_sparse_path_with_left_padding_fp32():
    model = _relu_model("opt-pre", dtype=torch.float32)
    ids = _ids(2, 21, seed=4)
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    kwargs = dict(attention_mask=mask, decomposition_window=9, decomposition_block_size=6)
    dense = model(ids, decomposition_mlp_path="dense", **kwargs)
    fast = model(ids, decomposition_mlp_path="sparse", **kwargs)
    assert_close_rel(fast.decomposition, dense.decomposition, 1e-5, "padded batch: sparse vs dense")


def test_auto_path_chooses_sparse_only_when_it_pays(monkeypatch):
    model = _relu_model("opt-pre")
    seen = {}
    original = sparse_module.plan_sparse

    def spy(frozen, path, device):
        result = original(frozen, path, device)
        seen.setdefault("calls", []).append((path, any(mlp.sparse is not None for mlp in frozen.mlps())))
        return result

    monkeypatch.setattr("huggingface_patch.engine.decompose.plan_sparse", spy)
    monkeypatch.setattr(sparse_module, "SPARSE_MAX_ACTIVE", 1.0)
    monkeypatch.setattr("huggingface_patch.engine.decompose.SPARSE_MIN_ROWS", 4)
    model(_ids(1, 20), decomposition_window=8)
    assert seen["calls"][-1] == ("auto", True)
    seen.clear()
    model(_ids(1, 20), decomposition_window=2)  # two rows per target: gathering does not pay
    assert seen["calls"][-1] == ("dense", False)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_packed_attention_equals_full(kind, monkeypatch):
    model = build_tiny_model(kind).double()
    ids = _ids(2, 23, seed=5)
    full = model(ids, decomposition_window=23, decomposition_block_size=5, output_layer_decompositions=True)
    monkeypatch.setattr(memory_module, "PACK_ATTENTION_BYTES", 0)
    packed = model(ids, decomposition_window=23, decomposition_block_size=5, output_layer_decompositions=True)
    assert_close_rel(packed.decomposition, full.decomposition, 1e-12, f"{kind}: packed vs full probabilities")
    assert_close_rel(packed.decomposition_bias, full.decomposition_bias, 1e-12, f"{kind}: bias, packed vs full")
    for layer, (a, b) in enumerate(zip(packed.layer_decompositions, full.layer_decompositions)):
        assert_close_rel(a, b, 1e-12, f"{kind} layer {layer}: packed vs full")


def test_packed_causal_roundtrip_and_refuses_non_causal():
    probs = torch.softmax(torch.randn(2, 3, 9, 9).masked_fill(torch.ones(9, 9).triu(1).bool(), float("-inf")), -1)
    packed = PackedCausal.pack(probs)
    assert torch.equal(packed.full(), probs)
    assert torch.equal(packed.block(2, 7, 1, 6), probs[:, :, 2:7, 1:6])
    beyond = packed.block(5, 12, 5, 12)  # rows/columns past the end are zero
    assert torch.equal(beyond[:, :, :4, :4], probs[:, :, 5:, 5:]) and float(beyond[:, :, 4:].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="not causal"):
        PackedCausal.pack(torch.softmax(torch.randn(1, 1, 5, 5), -1))


@pytest.mark.parametrize("kind", ["opt-pre", "gpt2", "llama"])
def test_streaming_blocks_reassemble_the_decomposition(kind):
    model = build_tiny_model(kind).double()
    ids = _ids(2, 19, seed=6)
    full = model(ids, decomposition_window=6, decomposition_block_size=4)
    rebuilt = torch.zeros_like(full.decomposition)
    starts = []

    def consumer(start, block):
        starts.append(start)
        _, sources, w, _ = block.shape
        for i in range(sources):
            for k in range(w):
                if start + i + k < ids.shape[1]:
                    rebuilt[:, k, start + i + k] = block[:, i, k]

    out = model(ids, decomposition_window=6, decomposition_block_size=4, decomposition_consumer=consumer)
    assert out.decomposition is None and starts == [0, 4, 8, 12, 16]
    assert_close_rel(rebuilt, full.decomposition, 1e-12, f"{kind}: streamed blocks vs full output")
    assert torch.equal(out.decomposition_bias, full.decomposition_bias)


@pytest.mark.parametrize("kind", ["opt-pre", "opt-post", "gpt2", "llama"])
@pytest.mark.parametrize("window", [5, 31])
def test_stream_deltalp_equals_deltalp_of_full_decomposition(kind, window):
    model = build_tiny_model(kind).double()
    ids = _ids(1, 31, seed=7)[0]
    seen = {}
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.__setitem__("state", a[0]))
    out = model(ids[None], decomposition_window=window)
    hook.remove()
    expected = compute_deltalp(seen["state"][0], out.decomposition[0], model.get_output_embeddings().weight, ids)
    streamed = stream_deltalp(model, ids, window, block_size=3, max_chunk_bytes=5000)
    assert_close_rel(streamed.lp, expected.lp, 1e-12, f"{kind}: LP")
    assert torch.equal(streamed.delta.isnan(), expected.delta.isnan()), "NaN pattern (sources before the text)"
    assert_close_rel(streamed.delta.nan_to_num(), expected.delta.nan_to_num(), 1e-10, f"{kind} W={window}: ΔLP",
                     scale=1.0)


def test_parse_memory():
    assert parse_memory("4GB") == 4 * 10**9
    assert parse_memory("4GiB") == parse_memory("4G") == 4 * 2**30
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5e9") == 1_500_000_000
    assert parse_memory(1000) == 1000
    for bad in ("lots", "-3GB", "4 parsecs", 0):
        with pytest.raises(ValueError, match="memory budget"):
            parse_memory(bad)


def test_memory_budget_chooses_block_and_refuses_before_the_forward():
    model = build_tiny_model("opt-pre")
    ids = _ids(1, 40, seed=8)
    est = model.decomposition_memory(1, 40, 40, max_memory=1)
    small = choose_block_size(est, est.model + est.fixed + max(est.forward, est.block_bytes(3)))
    large = choose_block_size(est, 10**10)
    assert 1 <= small < large <= 40
    assert est.total(small) <= est.model + est.fixed + max(est.forward, est.block_bytes(3))
    reference = model(ids, decomposition_window=40)
    budgeted = model(ids, decomposition_window=40, decomposition_max_memory=est.total(small))
    assert_close_rel(budgeted.decomposition, reference.decomposition, 1e-5, "budgeted block size")
    calls = []
    handle = model.model.decoder.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(MemoryBudgetError, match="raise the budget"):
            model(ids, decomposition_window=40, decomposition_max_memory="10KB")
    finally:
        handle.remove()
    assert calls == [], "the forward pass ran although the budget was refused"


def test_memory_estimate_grows_with_length_and_window():
    model = build_tiny_model("llama")
    short = model.decomposition_memory(1, 32, 8)
    long = model.decomposition_memory(1, 64, 8)
    wide = model.decomposition_memory(1, 32, 32)
    streamed = model.decomposition_memory(1, 32, 32, streaming=True)
    assert long.fixed > short.fixed and wide.fixed > short.fixed and streamed.fixed < wide.fixed
    assert wide.per_source_dense > short.per_source_dense


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["opt-pre", "llama"])
def test_half_precision_models_accumulate_in_fp32(kind, dtype):
    model = build_tiny_model(kind).to(dtype)
    ids = _ids(1, 15, seed=9)
    out = model(ids, decomposition_window=15, output_hidden_states=True)
    assert out.decomposition.dtype == torch.float32 and out.decomposition_bias.dtype == torch.float32
    final = out.decomposition.sum(1) + out.decomposition_bias
    # the reference is the model's own half-precision state; its rounding bounds the agreement
    assert_close_rel(final, out.hidden_states[-1].float(), 5e-2, f"{kind} {dtype}: identity")


def test_device_map_auto_loads_and_decomposes(tmp_path):
    """``from_pretrained(..., device_map="auto")`` (Accelerate's dispatch) keeps the identity; on this
    CPU-only machine every layer lands on the CPU, on GPUs each layer's part runs where the layer lives."""
    from huggingface_patch import AutoDecomposedModelForCausalLM
    from huggingface_patch.testing import save_tiny_model

    folder = save_tiny_model("llama", str(tmp_path / "llama"))
    model = AutoDecomposedModelForCausalLM.from_pretrained(folder, device_map="auto", dtype=torch.float32)
    ids = _ids(1, 12, seed=10)
    out = model(ids, decomposition_window=12, output_hidden_states=True)
    final = out.decomposition.sum(1) + out.decomposition_bias
    assert_close_rel(final, out.hidden_states[-1], 1e-4, "device_map='auto': identity")


def test_band_storage_holds_exactly_what_a_window_reads():
    """BandCausal: inside the band (0 <= row - col < W) the same numbers as the full probabilities, zero
    outside; built from full or packed storage alike."""
    from huggingface_patch.engine.packed import BandCausal

    probs = torch.softmax(torch.randn(2, 3, 23, 23).masked_fill(torch.ones(23, 23).triu(1).bool(), -1e9), -1)
    for source in (probs, PackedCausal.pack(probs)):
        band = BandCausal.from_full(source, 6)
        dense = band.block(0, 23, 0, 23)
        r, c = torch.arange(23)[:, None], torch.arange(23)[None, :]
        inside = (r - c >= 0) & (r - c < 6)
        assert torch.equal(dense[..., inside], probs[..., inside])
        assert float(dense[..., ~inside].abs().max()) == 0.0
        assert torch.equal(band.block(20, 30, 18, 28)[..., :3, :5], probs[..., 20:23, 18:23] * inside[20:23, 18:23])


@pytest.mark.parametrize("kind", ["llama", "gemma2", "opt-pre"])
def test_band_frozen_model_decomposes_as_the_full_one(kind):
    """Freezing with a window (the bias carried layer by layer, the band kept) gives the same bits as freezing
    everything and carrying the bias afterwards; a larger window than frozen for is refused."""
    from huggingface_patch.engine.decompose import run_decomposition
    from huggingface_patch.engine.frozen import freeze
    from huggingface_patch.engine.packed import BandCausal

    model = build_tiny_model(kind)
    ids = torch.randint(3, 250, (2, 30), generator=torch.Generator().manual_seed(3))
    spec = get_adapter(model).spec(model)
    with torch.no_grad(), capture(model, spec) as record:
        model(ids)
    valid = torch.ones(ids.shape, dtype=torch.bool)

    def frozen(window):
        return freeze(spec, list(record.layer_inputs), list(record.layer_outputs), list(record.attention),
                      record.final_state, valid, model.dtype, window=window)

    banded = frozen(6)
    kept = [branch.sublayer for blocks in banded.layers for block in blocks for branch in block.branches
            if not hasattr(branch.sublayer, "coefficient")]
    assert kept and all(isinstance(probs, BandCausal) for probs in kept)
    with torch.no_grad():
        mine = run_decomposition(banded, 6, block_size=4, output_layers=False)
        theirs = run_decomposition(frozen(None), 6, block_size=4, output_layers=False)
    gap = float((mine.decomposition - theirs.decomposition).abs().max())
    assert torch.equal(mine.decomposition, theirs.decomposition), f"{kind}: largest difference {gap:.3e}"
    assert torch.equal(mine.bias, theirs.bias)
    with pytest.raises(ValueError, match="window of 6"):
        run_decomposition(banded, 7)
