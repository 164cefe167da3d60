"""Decomposition lens: for one target position, the contribution of each source at each layer projected to
the vocabulary through the *frozen* final norm and the LM head.

At layer ``l`` the frozen final norm uses the real residual state ``x_l`` of that layer (as the logit lens does):
LayerNorm ``(c - mean(c)) / sqrt(var(x_l) + eps) * gamma`` (``beta`` belongs to the bias term), RMSNorm
``c / sqrt(mean(x_l^2) + eps) * gamma``; OPT-350m's ``project_out`` is applied. The projection is the LM
head's weight alone: a head bias (GPT-J) belongs to no source, and final-logit softcapping (Gemma 2) is
not linear, so it applies to whole logits, not to per-source pieces. At the last layer this equals the
model's own decomposition, so the source vectors plus the bias term give the logits before softcapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..architectures import Readout, get_adapter, readout
from ..engine.norms import norm_scale, normalize
from ..layer_states import residual_states


@dataclass
class DecompositionLensResult:
    """``logits`` ``(L+1, S, V)``: source ``sources[j]``'s vocabulary projection at layer ``l`` (0 = embeddings);
    ``target_logit`` ``(L+1, S)``: its entry for the actual next token ``next_id`` (``logits`` and ``next_id``
    are None in a table read back from files, which hold only the top tokens).
    """

    target: int
    sources: list[int]
    next_id: int
    logits: torch.Tensor
    target_logit: torch.Tensor

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, ids)`` ``(L+1, S, k)`` of the ``k`` most promoted tokens."""
        return self.logits.topk(k, dim=-1)


