"""``AutoDecomposedModelForCausalLM``: pick the decomposing class from a checkpoint's config."""

from __future__ import annotations

from .classes import decomposed_class_for

# from_pretrained arguments that also matter for reading the config
_CONFIG_KWARGS = ("gguf_file", "revision", "cache_dir", "token", "local_files_only", "trust_remote_code", "subfolder")


class AutoDecomposedModelForCausalLM:
    """Factory like ``AutoModelForCausalLM``, returning the ``Decomposed*`` class of the checkpoint.

    ``from_pretrained`` also takes the names of the bundled models (``smollm2-135m``, ``gemma3-270m``):
    see :mod:`huggingface_patch.bundled`.
    """

    def __init__(self, *args, **kwargs):
        raise EnvironmentError("use AutoDecomposedModelForCausalLM.from_pretrained(...) or .from_config(...)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        from ..bundled import bundled_folder

        folder = bundled_folder(pretrained_model_name_or_path)
        if folder is not None:
            pretrained_model_name_or_path = folder
        config = kwargs.get("config")
        if config is None:
            from transformers import AutoConfig

            config_kwargs = {k: kwargs[k] for k in _CONFIG_KWARGS if k in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **config_kwargs)
        return decomposed_class_for(config).from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        return decomposed_class_for(config)._from_config(config, **kwargs)
