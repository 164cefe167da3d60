"""Parameters vs hidden states (Dar et al. 2023, "interpretation" experiment).

For every position ``p`` of some texts and every layer ``l``: take the ``n_neurons`` most activated MLP
neurons of layer ``l`` at ``p`` (largest inner activation: ``act(x·k)`` for OPT/GPT-2, ``act(x·g)·(x·u)``
for the Llama family), let ``A`` be the union of the top-``k_tokens`` tokens of their projections
``part · E`` (one ``A`` per part: key, or gate and up, and value), and ``B`` the top-``k_tokens`` tokens of
the hidden state ``final_norm(h_l) · E`` (``h_l`` the output of layer ``l``; ``target='final'`` uses the last
layer's output instead). Recall = ``|A ∩ B| / |B|``, averaged over positions. The random baseline pairs
``B`` at ``p`` with ``A`` taken at another position drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..architectures import model_parts
from ..errors import InputError
from ..layer_states import record_residual_stream
from .projections import embedding_matrix, ff_matrices, is_experts_layer

ALIGNMENT_TARGETS = ("layer", "final")


@dataclass
class Activations:
    """What the texts produced.

    ``top_neurons`` ``(L, P, n)`` (indices of the most activated neurons) and ``states``
    ``(L+1, P, H)`` (residual stream, pre-final-norm) at the ``P`` positions kept.
    """

    top_neurons: torch.Tensor
    states: torch.Tensor
    texts_used: int = 0


@torch.no_grad()
def collect_activations(model: nn.Module, tokenizer, texts: list[str], n_neurons: int = 5, max_positions: int = 1000,
                        skip_first: bool = True, max_length: int = 512, start_token=None) -> Activations:
    """Run the texts one at a time, each cut to ``max_length`` tokens and to the model's context; keep up to
    ``max_positions`` positions (``skip_first``: not position 0). ``start_token``: a
    :class:`~huggingface_patch.corpus.StartToken` put before each text (its own special tokens left out);
    None: the tokenizer's own encoding."""
    from ..corpus import CorpusError, context_size

    try:
        max_length = min(max_length, context_size(model.config))
    except CorpusError:
        pass
    parts = model_parts(model)
    device = next(model.parameters()).device
    tops: list[list[torch.Tensor]] = [[] for _ in parts.layers]
    states_kept: list[torch.Tensor] = []
    inner: dict[int, torch.Tensor] = {}

    def capture(index):
        def hook(module, args):
            inner[index] = args[0]
        return hook

    # a mixture-of-experts layer has no dense neurons (each token uses its own experts): its entries stay -1
    dense = [i for i in range(len(parts.layers)) if not is_experts_layer(model, i)]
    handles = [parts.layers[i].mlp_down.register_forward_pre_hook(capture(i)) for i in dense]
    kept, used = 0, 0
    try:
        for text in texts:
            if kept >= max_positions:
                break
            if start_token is None:
                ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_length].to(device)
            else:
                encoded = start_token.prepend(tokenizer(text, add_special_tokens=False)["input_ids"])
                ids = torch.tensor([encoded[:max_length]], device=device)
            with record_residual_stream(model) as states:
                model(input_ids=ids)
            start = 1 if skip_first else 0
            take = min(ids.shape[1] - start, max_positions - kept)
            if take <= 0:
                continue
            used += 1
            window = slice(start, start + take)
            for i in range(len(parts.layers)):
                if i not in dense:
                    tops[i].append(torch.full((take, n_neurons), -1, dtype=torch.long))
                    continue
                # OPT flattens (B, T, F) to (B*T, F) around its MLP
                acts = inner[i].reshape(ids.shape[0], ids.shape[1], -1)[0, window].float()
                tops[i].append(acts.topk(min(n_neurons, acts.shape[-1]), dim=-1).indices.cpu())
            states_kept.append(torch.stack([s[0, window].float().cpu() for s in states]))
            kept += take
    finally:
        for handle in handles:
            handle.remove()
    if kept == 0:
        raise InputError("the texts give no position to analyse")
    return Activations(torch.stack([torch.cat(t) for t in tops]), torch.cat(states_kept, dim=1), used)


