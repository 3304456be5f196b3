"""Resume checkpoints: a trial's whole training state at the end of an epoch.

A resume checkpoint holds what the next epoch needs to run exactly as if the trial had never
stopped: the model, optimizer, LR schedule and grad scaler, every random generator (Python,
NumPy, torch's CPU and CUDA ones, and the one that shuffles the training data) and the epochs
reported so far. How a file is written and verified is `hpsearch.train.resume_files`; where
the files live and who else gets a copy (a shared artifact store) is the objective's business:
it hands `fit` a `ResumeFolder` or something that behaves like one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpsearch.train.resume_files import ResumeFolder, ResumeStore

__all__ = ["FORMAT", "ResumeFolder", "ResumeStore", "load_state", "rng_state", "set_rng_state"]

_log = logging.getLogger(__name__)
FORMAT = 1  # bumped when the saved dict changes shape; an older file is not loaded


# --- the state itself -------------------------------------------------------------------------


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every generator's state, in types that `torch.load(weights_only=True)` reads."""
    version, words, gauss = random.getstate()
    key, array, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(array, np.ndarray)  # the legacy form is a tuple, never a dict
    return {
        "python": [version, list(words), gauss],
        "numpy": [key, torch.from_numpy(array.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "data": None if generator is None else generator.get_state(),
    }


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    key, array, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, array.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state["data"] is not None:
        generator.set_state(state["data"])


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved dict on the CPU, or None (one warning) when it is of another format."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        _log.warning("resume checkpoint %s is of another hpsearch version; starting over", path)
        return None
    return state
