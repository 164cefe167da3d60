"""Re-run part of a model from a clean pass, for interventions that change only part of the computation.

Every recall intervention leaves much of the forward pass as it was: a knockout at the last position
changes nothing at the other positions, a patch or a sublayer knockout starting at block ``s`` changes
nothing before ``s``. Recomputing those parts is most of the cost of a whole forward pass per item.

* :class:`LayerCalls`: one clean pass (eager attention) records, for every decoder block, its input and
  the exact arguments the model called it with (attention mask, position embeddings, ...); :meth:`run`
  then calls blocks ``start .. stop`` again on new inputs for any rows of the batch. This uses the model's
  own block modules and their own arguments, so it works for every family without knowing its internals.
* :func:`last_token_rows`: the prompt's prefix is run once with a key/value cache; each item then runs
  only its last token through the model (the attention knockout of Geva et al. changes only what the last
  position computes).

Both give the numbers of the whole forward pass to round-off (tested on every tiny family).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

from ..architectures import model_parts
from ..compat import cached_step, eager_attention, layer_output_tensor


class StopReplay(Exception):
    """Raised by a hook to end a replay early, once what is measured has been computed."""


def _select(value, rows: torch.Tensor, batch: int):
    """``value`` with its batch entries ``rows``: tensors whose first dimension is the batch are indexed,
    tuples/lists/dicts are walked, everything else (shared tensors of batch 1, flags) is kept."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == batch and batch != 1:
            return value.index_select(0, rows.to(value.device))
        if value.dim() > 0 and value.shape[0] == 1 and batch == 1 and rows.numel() != 1:
            return value.expand(rows.numel(), *value.shape[1:])
        if value.dim() >= 3 and value.shape[0] % batch == 0 and value.shape[0] > batch:
            # the batch folded with heads into the first axis (BLOOM's ALiBi: (B * h, 1, T))
            per = value.shape[0] // batch
            grouped = value.reshape(batch, per, *value.shape[1:])
            return grouped.index_select(0, rows.to(value.device)).reshape(-1, *value.shape[1:])
        return value
    if isinstance(value, tuple):
        return tuple(_select(v, rows, batch) for v in value)
    if isinstance(value, list):
        return [_select(v, rows, batch) for v in value]
    if isinstance(value, dict):
        return {k: _select(v, rows, batch) for k, v in value.items()}
    return value


class LayerCalls:
    """The inputs and call arguments of every decoder block in one clean forward pass of ``ids`` ``(B, T)``.

    ``inputs[l]`` ``(B, T, H)``: the input of block ``l``; ``outputs[l]``: its output. :meth:`run` re-runs
    blocks on new inputs with those arguments.
    """

    def __init__(self, model: nn.Module, ids: torch.Tensor):
        self.model = model
        self.parts = model_parts(model)
        self.batch = ids.shape[0]
        count = len(self.parts.layers)
        self.inputs: list[torch.Tensor] = [None] * count
        self.outputs: list[torch.Tensor] = [None] * count
        self.calls: list[tuple[tuple, dict]] = [None] * count

        def pre(index):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                rest = args[1:] if args else ()
                extra = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                self.inputs[index], self.calls[index] = hidden.detach(), (rest, extra)

            return hook

        def post(index):
            def hook(module, args, kwargs, output):
                self.outputs[index] = layer_output_tensor(output).detach()

            return hook

        handles = []
        try:
            for i, layer in enumerate(self.parts.layers):
                handles.append(layer.layer.register_forward_pre_hook(pre(i), with_kwargs=True))
                handles.append(layer.layer.register_forward_hook(post(i), with_kwargs=True))
            with torch.no_grad(), eager_attention(model):
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()

    def state_after(self, layer: int) -> torch.Tensor:
        """The residual stream after block ``layer`` (``-1``: the embeddings) ``(B, T, H)``."""
        return self.inputs[0] if layer < 0 else self.outputs[layer]

    @torch.no_grad()
    def run(self, hidden: torch.Tensor, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks ``start .. stop - 1`` on ``hidden`` ``(R, T, H)``, row ``r`` taking the call arguments of
        batch entry ``rows[r]``; returns the output of block ``stop - 1``. Hooks registered on the blocks
        (knockouts) apply; a hook may raise :class:`StopReplay` to end early (the caller catches it)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        with eager_attention(self.model):
            for index in range(start, stop):
                args, kwargs = self.calls[index]
                args = _select(args, rows, self.batch)
                kwargs = _select(kwargs, rows, self.batch)
                hidden = layer_output_tensor(self.parts.layers[index].layer(hidden, *args, **kwargs))
        return hidden


@contextlib.contextmanager
def stop_after(module: nn.Module, record: dict, key: str = "output"):
    """Inside the block, ``module``'s forward stores its output in ``record[key]`` and raises
    :class:`StopReplay` (catch it around the replay)."""

    def hook(mod, args, output):
        record[key] = layer_output_tensor(output).detach().clone()
        raise StopReplay

    handle = module.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


@torch.no_grad()
def prefix_cache(model: nn.Module, ids: torch.Tensor):
    """Run the prefix ``ids[:, :-1]`` ``(B, T-1)`` once with a key/value cache (eager attention); returns the
    cache."""
    with eager_attention(model):
        _, cache = cached_step(model, ids[:, :-1], None, logits_to_keep=1)
    return cache


@torch.no_grad()
def last_token_logits(model: nn.Module, ids: torch.Tensor, cache, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Logits ``(R, V)`` of the last token of ``ids`` ``(B, T)`` for batch entries ``rows`` (repeats allowed),
    continuing the prefix ``cache`` of :func:`prefix_cache` (copied per row; the cache is left unchanged).
    Hooks registered on the attention modules see a mask ``(R, 1, 1, T)``: one query row."""
    rows = torch.as_tensor(rows, dtype=torch.long, device=ids.device)
    import copy

    expanded = copy.deepcopy(cache)
    expanded.batch_select_indices(rows)
    last = ids.index_select(0, rows)[:, -1:]
    mask = torch.ones(last.shape[0], ids.shape[1], dtype=torch.long, device=ids.device)
    with eager_attention(model):
        out, _ = cached_step(model, last, expanded, attention_mask=mask, logits_to_keep=1)
    return out.logits[:, -1]
