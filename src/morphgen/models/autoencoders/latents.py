"""Latents of each subject (with seeded augmented copies), and VQ-VAE token grids read back for the prior.

A latent file ``<subject>.npy`` holds, per copy, what the autoencoder's codec stores: an int16/int32 token
grid (copies, h, w, d) for a VQ-VAE, float32 means (copies, channels, h, w, d) for a KL autoencoder. Copy 0
is the unaugmented volume. The spatial axes follow the image axes, which are RAS+ on the working grid, so
flattening a copy in C order gives the raster order the prior models (Tudosiu et al. 2022, appendix 6.2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from morphgen.errors import SubjectError
from morphgen.models.engine.data import VolumeAugmentation, VolumeDataset, seed_for
from morphgen.nifti import atomic_output


def encode_subjects(
    model: torch.nn.Module,
    images: dict[str, Path],
    out_dir: Path,
    augmented_copies: int,
    augment: VolumeAugmentation,
    seed: int,
    batch_size: int = 4,
    progress: bool = True,
    *,
    codec,
) -> list[Path]:
    """Write ``out_dir/<subject>.npy`` for every subject; returns the paths written.

    ``codec`` (``autoencoders.codecs``) says what is stored. Copy ``k >= 1`` of a
    subject is augmented with a generator seeded by (seed, subject, k), so it does not depend on which other
    subjects are encoded or in which order.
    """
    model.eval()
    subjects = list(images)
    data = VolumeDataset([images[s] for s in subjects], subjects, cache=False, augment=augment)
    out_dir = Path(out_dir)
    written = []
    for index, subject in enumerate(tqdm(subjects, desc="encoding subjects", disable=not progress)):
        copies = []
        for copy in range(1 + int(augmented_copies)):
            rng = None if copy == 0 else np.random.default_rng(seed_for(seed, "latents", subject, copy))
            copies.append(data.get(index, rng))
        parts = []
        for start in range(0, len(copies), batch_size):
            batch = torch.stack(copies[start : start + batch_size])
            try:
                parts.append(codec.latents(model, batch))
            except ValueError as exc:
                raise SubjectError(subject, images[subject], str(exc)) from exc
        array = np.concatenate(parts)
        path = out_dir / f"{subject}.npy"
        with atomic_output(path) as tmp:
            np.save(tmp, array)
        written.append(path)
    return written


def read_latents(
    paths: list[Path], copies: str, ndim: int, kind: type, described: str
) -> tuple[list[np.ndarray], list[str]]:
    """Every copy (``copies="all"``) or copy 0 (``"first"``) of each latent file, and each row's subject
    (the file's name). Files must hold ``ndim``-dimensional arrays of ``kind`` (np.integer, np.floating)
    and share one latent shape; a file that does not is named."""
    arrays, subjects, shape = [], [], None
    for path in map(Path, paths):
        try:
            array = np.load(path)
        except Exception as exc:
            raise SubjectError(path.stem, path, f"latent file cannot be read ({exc})") from exc
        if array.ndim != ndim or not np.issubdtype(array.dtype, kind):
            raise SubjectError(path.stem, path, f"expected {described}, got {array.dtype} {array.shape}")
        if shape is not None and array.shape[1:] != shape:
            raise SubjectError(path.stem, path, f"latent shape {array.shape[1:]} differs from {shape}")
        shape = array.shape[1:]
        chosen = array if copies == "all" else array[:1]
        arrays.append(chosen)
        subjects += [path.stem] * len(chosen)
    if not arrays:
        raise ValueError("no latent files were given")
    return arrays, subjects


def load_token_sequences(paths: list[Path], copies: str = "all", grid_dims: int = 3) -> np.ndarray:
    """Token sequences (N, L) for the prior: every copy of every file (``copies="all"``) or copy 0 only
    (``"first"``), each flattened in C order. All files must share one latent shape: a token grid
    (``grid_dims`` 3: copies, h, w, d) or already a sequence (1: copies, L)."""
    described = (
        "an integer array (copies, h, w, d)"
        if grid_dims == 3
        else f"an integer array of {1 + grid_dims} axes"
    )
    arrays, _ = read_latents(paths, copies, 1 + grid_dims, np.integer, described)
    return np.concatenate([a.reshape(len(a), -1) for a in arrays]).astype(np.int64)
