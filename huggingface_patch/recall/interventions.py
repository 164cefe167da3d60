"""Interventions of the Geva et al. (2023) experiments as context managers.

Every context manager registers hooks (never replaces modules or forwards), switches the model to eager
attention when it needs the attention mask, and removes everything in ``finally``: the model is exactly
as before, even when the block raises. Works for every family of :mod:`huggingface_patch.architectures`
(every hook point comes from the family's adapter: :class:`~huggingface_patch.architectures.LayerParts`).

Shapes: ``R`` rows of the batch, ``T`` tokens (no cache: keys = queries = ``T``), ``H`` hidden size.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Mapping, Sequence

import torch

from ..architectures import model_parts
from ..compat import eager_attention, layer_output_tensor

#: ``mode`` values of :func:`knockout_attention`
ATTENTION_KNOCKOUT_MODES = ("uniform", "zero")


def _hidden_states_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _causal_additive_mask(hidden: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T, T)`` additive causal mask (0 allowed, ``finfo.min`` above the diagonal)."""
    batch, length = hidden.shape[:2]
    dtype = hidden.dtype if hidden.dtype.is_floating_point else torch.float32
    future = torch.ones(length, length, dtype=torch.bool, device=hidden.device).triu(1)
    mask = torch.zeros(length, length, dtype=dtype, device=hidden.device).masked_fill(future, torch.finfo(dtype).min)
    return mask[None, None].expand(batch, 1, length, length)


def _current_mask(args, kwargs) -> torch.Tensor:
    mask = kwargs.get("attention_mask")
    if mask is None:
        return _causal_additive_mask(_hidden_states_of(args, kwargs))
    if mask.dtype == torch.bool:  # True = attend (SDPA-style); turn into an additive mask
        dtype = _hidden_states_of(args, kwargs).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


@contextlib.contextmanager
def _hooks(register_all):
    handles = []
    try:
        register_all(handles)
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def block_attention_edges(model, blocked: Mapping[int, torch.Tensor]):
    """Knock out attention edges: in layer ``l``, query position ``i`` cannot attend to key ``j`` where
    ``blocked[l][r, i, j]`` is True (all heads; ``blocked[l]`` is ``(R, Q, K)`` or ``(Q, K)`` for ``Q`` query
    and ``K`` key positions: ``(R, T, T)`` for a whole prompt, ``(R, 1, T)`` for one token continuing a
    cache).

    Blocked cells get ``finfo.min`` in the 4-D additive mask (the paper's mechanism), so a query row with
    every allowed key blocked falls back to uniform attention, as in the original code. Layers not in
    ``blocked`` are untouched; an all-False mask changes nothing.
    """
    parts = model_parts(model)

    def make_hook(block: torch.Tensor):
        def hook(module, args, kwargs):
            mask = _current_mask(args, kwargs)
            cells = block.to(mask.device)
            if cells.ndim == 3:
                cells = cells[:, None]
            if cells.shape[-1] > mask.shape[-1]:  # a sliding-window cache holds only the last keys
                cells = cells[..., -mask.shape[-1]:]
            kwargs["attention_mask"] = torch.where(cells, torch.finfo(mask.dtype).min, mask)
            return args, kwargs

        return hook

    def register(handles):
        for layer, block in blocked.items():
            attention = parts.layers[layer].attention
            handles.append(attention.register_forward_pre_hook(make_hook(block.bool()), with_kwargs=True))

    with eager_attention(model), _hooks(register):
        yield


def edge_mask(length: int, rows: Sequence[Iterable[int]], query: int | Sequence[int] | None = None,
              device=None) -> torch.Tensor:
    """``(R, T, T)`` boolean mask blocking, in row ``r``, the edges from the query position(s) (default the
    last, ``T-1``) to the key positions ``rows[r]``."""
    mask = torch.zeros(len(rows), length, length, dtype=torch.bool, device=device)
    queries = [length - 1] if query is None else ([query] if isinstance(query, int) else list(query))
    for r, keys in enumerate(rows):
        keys = list(keys)
        if keys:
            for q in queries:
                mask[r, q, keys] = True
    return mask


