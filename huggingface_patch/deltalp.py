"""ΔLP, the paper's importance measure: how much a target token's log-probability drops when one source
token's contribution is removed from the final state.

``LP(t) = log p(x[t+1] | state[t])`` and ``LP_{-s}(t)`` uses ``state[t] - n[s, t]``; ``ΔLP = LP - LP_{-s}``.
Logits are the model's read-out of a state (:class:`~huggingface_patch.architectures.Readout`):
``state @ proj.T`` with ``proj`` the LM head weight ``(V, H)`` (the paper's ``proj_weights``), plus the
head's bias where it has one (GPT-J), then final-logit softcapping where the model has it (Gemma 2). Every
function taking ``proj`` accepts the bare weight or a ``Readout``.

``precision`` (``"fp32"``, ``"bf16"``; see :mod:`huggingface_patch.engine.precision`) is that of the one large
product, contributions times the LM head (``W x T x H x V``): the logits of the real state are always
exact, and in bf16 only ``n[s, t] @ proj.T`` is rounded, so the error follows the size of the contribution,
not of the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .architectures.spec import Affine, Readout
from .engine.frozen import compute_dtype
from .engine.options import DecompositionOptions
from .engine.precision import Precision

LN2 = math.log(2.0)


@dataclass
class DeltaLP:
    """ΔLP of one sequence.

    ``lp``: ``(T-1,)`` log-probability of token ``t+1`` at target ``t``; ``ablated``: ``(W, T-1)`` the same
    without source ``t - k`` (relative layout; NaN where ``t - k < 0``). Units as requested (bits or nats).
    ``identity_error``: the decomposition's identity error relative to max|h| when it was computed here
    (:func:`stream_deltalp`).
    """

    lp: torch.Tensor
    ablated: torch.Tensor
    identity_error: float | None = None

    @property
    def delta(self) -> torch.Tensor:
        """``(W, T-1)`` ΔLP = LP - LP without the source."""
        return self.lp[None, :] - self.ablated

    @property
    def window(self) -> int:
        return self.ablated.shape[0]


@torch.no_grad()
def compute_deltalp(final_state: torch.Tensor, decomposition: torch.Tensor, proj: torch.Tensor, ids: torch.Tensor,
                    base: float = 2.0, max_chunk_bytes: int = 256 * 2**20, precision: str = "fp32") -> DeltaLP:
    """ΔLP for every target and every source in its window.

    ``final_state`` ``(T, H)``, ``decomposition`` ``(W, T, H)`` (relative layout), ``proj`` ``(V, H)``,
    ``ids`` ``(T,)``. Targets are processed in chunks so that ``W x chunk x V`` logits fit ``max_chunk_bytes``.
    ``base`` 2 gives bits (the paper), ``math.e`` nats; ``precision`` of the contributions' product with the
    head (see the module).
    """
    window, length, _ = decomposition.shape
    dtype = compute_dtype(final_state.dtype)
    head = Readout.of(proj).to(dtype=dtype)
    weight = head.weight
    scale = 1.0 / math.log(base)
    targets = ids[1:].long()
    lp = torch.empty(length - 1, dtype=dtype)
    ablated = torch.full((window, length - 1), float("nan"), dtype=dtype)
    chunk = max(1, int(max_chunk_bytes // max(1, (window + 1) * head.vocab_size * weight.element_size())))
    product = _head_product(weight, precision)
    for lo in range(0, length - 1, chunk):
        hi = min(length - 1, lo + chunk)
        logits = head.raw(final_state[lo:hi].to(dtype))  # (C, V) before softcapping
        gold = targets[lo:hi]
        lp[lo:hi] = torch.log_softmax(head.cap(logits), -1).gather(-1, gold[:, None])[:, 0].cpu() * scale
        removed = head.cap(logits[None] - product(decomposition[:, lo:hi].to(dtype)))  # (W, C, V)
        values = torch.log_softmax(removed, -1).gather(-1, gold[None, :, None].expand(window, -1, 1))[..., 0]
        ablated[:, lo:hi] = values.cpu() * scale
    k = torch.arange(window)[:, None]
    t = torch.arange(length - 1)[None, :]
    ablated[(t - k) < 0] = float("nan")
    return DeltaLP(lp, ablated)


@torch.no_grad()
def deltalp_at(final_state: torch.Tensor, decomposition: torch.Tensor, proj: torch.Tensor, ids: torch.Tensor,
               distances, targets, base: float = 2.0, precision: str = "fp32", max_rows: int = 128) -> torch.Tensor:
    """ΔLP of chosen (source, target) pairs only: ``(n,)``, equal to ``compute_deltalp(...).delta[k, t]``.

    ``distances`` ``(n,)`` the row ``k = t - s`` of the relative layout, ``targets`` ``(n,)`` the target ``t``;
    other arguments as :func:`compute_deltalp`. It reads out ``2 n`` states instead of ``(W + 1) (T - 1)``, which
    is what a sample of pairs needs (the full table over a 262k vocabulary costs minutes per text).
    """
    window, length, _ = decomposition.shape
    k = torch.as_tensor(distances, dtype=torch.long).reshape(-1)
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    bad = (k < 0) | (k >= window) | (t - k < 0) | (t >= length - 1)
    if k.shape != t.shape or bool(bad.any()):
        raise ValueError(f"pairs must satisfy 0 <= k < {window}, k <= t < {length - 1}; got (k, t) = "
                         f"{list(zip(k[bad].tolist(), t[bad].tolist()))[:3] or 'mismatched shapes'}")
    dtype = compute_dtype(final_state.dtype)
    head = Readout.of(proj).to(dtype=dtype)
    product = _head_product(head.weight, precision)
    scale = 1.0 / math.log(base)
    gold = ids[1:].long()[t]
    out = torch.empty(k.numel(), dtype=dtype)
    for lo in range(0, k.numel(), max_rows):
        rows = slice(lo, lo + max_rows)
        logits = head.raw(final_state[t[rows]].to(dtype))  # (n, V) before softcapping
        column = gold[rows, None]
        lp = torch.log_softmax(head.cap(logits), -1).gather(-1, column)[:, 0] * scale
        removed = head.cap(logits - product(decomposition[k[rows], t[rows]].to(dtype)))
        out[rows] = lp - torch.log_softmax(removed, -1).gather(-1, column)[:, 0] * scale
    return out


def _head_product(weight: torch.Tensor, precision: str):
    """``rows -> rows @ weight.T`` (``(..., H) -> (..., V)``) in ``precision``, returned in the rows' dtype."""
    if precision == "fp32":
        return Readout(weight).raw  # multiplies (..., H) as rows: a strided (W, C, H) slice stays one product
    mode = Precision(precision)
    head = Affine(weight.t())
    return lambda rows: Precision.widen(mode.linear(rows, head), rows.dtype)