def frozen_final_norm(model, contributions: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Apply the final norm frozen at the real pre-norm ``state`` ``(H,)`` to ``contributions`` ``(..., H)``
    (no shift: it is part of the bias term), then ``project_out`` if the model has one; in fp64 on the CPU.
    The norm is the engine's own (:func:`huggingface_patch.engine.norms.normalize`)."""
    spec = get_adapter(model).spec(model)
    c = contributions.double().cpu()
    if spec.final_norm is not None:
        c = normalize(c, spec.final_norm, norm_scale(spec.final_norm, state.double().cpu()))
    if spec.project_out is not None:
        c = spec.project_out.linear(c.to(spec.project_out.weight.device)).double().cpu()
    return c


@dataclass
class LensRun:
    """One decomposing run of a sequence, from which the lens of any of its positions is read.

    ``ids`` ``(T,)``; ``states`` ``(L+1, T, H)`` the real pre-norm residual states; ``layers`` ``(L+1, W, T, H)``
    every layer's decomposition (relative layout); ``proj`` ``(V, H)`` the LM head's weight in fp64 on the CPU.
    """

    ids: torch.Tensor
    states: torch.Tensor
    layers: torch.Tensor
    proj: torch.Tensor

    @property
    def window(self) -> int:
        return self.layers.shape[1]


@torch.no_grad()
def lens_run(model, ids: torch.Tensor, window: int | None = None, proj: torch.Tensor | None = None) -> LensRun:
    """Run the decomposing ``model`` once over ``ids`` ``(T,)`` keeping every layer's decomposition; ``proj``: the
    fp64 head weight when the caller already holds one (the copy is 1.3 GB for a 262k vocabulary)."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    window = len(ids) if window is None else window
    device = next(model.parameters()).device
    states, out = residual_states(model, ids[None].to(device), decomposition_window=window,
                                  output_layer_decompositions=True)
    if proj is None:
        proj = readout(model).weight.detach().double().cpu()
    layers = torch.stack([layer[0].cpu() for layer in out.layer_decompositions])
    return LensRun(ids, states[:, 0].cpu(), layers, proj)


@torch.no_grad()
def lens_of(model, run: LensRun, target: int) -> DecompositionLensResult:
    """The lens of position ``target`` of ``run`` (its output predicts ``ids[target+1]``; the last position has
    no next token and reports ``next_id`` -1 with ``target_logit`` of token 0)."""
    length = len(run.ids)
    _check_target(target, length)
    ks = list(range(min(run.window, target + 1)))
    sources = [target - k for k in ks][::-1]
    # every layer's sources through their own frozen norm, then one (L+1) * S row product with the head
    normed = torch.stack([frozen_final_norm(model, run.layers[level, : len(ks), target].flip(0),
                                            run.states[level, target])
                          for level in range(run.layers.shape[0])])  # (L+1, S, H)
    logits = Readout(run.proj).raw(normed)  # (L+1, S, V); the weight alone (a head bias belongs to no source)
    next_id = int(run.ids[target + 1]) if target + 1 < length else -1
    target_logit = logits[..., max(next_id, 0)]
    return DecompositionLensResult(target, sources, next_id, logits, target_logit)


def _check_target(target: int, length: int) -> None:
    if not 0 <= target < length:
        raise ValueError(f"target position {target} outside the sequence of {length} tokens")


def decomposition_lens(model, ids: torch.Tensor, target: int, window: int | None = None) -> DecompositionLensResult:
    """Lens for position ``target`` of ``ids`` ``(T,)``: :func:`lens_of` of one :func:`lens_run`."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    _check_target(target, len(ids))  # before the run, which is the long part
    return lens_of(model, lens_run(model, ids, window), target)


@dataclass
class DecompositionLensTable:
    """A :class:`DecompositionLensResult` as tables: ``rows`` (layer, source, rank, promoted token, logit), ``entries``
    (top tokens per layer and source), the column of logits plotted (``column`` ``(L+1, S)``) and its token."""

    result: DecompositionLensResult
    tokens: list[str]
    rows: list[dict]
    entries: list[dict]
    column: torch.Tensor
    column_token: str
    settings: dict

    def write(self, folder, model_name: str) -> None:
        """``lens.csv``, ``lens.json`` and ``lens.png`` into a :class:`~huggingface_patch.files.ResultFolder`."""
        from ..files import write_csv, write_json
        from ..tokens import show
        from .plots import plot_lens_heatmap

        target = self.result.target
        write_csv(self.rows, folder.path("lens.csv"))
        write_json(dict(self.settings, model=model_name, tokens=self.tokens, target=target,
                        target_token=self.tokens[target], next_token=self.column_token,
                        layers="0 = embeddings, l = output of layer l; frozen final norm at that layer's state",
                        entries=self.entries), folder.path("lens.json"))
        plot_lens_heatmap(self.column.numpy(), ["emb"] + [str(i) for i in range(1, self.column.shape[0])],
                          [self.tokens[s] for s in self.result.sources], folder.path("lens.png"),
                          title=f"{model_name}: contribution of each source to the logit of {show(self.column_token)} "
                                f"at position {target}", colorbar="logit contribution")

    @classmethod
    def from_folder(cls, folder: str) -> "DecompositionLensTable":
        """The table :meth:`write` put into ``folder``. The full projection ``result.logits`` ``(L+1, S, V)`` and
        the next token's id are not written, so they are None; the plotted ``column`` is rebuilt from the
        entries."""
        from ..stored import StoredFolder

        stored = StoredFolder(folder)
        written = stored.json("lens.json")
        entries = written["entries"]
        sources = list(dict.fromkeys(e["source_index"] for e in entries))
        layers = max(e["layer"] for e in entries) + 1
        column = torch.tensor([e["next_token_logit"] for e in entries], dtype=torch.float64).reshape(layers,
                                                                                                     len(sources))
        result = DecompositionLensResult(written["target"], sources, None, None, column)
        settings = {key: written[key] for key in ("window", "top_k")}
        return cls(result, written["tokens"], stored.table("lens.csv"), entries, column, written["next_token"],
                   settings)


def lens_table(model, tokenizer, ids: torch.Tensor, target: int, window: int | None = None,
               top_k: int = 5, run: LensRun | None = None) -> DecompositionLensTable:
    """:func:`decomposition_lens` of ``target`` as tables; at the last position (no next token) the plotted
    column follows the token the model predicts. ``run``: a :func:`lens_run` over ``ids`` to read it from
    (several targets of one text share one run)."""
    from ..errors import InputError
    from ..tokens import raw_tokens, token_texts

    vocab = readout(model).vocab_size
    if top_k > vocab:
        raise InputError(f"top_k {top_k} exceeds the vocabulary ({vocab} tokens): give at most {vocab}")
    result = decomposition_lens(model, ids, target, window) if run is None else lens_of(model, run, target)
    tokens = token_texts(tokenizer, ids.tolist())
    if result.next_id < 0:
        predicted = int(result.logits[-1].sum(0).argmax())
        column, label = result.logits[..., predicted], token_texts(tokenizer, [predicted])[0]
    else:
        column, label = result.target_logit, tokens[target + 1]
    values, top_ids = result.top(top_k)
    rows, entries = [], []
    for layer in range(values.shape[0]):
        for j, src in enumerate(result.sources):
            names = token_texts(tokenizer, top_ids[layer, j].tolist())
            raws = raw_tokens(tokenizer, top_ids[layer, j].tolist())
            entries.append(dict(layer=layer, source_index=src, source_token=tokens[src], top_tokens=names,
                                top_logits=[round(float(v), 4) for v in values[layer, j]],
                                next_token_logit=float(column[layer, j])))
            for rank in range(top_k):
                rows.append(dict(layer=layer, source_index=src, source_token=tokens[src], rank=rank + 1,
                                 promoted_token=names[rank], promoted_token_raw=raws[rank],
                                 promoted_id=int(top_ids[layer, j, rank]), logit=float(values[layer, j, rank]),
                                 next_token=label, next_token_logit=float(column[layer, j])))
    return DecompositionLensTable(result, tokens, rows, entries, column, label, dict(window=window, top_k=top_k))
