"""Decomposing model classes and their outputs."""

from .auto import AutoDecomposedModelForCausalLM, decomposed_class_for
from .classes import *  # noqa: F401,F403
from .classes import DECOMPOSED_CLASSES
from .outputs import decomposed_output