def paper_argmax(result: DeltaLP, target: int, exclude_first: bool = True) -> int:
    """The paper's argmax source for ``target``: the source whose removal lowers LP most (ΔLP > ... i.e. the
    lowest LP without it, below 0 bits), position 0 (BOS) excluded; -1 if none qualifies."""
    best, argmax = 0.0, -1
    stride = min(target + 1, result.window)
    for source in range(target - stride + 1, target + 1):
        value = float(result.ablated[target - source, target])
        if (source != 0 or not exclude_first) and value < best:
            best, argmax = value, source
    return argmax


def paper_text(identifier: str, tokens: list[str], result: DeltaLP, exclude_first: bool = True) -> str:
    """The exact text the paper's ``representations_to_deltalp.py`` prints for one batch (``tokens``: the
    tokenizer's raw pieces, as the paper prints them). ``exclude_first``: position 0 is a start token and
    never the argmax (the paper's rule); False for inputs without a start token."""
    length = len(tokens)
    lines: list[str] = []
    distances = []
    lp32 = result.lp.float()
    ablated32 = result.ablated.float()
    for j in range(length - 1):
        stride = min(j + 1, result.window)
        final_lp = lp32[j]
        lines.append("")
        lines.append(f"{identifier} Timestep {j + 1}/{length - 1}")
        lines.append(f"LP({tokens[j + 1]} | {' '.join(tokens[: j + 1])}) = {float(final_lp)}")
        best, argmax = 0.0, -1
        for source in range(j - stride + 1, j + 1):
            value = ablated32[j - source, j]
            if (source != 0 or not exclude_first) and float(value) < best:
                argmax, best = source, float(value)
            lines.append(f"-{tokens[source]} = {float(value)};\tDelta LP: {float(final_lp - value)}")
        lines.append(f"Timestep {j + 1}, argmax: {argmax}, distance: {j - argmax + 1}")
        distances.append(j - argmax + 1)
    lines.append(f"Max distance: {max(distances)}")
    return "\n".join(lines) + "\n"


