"""Atomic checkpoints, loadable with ``torch.load(weights_only=True)``.

Everything stored is tensors, numbers, strings, lists and dicts, so no pickled code runs when loading.
"""

from __future__ import annotations

from pathlib import Path

import torch

from morphgen.nifti import atomic_output


def save_atomic(obj: dict, path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a handle: the archive's inner name is fixed, not the temporary one
    return Path(path)
