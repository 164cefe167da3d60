"""The one override every decomposing class shares: ``forward`` with a decomposition window.

``DecompositionMixin`` goes first in the bases of a subclass of a Hugging Face model class. Without a
window (argument or ``config.dec_len``) it calls the base ``forward`` untouched; with one it runs the base
``forward`` once under capture hooks (eager attention), then the decomposition engine.
"""

from __future__ import annotations

import inspect
import logging
from typing import Callable

import torch

from ..architectures import get_adapter
from ..engine.capture import capture
from ..engine.conventions import DEFAULT, Conventions
from ..engine.decompose import run_decomposition
from ..engine.frozen import Freezer, compute_dtype
from ..engine.memory import MemoryEstimate, choose_block_size, estimate, should_pack
from ..engine.options import FORWARD_KEYWORDS, DecompositionOptions
from ..engine.precision import check_precision
from ..errors import InputError
from .outputs import decomposed_output

log = logging.getLogger(__name__)

def check_inputs(model, input_ids, embeds, mask) -> tuple[int, int]:
    """Refuse, before any work, inputs the decomposition cannot use; returns ``(batch, T)``.

    ``input_ids``: integer ``(batch, T)`` with ``T >= 1``, ids inside the vocabulary, ``T`` within the model's
    positions; ``attention_mask``: ``(batch, T)`` with at least one real token per row. A model in training
    mode is refused too (dropout would make the real forward pass differ from any recomputation).
    """
    if model.training:
        raise InputError("the model is in training mode, so dropout is active and the decomposition cannot match "
                         "its forward pass: call model.eval() first")
    reference = input_ids if input_ids is not None else embeds
    if reference is None:
        raise InputError("pass input_ids or inputs_embeds")
    expected = 2 if input_ids is not None else 3
    if reference.dim() != expected:
        what = "input_ids must have shape (batch, T)" if input_ids is not None else \
            "inputs_embeds must have shape (batch, T, H)"
        hint = ": add the batch dimension, e.g. input_ids[None]" if reference.dim() == expected - 1 else ""
        raise InputError(f"{what}, got {tuple(reference.shape)}{hint}")
    batch, length = reference.shape[:2]
    if batch == 0 or length == 0:
        raise InputError(f"the input is empty (shape {tuple(reference.shape)}): give at least one token")
    if input_ids is not None:
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise InputError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        vocab = model.get_input_embeddings().weight.shape[0]
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise InputError(f"input_ids has token id {bad} outside the vocabulary 0..{vocab - 1}")
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if positions and length > positions:
        raise InputError(f"the input has {length} tokens but the model has positions for {positions}: cut it into "
                         "pieces (run_decompose.py does) or shorten it")
    if mask is not None:
        if mask.dim() != 2 or tuple(mask.shape) != (batch, length):
            raise InputError(f"attention_mask must have shape (batch, T) = {(batch, length)}, got {tuple(mask.shape)}")
        empty = (~mask.bool()).all(-1).nonzero().flatten().tolist()
        if empty:
            raise InputError(f"attention_mask row {empty[0]} has no real token (all zeros): remove the row or give "
                             "it at least one token")
    return batch, length


