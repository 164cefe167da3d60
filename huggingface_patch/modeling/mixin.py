"""The one override every decomposing class shares: ``forward`` with a decomposition window.

``DecompositionMixin`` goes first in the bases of a subclass of a Hugging Face model class. Without a
window (argument or ``config.dec_len``) it calls the base ``forward`` untouched; with one it runs the base
``forward`` once under capture hooks (eager attention), then the decomposition engine.
"""

from __future__ import annotations

import inspect

import torch

from ..architectures import get_adapter
from ..engine.capture import capture
from ..engine.conventions import DEFAULT, Conventions
from ..engine.decompose import run_decomposition
from ..engine.frozen import freeze
from .outputs import decomposed_output


def _check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"decomposition_window must be a positive integer, got {window!r}")
    return window


class DecompositionMixin:
    """Adds ``decomposition_window``, ``output_layer_decompositions`` and ``decomposition_block_size`` to ``forward``."""

    def forward(self, *args, decomposition_window: int | None = None, output_layer_decompositions: bool = False,
                decomposition_block_size: int | None = None, decomposition_conventions: Conventions | None = None,
                **kwargs):
        """The base class's ``forward``; with ``decomposition_window`` (or ``config.dec_len``) the output also
        carries ``decomposition`` ``(B, W, T, H)`` and ``decomposition_bias`` ``(B, T, H)`` (see
        :class:`~huggingface_patch.modeling.outputs.DecomposedCausalLMOutputWithPast`).

        ``decomposition_block_size``: sources per block (default: chosen from a memory budget);
        ``decomposition_conventions``: a :class:`~huggingface_patch.engine.conventions.Conventions`.
        """
        window = decomposition_window if decomposition_window is not None else getattr(self.config, "dec_len", None)
        if window is None:
            if output_layer_decompositions:
                raise ValueError("output_layer_decompositions=True needs decomposition_window (or config.dec_len)")
            return super().forward(*args, **kwargs)
        return self._decomposed_forward(super().forward, args, kwargs, _check_window(window),
                                        output_layer_decompositions, decomposition_block_size,
                                        decomposition_conventions or DEFAULT)

    def _decomposed_forward(self, base_forward, args, kwargs, window, output_layers, block_size, conventions):
        bound = inspect.signature(base_forward).bind(*args, **kwargs)
        call = dict(bound.arguments)
        call.update(call.pop("kwargs", {}))
        if call.get("past_key_values") is not None:
            raise ValueError("decomposition does not support past_key_values: pass the whole sequence at once")
        if call.get("logits_to_keep", 0) not in (0, None):
            raise ValueError("decomposition needs logits_to_keep=0 (all positions)")
        return_dict = call.pop("return_dict", True)

        input_ids, embeds = call.get("input_ids"), call.get("inputs_embeds")
        reference = input_ids if input_ids is not None else embeds
        if reference is None:
            raise ValueError("pass input_ids or inputs_embeds")
        batch, length = reference.shape[:2]
        mask = call.get("attention_mask")
        if mask is None:
            valid = torch.ones(batch, length, dtype=torch.bool, device=reference.device)
        else:
            if mask.dim() != 2 or tuple(mask.shape) != (batch, length):
                raise ValueError(f"attention_mask must have shape (batch, T) = {(batch, length)}, got {tuple(mask.shape)}")
            valid = mask.bool()

        adapter = get_adapter(self)
        spec = adapter.spec(self)
        if spec.positions_from_mask and call.get("position_ids") is None and not bool(valid.all()):
            # left padding: count positions from each sequence's first real token, as generate() does
            call["position_ids"] = (valid.long().cumsum(-1) - 1).clamp(min=0)

        with capture(self, spec) as record:
            output = base_forward(**call)
        final_state = record.final_state
        if final_state is None:
            final_state = output.last_hidden_state

        with torch.no_grad():
            frozen = freeze(
                spec,
                [x.detach() for x in record.layer_inputs],
                [x.detach() for x in record.layer_outputs],
                [a.detach() for a in record.attention],
                final_state.detach(),
                valid,
                pad=min(window, length),
                model_dtype=self.dtype,
                conventions=conventions,
                position_embeddings=None if record.position_embeddings is None else record.position_embeddings.detach(),
            )
            result = run_decomposition(frozen, window, block_size=block_size, output_layers=output_layers)
        decomposed = decomposed_output(
            output,
            decomposition=result.decomposition,
            decomposition_bias=result.bias,
            layer_decompositions=result.layer_decompositions,
            layer_decomposition_biases=result.layer_biases,
        )
        return decomposed if return_dict is not False else decomposed.to_tuple()