def group_contributions(decomposition: torch.Tensor, groups: list[list[int]] | list[range]) -> torch.Tensor:
    """Sum the contributions of each group of sources: ``(G, T, H)``, entry ``[g, t]`` = sum over the sources
    ``s`` of group ``g`` with ``t - W < s <= t`` of ``n[s, t]`` (``decomposition`` ``(W, T, H)``, relative layout).

    Sources outside a target's window (or after it) contribute nothing, exactly as in :func:`compute_deltalp`.
    """
    window, length, hidden = decomposition.shape
    out = torch.zeros(len(groups), length, hidden, dtype=decomposition.dtype, device=decomposition.device)
    t = torch.arange(length, device=decomposition.device)
    for g, group in enumerate(groups):
        for source in sorted(set(int(s) for s in group)):
            if not 0 <= source < length:
                raise ValueError(f"source position {source} outside the sequence of {length} tokens")
            k = t - source
            valid = (k >= 0) & (k < window)
            out[g, valid] += decomposition[k[valid], t[valid]]
    return out


@torch.no_grad()
def compute_group_deltalp(final_state: torch.Tensor, decomposition: torch.Tensor, proj: torch.Tensor,
                          ids: torch.Tensor, groups: list[list[int]] | list[range], base: float = 2.0) -> DeltaLP:
    """ΔLP of removing each *group* of sources jointly (a word, a span, any set).

    Returns a :class:`DeltaLP` whose ``ablated`` is ``(G, T-1)``: LP of token ``t+1`` at target ``t`` with the
    summed contributions of group ``g`` removed; NaN where no member of the group lies in the target's window
    (``t - W < s <= t``). Members outside the window are ignored (their contributions are not available).
    """
    window, length, _ = decomposition.shape
    summed = group_contributions(decomposition, groups)  # (G, T, H)
    dtype = compute_dtype(final_state.dtype)
    scale = 1.0 / math.log(base)
    head = Readout.of(proj).to(dtype=dtype)
    targets = ids[1:].long()
    logits = head.raw(final_state[: length - 1].to(dtype))  # (T-1, V) before softcapping
    lp = torch.log_softmax(head.cap(logits), -1).gather(-1, targets[:, None])[:, 0] * scale
    ablated = torch.full((len(groups), length - 1), float("nan"), dtype=dtype)
    t = torch.arange(length - 1)
    for g, group in enumerate(groups):
        removed = head.cap(logits - summed[g, : length - 1].to(dtype) @ head.weight.t())
        values = torch.log_softmax(removed, -1).gather(-1, targets[:, None])[:, 0] * scale
        members = torch.tensor(sorted(set(int(s) for s in group)) or [length], dtype=torch.long)
        present = ((t[:, None] - members[None, :] >= 0) & (t[:, None] - members[None, :] < window)).any(1)
        ablated[g, present] = values[present].cpu()
    return DeltaLP(lp.cpu(), ablated)


@torch.no_grad()
def compute_contrastive_deltalp(final_state: torch.Tensor, decomposition: torch.Tensor, proj: torch.Tensor,
                                ids: torch.Tensor, foil: int | torch.Tensor, base: float = 2.0) -> DeltaLP:
    """Contrastive ΔLP: effect of each source on ``log p(x[t+1]) - log p(foil)`` at target ``t``.

    ``foil`` is one token id (used at every target) or ``(T-1,)`` ids. The returned ``lp`` is the contrast
    ``log p(target) - log p(foil)`` ``(T-1,)``; ``ablated`` ``(W, T-1)`` the contrast without source ``t-k``;
    ``delta`` = the contrastive ΔLP, which equals ``ΔLP(target) - ΔLP(foil)``. The softmax normaliser cancels,
    so only the two logits matter: without softcapping this is ``(n[s, t] @ (proj[target] - proj[foil])) /
    ln(base)``; with it, each of the two logits is capped before the difference.
    """
    window, length, _ = decomposition.shape
    dtype = compute_dtype(final_state.dtype)
    scale = 1.0 / math.log(base)
    head = Readout.of(proj).to(dtype=dtype)
    targets = ids[1:].long()
    foils = torch.as_tensor(foil, dtype=torch.long).expand(length - 1) if torch.as_tensor(foil).dim() == 0 \
        else torch.as_tensor(foil, dtype=torch.long)
    state = final_state[: length - 1].to(dtype)
    parts = decomposition[:, : length - 1].to(dtype)
    if head.softcap is None:
        direction = head.weight[targets] - head.weight[foils]  # (T-1, H); the head bias adds a constant
        offset = 0.0 if head.bias is None else head.bias[targets] - head.bias[foils]
        contrast = ((state * direction).sum(-1) + offset) * scale
        ablated = contrast[None, :] - (parts * direction[None]).sum(-1) * scale  # (W, T-1)
    else:
        def pair(states):  # (..., T-1, H) -> capped logit(target) - capped logit(foil)
            def logit(ids):
                value = (states * head.weight[ids]).sum(-1)
                return value if head.bias is None else value + head.bias[ids]

            return (head.cap(logit(targets)) - head.cap(logit(foils))) * scale

        contrast = pair(state)
        ablated = pair(state[None] - parts)
    k = torch.arange(window)[:, None]
    t = torch.arange(length - 1)[None, :]
    ablated[(t - k) < 0] = float("nan")
    return DeltaLP(contrast.cpu(), ablated.cpu())