def _topk_ids(matrix: torch.Tensor, embedding: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """Top-``k`` column indices of ``matrix (N, H) @ embedding (H, V)``, row by row in chunks."""
    out = []
    for first in range(0, matrix.shape[0], chunk):
        out.append((matrix[first : first + chunk] @ embedding).topk(k, dim=-1).indices.cpu())
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


@dataclass
class AlignmentResult:
    """Per layer and part: mean recall and random-baseline recall over ``positions``."""

    rows: list[dict] = field(default_factory=list)
    positions: int = 0
    texts: int = 0


@torch.no_grad()
def parameter_alignment(model: nn.Module, tokenizer, texts: list[str], *, layers: list[int] | None = None,
                        n_neurons: int = 5, k_tokens: int = 50, max_positions: int = 1000, target: str = "layer",
                        allowed: torch.Tensor | None = None, embedding: str = "output", seed: int = 0,
                        normalize: bool = False, activations: Activations | None = None,
                        start=None) -> AlignmentResult:
    """Recall of the hidden state's top tokens among the most activated neurons' top tokens.

    Per layer and part (keys and values), against a random-position baseline (see the module docstring);
    ``start`` as in :func:`collect_activations`.
    """
    if target not in ALIGNMENT_TARGETS:
        raise ValueError(f"unknown target {target!r}: choose from {', '.join(ALIGNMENT_TARGETS)}")
    parts = model_parts(model)
    n_layers = len(parts.layers)
    layers = list(range(n_layers)) if layers is None else layers
    if all(is_experts_layer(model, layer) for layer in layers):
        raise InputError("every layer asked for is a mixture of experts: the alignment reads dense neurons, which "
                         "these layers do not have (read an expert's neurons with ff --expert)")
    acts = activations or collect_activations(model, tokenizer, texts, n_neurons, max_positions, start_token=start)
    device = next(model.parameters()).device
    write = embedding_matrix(model, "output", normalize).float()
    read = embedding_matrix(model, embedding, normalize).float()
    if allowed is not None:
        cols = allowed.nonzero().squeeze(1).to(write.device)
        write, read = write[:, cols], read[:, cols]
    k_tokens = min(k_tokens, write.shape[1])
    positions = acts.states.shape[1]
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for layer in layers:
        if is_experts_layer(model, layer):  # no dense neurons to align (see collect_activations)
            continue
        hidden = acts.states[layer + 1 if target == "layer" else -1].to(device)
        if parts.final_norm is not None:
            hidden = parts.final_norm(hidden.to(next(model.parameters()).dtype)).float()
        hidden_top = _topk_ids(hidden, write, k_tokens)  # (P, k)
        top = acts.top_neurons[layer]  # (P, n)
        other = (torch.arange(positions) + torch.randint(1, max(positions, 2), (positions,), generator=gen)) % positions
        used = torch.unique(top)
        slot = {int(n): i for i, n in enumerate(used)}
        for part, weights in ff_matrices(model, layer).items():
            matrix = (write if part == "value" else read)
            neuron_top = _topk_ids(weights[used.to(weights.device)].float(), matrix, k_tokens)  # (U, k)
            sets = [set(neuron_top[[slot[int(n)] for n in top[p]]].flatten().tolist()) for p in range(positions)]
            targets = [set(row.tolist()) for row in hidden_top]
            recall = [len(sets[p] & targets[p]) / k_tokens for p in range(positions)]
            baseline = [len(sets[int(other[p])] & targets[p]) / k_tokens for p in range(positions)]
            rows.append(dict(layer=layer, part=part, recall=round(float(np.mean(recall)), 5),
                             recall_std=round(float(np.std(recall)), 5), baseline=round(float(np.mean(baseline)), 5),
                             baseline_std=round(float(np.std(baseline)), 5), positions=positions))
    return AlignmentResult(rows, positions, acts.texts_used)


def plot_alignment(result: AlignmentResult, title: str):
    """Recall per layer, one colour per part, random baseline dashed."""
    from ..files import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.5))
    parts = list(dict.fromkeys(r["part"] for r in result.rows))
    for n, part in enumerate(parts):
        sel = [r for r in result.rows if r["part"] == part]
        layers = [r["layer"] for r in sel]
        colour = f"C{n}"
        ax.plot(layers, [r["recall"] for r in sel], "-o", color=colour, ms=3, label=f"{part}: top neurons")
        ax.plot(layers, [r["baseline"] for r in sel], "--", color=colour, alpha=0.7, label=f"{part}: random position")
    ax.set_xlabel("layer")
    ax.set_ylabel("recall |A ∩ B| / |B|")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
