"""Where this process stands in a multi-process launch (``torchrun``, ``accelerate launch``); see ``docs/scale_out.md``.

Only a launch with ``WORLD_SIZE`` > 1 creates an ``accelerate.PartialState`` (and with it the process
group); a plain run is rank 0 of 1 and needs none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProcessInfo:
    """The place of this process in a multi-process launch (rank 0 of 1 for a plain run)."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None  # the device to load the model on (None: leave it where it is loaded, CPU)
    state: object = None  # the ``accelerate.PartialState`` of a distributed launch, else None

    def wait_for_everyone(self) -> None:
        """A barrier across the launch (nothing for a plain run)."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def finish(self) -> None:
        """Tear down the process group of a distributed launch (nothing for a plain run)."""
        if self.state is not None:
            self.state.destroy_process_group()


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun / accelerate launch (1 when not launched by them)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def process_info(device: str | None = None) -> ProcessInfo:
    """Rank, world size and device of this process.

    On CPU (``device`` cpu, or no CUDA) the process group is made with ``cpu=True`` (gloo); otherwise each
    process gets its own GPU (``PartialState().device``) when ``device`` is not given or is a bare ``cuda``.
    """
    if launched_world_size() <= 1:
        return ProcessInfo(device=device)
    from accelerate import PartialState

    on_cpu = (device is not None and torch.device(device).type == "cpu") or (
        device is None and not torch.cuda.is_available())
    state = PartialState(cpu=True) if on_cpu else PartialState()
    if not on_cpu and (device is None or device == "cuda"):
        device = str(state.device)
    return ProcessInfo(rank=state.process_index, world_size=state.num_processes, device=device, state=state)