class DecompositionMixin:
    """Adds the decomposition options (``decomposition_window``, ``output_layer_decompositions``, ...) to
    ``forward``."""

    def forward(self, *args, decomposition_window: int | None = None, output_layer_decompositions: bool = False,
                decomposition_block_size: int | None = None, decomposition_conventions: Conventions | None = None,
                decomposition_max_memory: int | str | None = None, decomposition_mlp_path: str = "auto",
                decomposition_consumer: Callable | None = None, decomposition_precision: str = "fp32",
                decomposition_options: DecompositionOptions | None = None, **kwargs):
        """The base class's ``forward``; with ``decomposition_window`` (or ``config.dec_len``) the output also
        carries ``decomposition`` ``(B, W, T, H)`` and ``decomposition_bias`` ``(B, T, H)`` (see
        :class:`~huggingface_patch.modeling.outputs.DecomposedCausalLMOutputWithPast`).

        ``decomposition_block_size``: sources per block (default: chosen from the memory budget);
        ``decomposition_max_memory``: total memory budget (bytes, or ``"4GB"``, ``"3.5GiB"``); the block size
        follows from it, and a budget that cannot be met raises
        :class:`~huggingface_patch.engine.memory.MemoryBudgetError` before the forward pass;
        ``decomposition_mlp_path``: ``"auto"`` (sparse ReLU path where it pays off), ``"dense"``, ``"sparse"``;
        ``decomposition_conventions``: a :class:`~huggingface_patch.engine.conventions.Conventions`;
        ``decomposition_consumer``: streaming mode, ``consumer(start, block)`` receives every finished block
        of sources ``(B, S, w, H)`` (see :func:`~huggingface_patch.engine.decompose.run_decomposition`) and
        ``decomposition`` is None (a consumer may declare ``consumer.memory_bytes``, what it holds besides the
        block: the memory budget counts it); ``decomposition_precision``: ``"fp32"`` (default, exact), ``"bf16"`` or
        ``"tf32"`` (CUDA) for the contributions' matmuls (:mod:`~huggingface_patch.engine.precision`); the
        model's own forward pass and the bias term stay exact, and the output's
        ``decomposition_identity_errors`` says how far the result is from the real states.
        ``decomposition_options``: all of these at once, as a
        :class:`~huggingface_patch.engine.options.DecompositionOptions` (then pass none of the others).
        """
        loose = dict(decomposition_window=decomposition_window, output_layer_decompositions=output_layer_decompositions,
                     decomposition_block_size=decomposition_block_size,
                     decomposition_conventions=decomposition_conventions,
                     decomposition_max_memory=decomposition_max_memory, decomposition_mlp_path=decomposition_mlp_path,
                     decomposition_consumer=decomposition_consumer, decomposition_precision=decomposition_precision)
        options = self._decomposition_options(decomposition_options, loose)
        if options is None:
            return super().forward(*args, **kwargs)
        check_precision(options.precision, self.device)
        return self._decomposed_forward(super().forward, args, kwargs, options)

    def _decomposition_options(self, options: DecompositionOptions | None, loose: dict) -> DecompositionOptions | None:
        """The options of this call (``None``: a plain forward pass), from ``decomposition_options`` or from the
        loose keyword arguments, the window defaulting to ``config.dec_len``."""
        if options is not None:
            given = [key for key, value in loose.items() if value != _FORWARD_DEFAULTS[key]]
            if given:
                raise InputError(f"pass either decomposition_options or {', '.join(given)}, not both: put "
                                 "every setting in the DecompositionOptions")
            return options
        if loose["decomposition_window"] is None:
            loose["decomposition_window"] = getattr(self.config, "dec_len", None)
        if loose["decomposition_window"] is None:
            if loose["output_layer_decompositions"]:
                raise InputError("output_layer_decompositions=True needs decomposition_window (or config.dec_len)")
            return None
        return DecompositionOptions.from_forward_kwargs(**loose)

    @classmethod
    def is_custom_code(cls) -> bool:
        """As the Hugging Face class this one extends: same weights, so the same checkpoint handling (Transformers
        skips key conversions and changes weight initialisation for classes it takes for custom code)."""
        base = next(c for c in cls.__mro__ if c is not cls and not issubclass(c, DecompositionMixin)
                    and hasattr(c, "is_custom_code"))
        return base.is_custom_code()

    def decomposition_memory(self, batch: int, length: int, window: int, output_layers: bool = False,
                             streaming: bool = False, max_memory: int | None = None,
                             conventions: Conventions | None = None, consumer_bytes: int = 0) -> MemoryEstimate:
        """Memory estimate of decomposing ``batch`` sequences of ``length`` tokens with ``window`` (see
        :mod:`~huggingface_patch.engine.memory`); ``max_memory`` as in ``forward`` (a budget also makes the
        attention probabilities be stored packed)."""
        spec = get_adapter(self).spec(self)
        model_bytes = sum(p.numel() * p.element_size() for p in self.parameters())
        itemsize = compute_dtype(self.dtype).itemsize
        return estimate(spec, batch, length, window, itemsize, model_bytes=model_bytes,
                        vocab=self.config.vocab_size, output_layers=output_layers, streaming=streaming,
                        tangent=(conventions or DEFAULT).activation == "tangent",
                        packed=should_pack(spec, batch, length, itemsize, max_memory, window), consumer=consumer_bytes)

    def _decomposed_forward(self, base_forward, args, kwargs, options: DecompositionOptions):
        call, return_dict = _bind_call(base_forward, args, kwargs)
        input_ids, embeds = call.get("input_ids"), call.get("inputs_embeds")
        mask = call.get("attention_mask")
        batch, length = check_inputs(self, input_ids, embeds, mask)
        reference = input_ids if input_ids is not None else embeds
        valid = torch.ones(batch, length, dtype=torch.bool, device=reference.device) if mask is None else mask.bool()

        spec = get_adapter(self).spec(self)
        if spec.positions_from_mask and call.get("position_ids") is None and not bool(valid.all()):
            # left padding: count positions from each sequence's first real token, as generate() does
            call["position_ids"] = (valid.long().cumsum(-1) - 1).clamp(min=0)

        window, max_memory, consumer = options.window, options.max_memory, options.consumer
        est = None
        if options.block_size is None and max_memory is not None:
            est = self.decomposition_memory(batch, length, window, options.output_layers,
                                            streaming=consumer is not None, max_memory=max_memory,
                                            conventions=options.conventions,
                                            consumer_bytes=getattr(consumer, "memory_bytes", 0))
            planned = choose_block_size(est, max_memory)  # raises MemoryBudgetError before the forward pass
            log.debug("decomposition memory: %s", est.describe(planned))

        pack = should_pack(spec, batch, length, compute_dtype(self.dtype).itemsize, max_memory, window)
        # each layer is frozen as soon as it has run, and carries the bias term while its full attention
        # probabilities exist; then it keeps only the band the window reads
        freezer = Freezer(spec, valid, self.dtype, conventions=options.conventions, window=window,
                          output_layers=options.output_layers)

        def on_layer(index, x_in, x_out, probs, record):
            if index == 0:
                position = record.position_embeddings
                freezer.start(x_in, None if position is None else position.detach())
            freezer.add_layer(index, x_in, x_out, probs)

        with capture(self, spec, pack_attention=pack, valid=valid, dtype=compute_dtype(self.dtype),
                     on_layer=on_layer) as record:
            output = base_forward(**call)
        final_state = record.final_state if record.final_state is not None else output.last_hidden_state

        with torch.no_grad():
            frozen = freezer.finish(final_state.detach())
            result = run_decomposition(frozen, window, block_size=options.block_size,
                                       output_layers=options.output_layers, mlp_path=options.mlp_path,
                                       max_memory=max_memory, consumer=consumer, memory=est,
                                       precision=options.precision)
        decomposed = decomposed_output(
            output,
            decomposition=result.decomposition,
            decomposition_bias=result.bias,
            layer_decompositions=result.layer_decompositions,
            layer_decomposition_biases=result.layer_biases,
            decomposition_identity_errors=result.identity_errors,
            decomposition_precision=result.precision,
        )
        return decomposed if return_dict is not False else decomposed.to_tuple()


def _bind_call(base_forward, args, kwargs) -> tuple[dict, bool]:
    """The base ``forward``'s arguments by name, and ``return_dict``; refuses what decomposition cannot use."""
    bound = inspect.signature(base_forward).bind(*args, **kwargs)
    call = dict(bound.arguments)
    call.update(call.pop("kwargs", {}))
    if call.get("past_key_values") is not None or call.get("cache") is not None:
        raise InputError("decomposition does not support a key/value cache: pass the whole sequence at once")
    if call.get("logits_to_keep", 0) not in (0, None):
        raise InputError("decomposition needs logits_to_keep=0 (all positions)")
    return call, call.pop("return_dict", True)


#: the loose keyword arguments' defaults, read from ``forward``'s own signature so that they cannot drift from
#: it (a changed one conflicts with ``decomposition_options``)
_FORWARD_DEFAULTS = {name: parameter.default
                     for name, parameter in inspect.signature(DecompositionMixin.forward).parameters.items()
                     if name in FORWARD_KEYWORDS}
