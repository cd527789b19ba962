"""The working grid: a voxel size and a shape, centred on the MNI152 brain, in RAS+ orientation."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

# Centre of the bounding box of GM+WM > 0.1 in nilearn's MNI152 2009 maps (mm), measured with nilearn 0.13.
MNI_BRAIN_CENTER_MM = (0.0, -16.5, 6.0)


@dataclass(frozen=True)
class Grid:
    voxel_size: float
    shape: tuple[int, int, int]
    center_mm: tuple[float, float, float] = MNI_BRAIN_CENTER_MM

    @classmethod
    def from_config(cls, space: dict) -> Grid:
        return cls(
            voxel_size=float(space["voxel_size"]),
            shape=tuple(int(s) for s in space["shape"]),
            center_mm=tuple(float(c) for c in space.get("center_mm", MNI_BRAIN_CENTER_MM)),
        )

    @property
    def affine(self) -> np.ndarray:
        """Voxel to MNI mm; the centre of the volume lies on ``center_mm``."""
        a = np.diag([self.voxel_size] * 3 + [1.0])
        half = (np.asarray(self.shape, dtype=float) - 1.0) / 2.0
        a[:3, 3] = np.asarray(self.center_mm) - self.voxel_size * half
        return a

    @property
    def voxel_volume_ml(self) -> float:
        return self.voxel_size**3 / 1000.0

    def image(self, data: np.ndarray) -> nib.Nifti1Image:
        if tuple(data.shape[:3]) != self.shape:
            raise ValueError(f"data of shape {data.shape} does not match grid shape {self.shape}")
        return nib.Nifti1Image(np.asarray(data), self.affine)
