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


def layer_sizes(config) -> dict:
    """Hidden, inner, head counts and vocabulary of a config (names differ per family)."""
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv = getattr(config, "num_key_value_heads", None) or heads
    inner = getattr(config, "ffn_dim", None) or getattr(config, "intermediate_size", None) or \
        getattr(config, "n_inner", None) or 4 * hidden
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    gated = config.model_type in ("llama", "mistral", "qwen2")
    return dict(hidden=hidden, heads=heads, kv_heads=kv, inner=inner, layers=layers, vocab=config.vocab_size,
                gated=gated)


def decomposition_flops(config, length: int, window: int, active_fraction: float = 1.0) -> float:
    """FLOPs of the linear work the decomposition needs: for every in-window (source, target) pair and
    layer, the value and output projections and the MLP's two inner matrices (only the active neurons
    when ``active_fraction < 1``), plus the attention mixing of each source's window (half a square per
    head). The capture forward pass and the bias term are not counted (about one forward pass)."""
    s = layer_sizes(config)
    hidden, inner, head_dim = s["hidden"], s["inner"], s["hidden"] // s["heads"]
    pairs = pairs_in_window(length, window)
    per_pair = 2 * hidden * s["kv_heads"] * head_dim + 2 * hidden * hidden + 4 * hidden * inner * active_fraction
    w = min(window, length)
    mixing = length * w * w * head_dim * s["heads"]  # sum over sources of w^2/2 cells x d x 2 FLOPs
    return float(s["layers"] * (pairs * per_pair + mixing))


def forward_flops(config, length: int, lm_head: bool = True) -> float:
    """FLOPs of one plain forward pass over ``length`` tokens (matmuls only)."""
    s = layer_sizes(config)
    hidden, inner, head_dim = s["hidden"], s["inner"], s["hidden"] // s["heads"]
    qkv = 2 * hidden * (s["heads"] + 2 * s["kv_heads"]) * head_dim
    mlp = (6 if s["gated"] else 4) * hidden * inner
    per_token = qkv + 2 * hidden * hidden + mlp
    attention = 2 * length * length * hidden  # QK^T and AV, causal half of 2 x 2 T^2 H
    total = s["layers"] * (length * per_token + attention)
    if lm_head:
        total += 2 * length * hidden * s["vocab"]
    return float(total)


def parse_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
