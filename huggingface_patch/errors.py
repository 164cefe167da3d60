"""The library's errors: one base class for every error caused by input the user can fix.

:class:`HuggingfacePatchError` messages name the problem and the fix in one line; command-line entry
points print them as ``prog: error: message`` and exit with code 2 (:func:`huggingface_patch.cli.run_cli`).
Library code raises these (never a CLI's own error); programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class HuggingfacePatchError(ValueError):
    """Bad input or a bad set-up that the user can fix; the message says how."""


class InputError(HuggingfacePatchError):
    """Arguments of a library call that cannot be used (shapes, ids, masks, modes)."""


class OutputFolderError(HuggingfacePatchError):
    """An output folder that cannot be written, or that holds results of another run."""


class RecordError(HuggingfacePatchError):
    """Result files that do not come from one run, or that do not match the model they are read with."""