def _row_selector(rows: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """``(R, 1, 1)`` float/bool selector of the rows an intervention applies to (all rows when None)."""
    if rows is None:
        return torch.ones(hidden.shape[0], 1, 1, dtype=torch.bool, device=hidden.device)
    return rows.to(hidden.device).bool().view(-1, 1, 1)


def _position_selector(positions, hidden: torch.Tensor) -> torch.Tensor:
    """``(R or 1, T, 1)`` bool: which positions (all when None; a ``(R, T)`` bool tensor or a list)."""
    length = hidden.shape[1]
    if positions is None:
        return torch.ones(1, length, 1, dtype=torch.bool, device=hidden.device)
    if isinstance(positions, torch.Tensor):
        return positions.to(hidden.device).bool().view(positions.shape[0], length, 1)
    selector = torch.zeros(1, length, 1, dtype=torch.bool, device=hidden.device)
    selector[0, list(positions)] = True
    return selector


def _track_layer_shapes(parts, layers, handles, shapes: dict[int, tuple[int, int]]) -> None:
    """Record into ``shapes`` the ``(B, T)`` of each layer's input during forward passes (OPT runs its MLP
    on a flattened ``(B*T, D)`` tensor)."""

    def make(index):
        def hook(module, args, kwargs):
            shapes[index] = tuple(_hidden_states_of(args, kwargs).shape[:2])

        return hook

    for layer in layers:
        handles.append(parts.layers[layer].layer.register_forward_pre_hook(make(layer), with_kwargs=True))


def _as_3d(tensor: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return tensor.view(*shape, tensor.shape[-1]) if tensor.ndim == 2 else tensor


@contextlib.contextmanager
def knockout_mlp(model, layers: Iterable[int], positions=None, rows: torch.Tensor | None = None):
    """Knock out the MLP of ``layers``: its inner activation (input of the last linear) is set to 0, so
    the MLP outputs only the bias of that linear (the paper zeroes ``c_fc`` outputs after the GELU).

    ``positions``: None (all, the paper's setting), a list of positions, or an ``(R, T)`` bool tensor;
    ``rows``: optional ``(R,)`` bool tensor restricting the knockout to some rows of the batch.
    """
    parts = model_parts(model)
    layers = list(layers)
    shapes: dict[int, tuple[int, int]] = {}

    def make_hook(index):
        def hook(module, args):
            flat = args[0]
            hidden = _as_3d(flat, shapes[index])
            keep = ~(_row_selector(rows, hidden) & _position_selector(positions, hidden))
            return ((hidden * keep.to(hidden.dtype)).view(flat.shape),) + tuple(args[1:])

        return hook

    def register(handles):
        _track_layer_shapes(parts, layers, handles, shapes)
        for layer in layers:
            handles.append(parts.layers[layer].mlp_down.register_forward_pre_hook(make_hook(layer)))

    with _hooks(register):
        yield


@contextlib.contextmanager
def knockout_attention(model, layers: Iterable[int], mode: str = "uniform", rows: torch.Tensor | None = None):
    """Knock out the attention sublayer of ``layers`` at every position.

    ``mode="uniform"`` — **the paper's quirk**: every allowed mask cell is set to ``finfo.min`` (future
    cells stay masked), which under eager attention makes the attention *uniform over the causal prefix*
    (scores are absorbed by ``finfo.min``), not zero; in a model with attention sinks (GPT-OSS) the sink
    then takes every query's whole attention, so the sublayer outputs only its bias. ``mode="zero"`` — **true
    zero attention**: all attention weights are 0, so the sublayer outputs only its output-projection bias (like the MLP
    knockout, which leaves the bias of its last linear; Gemma's norm after the sublayer then sees only that
    bias). ``rows`` restricts it to some batch rows.
    """
    if mode not in ATTENTION_KNOCKOUT_MODES:
        raise ValueError(f"unknown attention knockout mode {mode!r}: choose from {', '.join(ATTENTION_KNOCKOUT_MODES)}")
    parts = model_parts(model)

    def uniform_hook(module, args, kwargs):
        mask = _current_mask(args, kwargs)
        minimum = torch.finfo(mask.dtype).min
        allowed = mask > minimum / 2
        uniform = torch.where(allowed, torch.full_like(mask, minimum), torch.full_like(mask, float("-inf")))
        select = _row_selector(rows, mask)[..., None]  # (R, 1, 1, 1)
        kwargs["attention_mask"] = torch.where(select, uniform, mask)
        return args, kwargs

    def zero_hook(module, args):
        hidden = args[0]
        keep = ~_row_selector(rows, hidden)
        return (hidden * keep.to(hidden.dtype),) + tuple(args[1:])

    def register(handles):
        for layer in layers:
            attention = parts.layers[layer].attention
            if mode == "uniform":
                handles.append(attention.register_forward_pre_hook(uniform_hook, with_kwargs=True))
            else:
                handles.append(parts.layers[layer].attention_output.register_forward_pre_hook(zero_hook))

    with contextlib.ExitStack() as stack:
        if mode == "uniform":
            stack.enter_context(eager_attention(model))
        stack.enter_context(_hooks(register))
        yield


@contextlib.contextmanager
def patch_layer_input(model, layer: int, source: torch.Tensor, positions, rows: torch.Tensor | None = None):
    """Replace the input of decoder layer ``layer`` (its residual stream) with ``source`` ``(R, T, H)`` at
    ``positions`` (a list, or an ``(R, T)`` bool tensor), in ``rows`` (``(R,)`` bool, default all)."""
    parts = model_parts(model)

    def hook(module, args, kwargs):
        hidden = _hidden_states_of(args, kwargs)
        select = _row_selector(rows, hidden) & _position_selector(positions, hidden)
        patched = torch.where(select, source.to(hidden.device, hidden.dtype), hidden)
        if args:
            return (patched,) + tuple(args[1:]), kwargs
        kwargs["hidden_states"] = patched
        return args, kwargs

    def register(handles):
        handles.append(parts.layers[layer].layer.register_forward_pre_hook(hook, with_kwargs=True))

    with _hooks(register):
        yield


@contextlib.contextmanager
def record_sublayer_outputs(model, position: int = -1):
    """Record, for every layer, what the attention sublayer and the MLP add to the residual stream at
    ``position`` (the outputs of the adapter's ``attention_update`` and ``mlp_update``: the attention module
    and the MLP's last linear, or Gemma's norms after them).

    Yields a dict ``{"attention": [L tensors (R, H)], "mlp": [L tensors (R, H)]}`` filled by the next
    forward pass (cleared at its start).
    """
    parts = model_parts(model)
    L = len(parts.layers)
    record: dict[str, list] = {"attention": [None] * L, "mlp": [None] * L}

    def attention_hook(index):
        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            # a copy (Falcon adds to it in place), times what the layer multiplies the update by (Granite)
            record["attention"][index] = out[:, position].detach() * parts.layers[index].update_scale

        return hook

    shapes: dict[int, tuple[int, int]] = {}

    def mlp_hook(index):
        def hook(module, args, output):
            scale = parts.layers[index].update_scale
            out = _as_3d(layer_output_tensor(output), shapes[index])  # GPT-OSS's MLP also returns its routing
            record["mlp"][index] = out[:, position].detach() * scale

        return hook

    def register(handles):
        _track_layer_shapes(parts, range(L), handles, shapes)
        for i, layer in enumerate(parts.layers):
            handles.append(layer.attention_update.register_forward_hook(attention_hook(i)))
            handles.append(layer.mlp_update.register_forward_hook(mlp_hook(i)))

    with _hooks(register):
        yield record
