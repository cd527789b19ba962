"""Preprocessed volumes on the working grid as a torch Dataset, and the light augmentation used with them."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from morphgen.errors import ConfigError, SubjectError
from morphgen.nifti import load_volume

# Cohorts below this size (float32 bytes) are held in memory after the first read.
CACHE_LIMIT_BYTES = 2 * 1024**3

# The paper's training augmentation (Tudosiu et al. 2022, appendix 6.4), in voxels and radians.
AUGMENT_DEFAULTS = {
    "enabled": False,  # for autoencoder training; encode() applies it to augmented copies regardless
    "rotate": 0.04,  # radians, uniform in [-r, r] about each axis
    "translate": 2.0,  # voxels, uniform in [-t, t] along each axis
    "scale": 0.05,  # isotropic-per-axis factor uniform in [1 - s, 1 + s]
    "gamma": [0.99, 1.01],  # contrast: x ** gamma
    "shift": [0.0, 0.05],  # intensity offset added inside the head
    "noise_std": 0.02,  # Gaussian noise
}


def subject_of(path: Path) -> str:
    """A subject label for messages: the file name without its NIfTI suffixes."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def seed_for(*parts: int | str) -> list[int]:
    """A numpy seed sequence entropy from integers and strings (strings via CRC32, stable across runs)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def torch_generator(*parts: int | str) -> torch.Generator:
    """A CPU torch generator seeded from integers and strings (through numpy's SeedSequence)."""
    seed = int(np.random.SeedSequence(seed_for(*parts)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class VolumeAugmentation:
    """Random small affine (rotation, scaling, translation about the centre), gamma, shift, noise, clip.

    Every draw comes from the numpy ``Generator`` passed in, so a seeded generator gives the same volume.
    """

    def __init__(self, cfg: dict | None = None):
        merged = {**AUGMENT_DEFAULTS, **(cfg or {})}
        unknown = set(merged) - set(AUGMENT_DEFAULTS)
        if unknown:
            raise ConfigError(f"model.autoencoder.augment: unknown keys {sorted(unknown)}")
        self.enabled = bool(merged["enabled"])
        self.rotate = float(merged["rotate"])
        self.translate = float(merged["translate"])
        self.scale = float(merged["scale"])
        self.gamma = tuple(float(g) for g in merged["gamma"])
        self.shift = tuple(float(s) for s in merged["shift"])
        self.noise_std = float(merged["noise_std"])
        if len(self.gamma) != 2 or len(self.shift) != 2 or min(self.gamma) <= 0:
            raise ConfigError("model.autoencoder.augment: gamma and shift are [low, high] pairs, gamma > 0")

    def _affine_matrix(self, rng: np.random.Generator) -> np.ndarray:
        angles = rng.uniform(-self.rotate, self.rotate, size=3)
        rot = np.eye(3)
        for axis, angle in enumerate(angles):
            c, s = np.cos(angle), np.sin(angle)
            i, j = [a for a in range(3) if a != axis]
            r = np.eye(3)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            rot = rot @ r
        return rot @ np.diag(rng.uniform(1.0 - self.scale, 1.0 + self.scale, size=3))

    def __call__(self, volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a 3D float volume in [0, 1]; returns a new float32 array of the same shape."""
        matrix = self._affine_matrix(rng)
        shift_vox = rng.uniform(-self.translate, self.translate, size=3)
        centre = (np.asarray(volume.shape, dtype=float) - 1.0) / 2.0
        # output voxel o samples input at matrix @ (o - centre) + centre + shift
        offset = centre + shift_vox - matrix @ centre
        out = ndi.affine_transform(volume, matrix, offset=offset, order=1, mode="constant", cval=0.0)
        out = np.clip(out, 0.0, 1.0) ** rng.uniform(*self.gamma)
        head = out > 0
        out = out + head * rng.uniform(*self.shift)
        out = out + rng.normal(0.0, self.noise_std, size=out.shape) * head
        return np.clip(out, 0.0, 1.0).astype(np.float32)


class VolumeDataset(torch.utils.data.Dataset):
    """NIfTI volumes on one grid as float32 tensors of shape (1, X, Y, Z).

    Args:
        paths: the volumes; every one must have the same shape.
        subjects: labels for error messages (default: file names).
        cache: keep volumes in memory after the first read (default: if the cohort fits CACHE_LIMIT_BYTES).
        augment: if given, ``dataset.get(i, rng)`` returns an augmented volume drawn from ``rng``.
    """

    def __init__(
        self,
        paths: list[Path],
        subjects: list[str] | None = None,
        cache: bool | None = None,
        augment: VolumeAugmentation | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        self.subjects = list(subjects) if subjects is not None else [subject_of(p) for p in self.paths]
        if len(self.subjects) != len(self.paths):
            raise ValueError("subjects and paths differ in length")
        if not self.paths:
            raise ConfigError("no volumes were given to the dataset")
        first = load_volume(self.paths[0], self.subjects[0])
        self.shape: tuple[int, int, int] = tuple(int(s) for s in first.shape)
        self.affine = first.affine.copy()
        if cache is None:
            cache = len(self.paths) * int(np.prod(self.shape)) * 4 <= CACHE_LIMIT_BYTES
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def volume(self, index: int) -> np.ndarray:
        """The unaugmented float32 volume (X, Y, Z); checked against the dataset's shape."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        path, subject = self.paths[index], self.subjects[index]
        data = np.asarray(load_volume(path, subject).dataobj, dtype=np.float32)
        if data.shape != self.shape:
            raise SubjectError(
                subject, path, f"volume shape {data.shape} differs from the working grid {self.shape}"
            )
        if self._cache is not None:
            self._cache[index] = data
        return data

    def get(self, index: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Volume ``index`` as a (1, X, Y, Z) tensor, augmented with ``rng`` when augmentation is set."""
        data = self.volume(index)
        if rng is not None and self.augment is not None:
            data = self.augment(data, rng)
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get(index)

    def batch(
        self, indices: list[int] | np.ndarray, rngs: list[np.random.Generator] | None = None
    ) -> torch.Tensor:
        """Stack volumes into a (B, 1, X, Y, Z) batch; ``rngs`` (one per index) switch augmentation on."""
        if rngs is None:
            return torch.stack([self.get(int(i)) for i in indices])
        return torch.stack([self.get(int(i), rng) for i, rng in zip(indices, rngs, strict=True)])
