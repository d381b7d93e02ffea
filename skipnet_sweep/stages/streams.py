"""The random streams a run draws from, as checkpoint data: torch's (CPU and the training
device's), NumPy's, Python's and a data loader's shuffling generator. A resumed run sets
them back and draws what the uninterrupted run would have drawn next (shuffles,
augmentation, HRL's sampled gate actions).

Every value is a tensor, an int, a float or a tuple of them, so a checkpoint holding them
still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state(device: torch.device, generator: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every stream a run on ``device`` draws from, ``generator``'s included."""
    key, pos, has_gauss, gauss = np.random.get_state()[1:]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(
    state: dict[str, Any], device: torch.device, generator: torch.Generator | None = None
) -> None:
    """Set the streams back to ``state`` (from ``rng_state``); one it lacks is left as is (a
    checkpoint from a CPU run resumed on a GPU keeps the GPU's seeded stream)."""
    torch.set_rng_state(state["torch"])
    key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])