def bias_only_lp(bias: torch.Tensor, proj: torch.Tensor, ids: torch.Tensor, base: float = 2.0) -> torch.Tensor:
    """``(T-1,)`` LP of token ``t+1`` from the bias term alone (every source removed): log-softmax of
    ``bias @ proj.T``.
    """
    dtype = compute_dtype(bias.dtype)
    logits = Readout.of(proj).to(dtype=dtype).logits(bias[:-1].to(dtype))
    return torch.log_softmax(logits, -1).gather(-1, ids[1:].long()[:, None])[:, 0] / math.log(base)


def deltalp_consumer_bytes(length: int, window: int, vocab: int, itemsize: int,
                           max_chunk_bytes: int = 64 * 2**20) -> int:
    """What :func:`stream_deltalp`'s consumer holds besides a block: the ``(W, T-1)`` table, and a chunk of
    logits with its two softmax temporaries (each at most ``max_chunk_bytes``, and at most a CPU block's rows
    of logits)."""
    from .engine.memory import CPU_BLOCK_ROWS

    rows = min(length * window, max(CPU_BLOCK_ROWS, window))
    chunk = min(max_chunk_bytes, rows * vocab * itemsize)
    return window * length * itemsize + 3 * chunk


class _StreamingConsumer:
    """The decomposition's consumer in :func:`stream_deltalp`: turns each finished block of sources into the
    ablated LPs of the targets it reaches. ``state`` ``(T, H)`` is the real input of the LM head, set by a
    hook on the head during the forward pass; ``ablated`` ``(w, T-1)`` fills as blocks arrive."""

    def __init__(self, head, proj: torch.Tensor, ids: torch.Tensor, window: int, base: float, max_chunk_bytes: int,
                 precision: str, dtype: torch.dtype, bar=None):
        self.head, self.length, self.bar = head, ids.numel(), bar
        self.vocab, self.max_chunk_bytes, self.precision = proj.shape[0], max_chunk_bytes, precision
        self.scale = 1.0 / math.log(base)
        self.targets = ids[1:].long()
        self.ablated = torch.full((min(window, self.length), self.length - 1), float("nan"), dtype=dtype)
        self.product = _head_product(proj, precision)
        self.state: torch.Tensor | None = None
        self.lp: torch.Tensor | None = None
        # what the consumer holds besides the block, counted by the memory budget
        self.memory_bytes = deltalp_consumer_bytes(self.length, self.ablated.shape[0], self.vocab,
                                                   self.ablated.element_size(), max_chunk_bytes)

    def log_probs(self, states: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        logits = self.head.logits(states)
        return (logits.gather(-1, gold[:, None])[:, 0] - torch.logsumexp(logits, -1)) * self.scale

    def rows_per_chunk(self, dtype) -> int:
        return max(1, int(self.max_chunk_bytes // (self.vocab * dtype.itemsize)))

    def __call__(self, start: int, block: torch.Tensor) -> None:
        """``block`` ``(1, S, w, H)``: contributions of sources ``start .. start+S-1`` at distances ``0..w-1``."""
        state = self.state[0].to(block.dtype)  # (T, H)
        if self.lp is None:
            last, chunk = self.length - 1, self.rows_per_chunk(block.dtype)
            spans = [slice(lo, min(last, lo + chunk)) for lo in range(0, last, chunk)]
            self.lp = torch.cat([self.log_probs(state[span], self.targets[span]) for span in spans]).cpu()
        if self.precision != "fp32":
            self.consume_fast(start, block, state)
        else:
            self.consume_exact(start, block, state)
        if self.bar is not None:
            self.bar.update(block.shape[1])

    def consume_exact(self, start: int, block: torch.Tensor, state: torch.Tensor) -> None:
        """The logits of every ablated state ``state[t] - n[s, t]``, in chunks."""
        _, sources, bw, hidden = block.shape
        i = torch.arange(sources, device=block.device)[:, None]
        k = torch.arange(bw, device=block.device)[None, :]
        target = (start + i + k).reshape(-1)
        keep = target < self.length - 1  # the last token predicts nothing
        rows = block[0].reshape(-1, hidden)[keep]
        target, kk = target[keep], k.expand(sources, bw).reshape(-1)[keep]
        chunk = self.rows_per_chunk(block.dtype)
        for lo in range(0, rows.shape[0], chunk):
            hi = min(rows.shape[0], lo + chunk)
            t = target[lo:hi]
            values = self.log_probs(state[t] - rows[lo:hi], self.targets[t.to(self.targets.device)].to(block.device))
            self.ablated[kk[lo:hi].cpu(), t.cpu()] = values.cpu().to(self.ablated.dtype)

    def consume_fast(self, start: int, block: torch.Tensor, state: torch.Tensor) -> None:
        """A fast mode: exact logits of the block's real states once, then per distance ``k`` the sources'
        contributions (one contiguous run of targets) times the head, subtracted."""
        _, sources, bw, _ = block.shape
        length = self.length
        end = min(length - 1, start + sources + bw - 1)  # the last token predicts nothing
        real = self.head.raw(state[start:end])  # (targets of the block, V)
        for k in range(bw):
            count = min(sources, length - 1 - start - k)
            if count <= 0:
                break
            logits = self.head.cap(torch.sub(real[k : k + count], self.product(block[0, :count, k])))
            gold = self.targets[start + k : start + k + count].to(block.device)
            values = (logits.gather(-1, gold[:, None])[:, 0] - torch.logsumexp(logits, -1)) * self.scale
            self.ablated[k, start + k : start + k + count] = values.cpu().to(self.ablated.dtype)


@torch.no_grad()
def stream_deltalp(model, input_ids: torch.Tensor, window: int | DecompositionOptions, base: float = 2.0,
                   block_size: int | None = None, max_memory: int | str | None = None, mlp_path: str = "auto",
                   max_chunk_bytes: int = 64 * 2**20, progress: bool = False, precision: str = "fp32") -> DeltaLP:
    """ΔLP of one sequence computed block by block, never holding the ``(W, T, H)`` decomposition.

    ``model``: a decomposing causal-LM class; ``input_ids`` ``(T,)`` or ``(1, T)``. Each finished block of
    sources (see :func:`~huggingface_patch.engine.decompose.run_decomposition`'s ``consumer``) is turned
    into LPs at once: for source ``s`` and target ``t`` the logits of ``state[t] - n[s, t]`` are computed in
    chunks of at most ``max_chunk_bytes``. ``state`` is the real state the LM head reads. Returns the same
    :class:`DeltaLP` as :func:`compute_deltalp` on the full decomposition (``ablated`` ``(min(W, T), T-1)``).
    ``window``: the window, or every decomposition setting as one
    :class:`~huggingface_patch.engine.options.DecompositionOptions` (then ``block_size``, ``max_memory``,
    ``mlp_path`` and ``precision`` come from it). Memory: the frozen coefficients, one block and one chunk of
    logits (see ``max_memory``); ``progress`` shows a tqdm bar over the sources; ``precision`` is that of the
    decomposition and of the head product (see the module; in fp32 the ablated states' logits are computed
    directly, as always).
    """
    from .architectures import readout
    from .errors import InputError

    options = window if isinstance(window, DecompositionOptions) else DecompositionOptions(
        window=window, block_size=block_size, max_memory=max_memory, mlp_path=mlp_path, precision=precision)
    ids = torch.as_tensor(input_ids)
    if ids.dim() > 2 or (ids.dim() == 2 and ids.shape[0] != 1):
        raise InputError(f"stream_deltalp takes one sequence, (T,) or (1, T); got shape {tuple(ids.shape)}: call it "
                         "once per row (the rows of a batch are separate texts, not one)")
    ids = ids.reshape(-1)
    if ids.numel() < 2:
        raise InputError(f"ΔLP needs at least 2 tokens (a token and the one it predicts); got {ids.numel()}")
    head = readout(model)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=ids.numel(), desc="ΔLP sources", unit="source")
    consumer = _StreamingConsumer(head, head.weight, ids, options.window, base, max_chunk_bytes, options.precision,
                                  compute_dtype(model.dtype), bar)
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: setattr(consumer, "state", args[0].detach()))
    try:
        out = model(ids[None].to(head.weight.device), decomposition_options=options.replace(consumer=consumer))
    finally:
        hook.remove()
        if bar is not None:
            bar.close()
    identity = float(out.decomposition_identity_errors.max())
    return DeltaLP(consumer.lp.to(consumer.ablated.dtype), consumer.ablated, identity_error=identity)
