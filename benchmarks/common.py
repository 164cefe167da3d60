"""Shared pieces of the benchmark scripts: model shapes with random weights, the machine's matmul rate,
FLOP counts, and peak-memory sampling. Benchmarks print figures; they are not tests."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: model shapes (random weights): name -> (family, config keyword arguments)
SHAPES = {
    # the streaming-ΔLP memory case: 2 layers, hidden 256, the byte-level test vocabulary
    "opt-2x256": ("opt", dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, ffn_dim=1024,
                              vocab_size=260, max_position_embeddings=4096, word_embed_proj_dim=256,
                              do_layer_norm_before=True, dropout=0.0)),
    "opt-125m": ("opt", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                             vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768,
                             do_layer_norm_before=True, dropout=0.0)),
    "opt-350m": ("opt", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                             vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=512,
                             do_layer_norm_before=False, dropout=0.0)),
    "gpt2-124m": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "smollm2-135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                   max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True)),
}


def build_model(shape: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A decomposing model of the named shape with Hugging Face's random initialisation."""
    from transformers import GPT2Config, LlamaConfig, OPTConfig

    from huggingface_patch import DecomposedGPT2LMHeadModel, DecomposedLlamaForCausalLM, DecomposedOPTForCausalLM

    family, kwargs = SHAPES[shape]
    config_cls, model_cls = {
        "opt": (OPTConfig, DecomposedOPTForCausalLM),
        "gpt2": (GPT2Config, DecomposedGPT2LMHeadModel),
        "llama": (LlamaConfig, DecomposedLlamaForCausalLM),
    }[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs))
    return model.to(device=device, dtype=dtype).eval()


def matmul_rate(dtype: torch.dtype = torch.float32, device: str = "cpu", seconds: float = 2.0) -> float:
    """Best measured FLOP/s of large matmuls shaped like the decomposition's (rows x H @ H x F)."""
    best = 0.0
    for m, k, n in ((4096, 768, 3072), (4096, 3072, 768), (2048, 2048, 2048)):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        a @ b
        synchronize(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            count += 1
        synchronize(device)
        best = max(best, 2.0 * m * k * n * count / (time.perf_counter() - start))
    return best


def synchronize(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeat: int = 1, device: str = "cpu"):
    """``(best seconds, last result)`` of ``repeat`` calls."""
    best, result = float("inf"), None
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: str = "cpu", interval: float = 0.005):
    """Peak memory during the block, in bytes: CUDA's allocator peak, or the process's resident set size
    sampled every ``interval`` seconds on CPU. Yields a dict filled with ``peak`` and ``baseline``."""
    box = {"peak": 0, "baseline": 0}
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        box["baseline"] = torch.cuda.memory_allocated()
        yield box
        torch.cuda.synchronize()
        box["peak"] = torch.cuda.max_memory_allocated()
        return
    box["baseline"] = _rss()
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            box["peak"] = max(box["peak"], _rss())
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        box["peak"] = max(box["peak"], _rss())


def pairs_in_window(length: int, window: int) -> int:
    """Number of (source, target) pairs with ``0 <= target - source < window``."""
    window = min(window, length)
    return window * length - window * (window - 1) // 2


def layer_sizes(model) -> dict:
    """Hidden, inner and head sizes of a decomposing model, read from its adapter's spec (the registry is
    the one place that knows where a family keeps them)."""
    from huggingface_patch.architectures import get_adapter

    spec = get_adapter(model).spec(model)
    layer = spec.layers[0]
    attention, mlp = layer.attention, layer.mlp
    return dict(hidden=attention.value.in_features, heads=attention.num_heads, kv_heads=attention.num_kv_heads,
                head_dim=attention.head_dim, inner=mlp.width, layers=len(spec.layers),
                vocab=model.config.vocab_size, gated=mlp.kind == "gated")


def decomposition_flops(model, length: int, window: int, active_fraction: float = 1.0) -> float:
    """FLOPs of the linear work the decomposition needs: for every in-window (source, target) pair and
    layer, the value and output projections and the MLP's two inner matrices (only the active neurons
    when ``active_fraction < 1``), plus the attention mixing of each source's window (half a square per
    head). The capture forward pass and the bias term are not counted (about one forward pass)."""
    s = layer_sizes(model)
    hidden, inner, head_dim = s["hidden"], s["inner"], s["head_dim"]
    pairs = pairs_in_window(length, window)
    per_pair = (2 * hidden * s["kv_heads"] * head_dim + 2 * s["heads"] * head_dim * hidden
                + 4 * hidden * inner * active_fraction)
    w = min(window, length)
    mixing = length * w * w * head_dim * s["heads"]  # sum over sources of w^2/2 cells x d x 2 FLOPs
    return float(s["layers"] * (pairs * per_pair + mixing))


def forward_flops(model, length: int, lm_head: bool = True) -> float:
    """FLOPs of one plain forward pass over ``length`` tokens (matmuls only)."""
    s = layer_sizes(model)
    hidden, inner, head_dim = s["hidden"], s["inner"], s["head_dim"]
    qkv = 2 * hidden * (s["heads"] + 2 * s["kv_heads"]) * head_dim
    mlp = (6 if s["gated"] else 4) * hidden * inner
    per_token = qkv + 2 * s["heads"] * head_dim * hidden + mlp
    attention = 2 * length * length * s["heads"] * head_dim  # QK^T and AV, causal half of 2 x 2 T^2 (h d)
    total = s["layers"] * (length * per_token + attention)
    if lm_head:
        total += 2 * length * hidden * s["vocab"]
    return float(total)


def mlp_active_fraction(model, ids: torch.Tensor) -> float:
    """Fraction of non-zero frozen MLP coefficients over all layers and positions (what the sparse ReLU path
    skips is the rest), from the engine's own freeze of one forward pass."""
    from huggingface_patch.architectures import get_adapter
    from huggingface_patch.engine.capture import capture
    from huggingface_patch.engine.frozen import compute_dtype, freeze
    from huggingface_patch.engine.sparse import active_fraction

    spec = get_adapter(model).spec(model)
    valid = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    with torch.no_grad(), capture(model, spec, valid=valid, dtype=compute_dtype(model.dtype)) as record:
        model(ids)
        frozen = freeze(spec, record.layer_inputs, record.layer_outputs, record.attention,
                        record.layer_outputs[-1], valid, model.dtype, check=False)
    fractions = [active_fraction(mlp.coefficient, valid) for mlp in frozen.mlps()]
    return sum(fractions) / len(fractions)


def parse_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
