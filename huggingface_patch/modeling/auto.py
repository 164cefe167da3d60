"""``AutoDecomposedModelForCausalLM``: pick the decomposing class from a checkpoint's config."""

from __future__ import annotations

from ..architectures import UnsupportedArchitectureError
from .classes import DECOMPOSED_CLASSES

# from_pretrained arguments that also matter for reading the config
_CONFIG_KWARGS = ("gguf_file", "revision", "cache_dir", "token", "local_files_only", "trust_remote_code", "subfolder")


def decomposed_class_for(config, head: bool = True):
    """The decomposing class for ``config`` (with LM head by default); clear error when unsupported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in DECOMPOSED_CLASSES:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}: supported model types are {', '.join(sorted(DECOMPOSED_CLASSES))}"
        )
    return DECOMPOSED_CLASSES[model_type][0 if head else 1]


class AutoDecomposedModelForCausalLM:
    """Factory like ``AutoModelForCausalLM``, returning the ``Decomposed*`` class of the checkpoint."""

    def __init__(self, *args, **kwargs):
        raise EnvironmentError("use AutoDecomposedModelForCausalLM.from_pretrained(...) or .from_config(...)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if config is None:
            from transformers import AutoConfig

            config_kwargs = {k: kwargs[k] for k in _CONFIG_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **config_kwargs)
        return decomposed_class_for(config).from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        return decomposed_class_for(config)._from_config(config, **kwargs)
