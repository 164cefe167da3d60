"""The memory estimate covers what a streaming ΔLP run really allocates (issue: a regression of the peak went
unnoticed until a user's job ran out of memory).

Each case runs in a fresh process (one thread, one malloc arena, the libraries warmed up by a short forward
pass, glibc's mmap threshold fixed at 128 KiB) and compares the growth of its resident set during
``stream_deltalp`` with the estimate the block size was planned from (the model's weights left out: they exist
before the run). The stated margin: the growth stays within :data:`MARGIN` times the estimate, and the
estimate is not more than :data:`SLACK` times the growth (an estimate that covers everything by being huge is
no use for planning).

Why the fixed threshold: the estimate counts tensors. With glibc's default, the threshold above which a
block is mmapped (and returned on free) rises after each large free, so later blocks of a few MiB come from
the heap, and what they leave behind stays resident. Measured on this 2-core machine, the same case grew by
78-91 MiB in one run and 100 MiB in another (estimate 75 MiB); with the threshold fixed it grew 69.4 MiB
in each of three runs. The default allocator's surplus is said in ``engine/memory.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

MARGIN = 1.2
SLACK = 3.0

_SCRIPT = r"""
import ctypes, gc, json, os, sys
import torch
sys.path.insert(0, os.getcwd())
from transformers import OPTConfig
from huggingface_patch import DecomposedOPTForCausalLM
from huggingface_patch.deltalp import deltalp_consumer_bytes, stream_deltalp
from huggingface_patch.engine.memory import planned_block_size
T, W = int(sys.argv[1]), int(sys.argv[2])
budget = None if sys.argv[3] == "none" else sys.argv[3]
torch.manual_seed(0)
config = OPTConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, ffn_dim=1024, vocab_size=260,
                   max_position_embeddings=4096, word_embed_proj_dim=256, do_layer_norm_before=True, dropout=0.0)
model = DecomposedOPTForCausalLM(config).eval()
ids = torch.randint(4, 260, (T,), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    model(ids[None, :8])
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import threading, time
before = resident()
from huggingface_patch.engine.memory import parse_memory
limit = None if budget is None else parse_memory(budget)
est = model.decomposition_memory(1, T, W, streaming=True, max_memory=limit,
                                 consumer_bytes=deltalp_consumer_bytes(T, min(W, T), 260, 4))
block = planned_block_size(est, limit, "cpu")
peak, running = [before], [True]
def sample():  # the resident set during the run (the process's lifetime peak may predate it)
    while running[0]:
        peak[0] = max(peak[0], resident())
        time.sleep(0.002)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
stream_deltalp(model, ids, W, max_memory=budget)
running[0] = False
thread.join()
print(json.dumps({"grown": peak[0] - before, "estimate": est.total(block) - est.model}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("length, window, budget", [(768, 768, "none"), (1024, 64, "none"), (768, 768, "2GB")])
def test_estimate_covers_the_measured_growth(length, window, budget):
    env = dict(os.environ, MALLOC_ARENA_MAX="1", MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(length), str(window), budget], capture_output=True,
                         text=True, env=env, cwd=REPO,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    grown, estimate = result["grown"], result["estimate"]
    what = f"T={length} W={window} budget {budget}: grew {grown / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB"
    assert grown <= MARGIN * estimate, what
    assert estimate <= SLACK * max(grown, 1), f"estimate {estimate / 2**20:.0f} MiB for {grown / 2**20:.0f} MiB grown"
