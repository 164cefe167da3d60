"""Causal LMs of every supported family on a text corpus (saturation backend)."""

from __future__ import annotations

import torch

from .base import Backend, Item


class TextBackend(Backend):
    """Causal LMs of every supported family on a text corpus.

    Documents are cut into model-sized pieces (:func:`huggingface_patch.corpus.split_article`, the start
    token first); every position except the start token is analysed once (positions repeated in overlapping
    pieces are skipped). The target of a position is the next token of the document (-1 at a document's last
    token).
    """

    kind = "text"

    def __init__(self, model, tokenizer, documents: list[str], device=None, max_context: int | None = None,
                 start=None):
        super().__init__(model, device)
        from ...architectures import model_parts
        from ...corpus import document_start

        self.parts = model_parts(model)  # raises UnsupportedArchitectureError for other families
        self.tokenizer = tokenizer
        self.documents = documents
        self.max_context = max_context
        self.start = start if start is not None else document_start(model.config, tokenizer)

    def layer_modules(self):
        """The blocks whose outputs form the residual stream."""
        return [layer.layer for layer in self.parts.layers]

    def items(self) -> list[Item]:
        """The inputs to analyse."""
        from ...corpus import context_size, split_article, tokenize_articles

        context = context_size(self.model.config)
        if self.max_context:
            context = min(context, self.max_context)
        items = []
        for doc, ids in enumerate(tokenize_articles(self.tokenizer, self.documents)):
            if not ids:
                continue
            seen: set[int] = set()
            for piece in split_article(ids, self.start.id, context, doc):
                positions, targets, index = [], [], []
                for p in range(piece.offset, len(piece.ids)):
                    token_index = piece.start + p - piece.offset
                    if token_index in seen:
                        continue
                    seen.add(token_index)
                    positions.append(p)
                    index.append(token_index)
                    targets.append(ids[token_index + 1] if token_index + 1 < len(ids) else -1)
                if positions:
                    inputs = {"input_ids": torch.tensor([piece.ids])}
                    items.append(Item(inputs, positions, targets, doc, f"doc{doc}", index))
        return items

    @torch.no_grad()
    def states(self, inputs):
        """Residual stream ``(L+1, B, T, H)`` of one forward pass."""
        from ...layer_states import residual_states

        inputs = self._to_device(inputs)
        states, _ = residual_states(self.model, inputs["input_ids"], torch.ones_like(inputs["input_ids"]))
        return states

    @torch.no_grad()
    def read_out(self, states):
        """Logits ``(..., V)`` of residual states ``(..., H)`` (final norm + output projection)."""
        from ...layer_states import project_to_vocab

        return project_to_vocab(self.model, states)

    def decode(self, token_id: int) -> str:
        """A readable name of an output id."""
        return self.tokenizer.decode([int(token_id)])
