"""Deformations that give simulated subjects their own anatomy: random diffeomorphisms, local shrinkage.

Every map here is a *pull-back*: a subject's image at point ``x`` is the template's at ``phi(x)``. A field is
an array of shape ``(3, *shape)`` in mm on an axis-aligned grid (``origin`` mm of voxel 0, ``spacing`` mm).

* :func:`random_diffeomorphism`: the sum of Gaussian-smoothed noise at several scales as a stationary velocity
  field, integrated by scaling and squaring (so the map is invertible), then composed with the inverse of its
  own least-squares affine part: what differs between brains after affine registration.
* :class:`Shrinkage`: an analytic radial contraction inside an ellipsoid whose volume Jacobian is
  ``1 - L exp(-r^2/2)(1 - r^2/3)`` (r the ellipsoidal radius): ``1 - L`` at the centre, 1 at ``r = sqrt(3)``,
  a little above 1 beyond, and no volume change over all space. Simulates local atrophy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from morphgen.fields import jacobian_determinant

# scales (mm, sd of the Gaussian smoothing) and relative amplitudes of the velocity components
WARP_SCALES_MM = (8.0, 16.0, 32.0)
WARP_WEIGHTS = (0.5, 1.0, 1.0)
SQUARING_STEPS = 6


def grid_points(origin: np.ndarray, spacing: float, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (mm) of every voxel, shape ``(3, *shape)``."""
    axes = [origin[k] + spacing * np.arange(shape[k], dtype=np.float64) for k in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _sample(field: np.ndarray, coords_vox: np.ndarray, order: int = 1) -> np.ndarray:
    """``field`` (3, ...) at voxel coordinates ``coords_vox`` (3, ...), edge values beyond the grid."""
    return np.stack([ndi.map_coordinates(c, coords_vox, order=order, mode="nearest") for c in field])


def integrate_velocity(velocity_vox: np.ndarray, steps: int = SQUARING_STEPS) -> np.ndarray:
    """Displacement (voxels) of the map exp(v) by scaling and squaring: u <- u + u(x + u), ``steps`` times."""
    disp = velocity_vox / 2.0**steps
    base = np.indices(velocity_vox.shape[1:], dtype=np.float64)
    for _ in range(steps):
        disp = disp + _sample(disp, base + disp)
    return disp


def affine_part(points: np.ndarray, mapped: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """4x4 least-squares affine ``A`` with ``A @ point ~ mapped``, weighted by ``weights``."""
    w = weights.ravel()
    keep = w > 0
    x = np.c_[points.reshape(3, -1).T[keep], np.ones(int(keep.sum()))]
    y = mapped.reshape(3, -1).T[keep]
    sw = np.sqrt(w[keep])[:, None]
    coef, *_ = np.linalg.lstsq(x * sw, y * sw, rcond=None)
    out = np.eye(4)
    out[:3, :] = coef.T
    return out


def random_diffeomorphism(
    shape: tuple[int, int, int],
    origin: np.ndarray,
    spacing: float,
    weights: np.ndarray,
    rms_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A smooth random pull-back map with no affine part, as a displacement field (mm) on the given grid.

    ``weights`` (on the grid, the brain) says where the affine part is fitted and ``rms_mm`` is measured.
    The velocity is rescaled once so that the RMS displacement there equals ``rms_mm``.
    """
    if rms_mm <= 0:
        return np.zeros((3, *shape), dtype=np.float32)
    noise = [rng.standard_normal((3, *shape)) for _ in WARP_SCALES_MM]
    velocity = np.zeros((3, *shape))
    for n, sigma_mm, w in zip(noise, WARP_SCALES_MM, WARP_WEIGHTS, strict=True):
        smooth = np.stack([ndi.gaussian_filter(c, sigma_mm / spacing, mode="nearest") for c in n])
        velocity += w * smooth / np.sqrt(np.mean(smooth**2))
    points = grid_points(origin, spacing, shape)
    mask = weights > 0
    gain = rms_mm / spacing / np.sqrt(np.mean(np.sum(velocity**2, axis=0)[mask]))
    for _ in range(2):  # the second pass corrects the gain for what integration and affine removal changed
        disp = integrate_velocity(gain * velocity)
        mapped = points + spacing * disp
        inverse = np.linalg.inv(affine_part(points, mapped, weights))
        # phi o A^-1: still a diffeomorphism, and its own affine part is about the identity
        pre = np.tensordot(inverse[:3, :3], points, axes=1) + inverse[:3, 3, None, None, None]
        pre_vox = (pre - origin[:, None, None, None]) / spacing
        result = pre + spacing * _sample(disp, pre_vox) - points
        rms = float(np.sqrt(np.mean(np.sum(result**2, axis=0)[mask])))
        gain *= rms_mm / rms
    return result.astype(np.float32)


def resample_field(
    field: np.ndarray, origin: np.ndarray, spacing: float, points_mm: list[np.ndarray]
) -> np.ndarray:
    """A displacement field at other points (``points_mm``: one broadcastable array per axis), trilinear.

    Trilinear rather than cubic: seven times faster on the demo's 3.3 million voxels, and a field already
    smooth at twice its spacing loses nothing visible; its Jacobian stays positive (tests check it).
    """
    shape = np.broadcast_shapes(*(p.shape for p in points_mm))
    coords = np.stack([np.broadcast_to((points_mm[k] - origin[k]) / spacing, shape) for k in range(3)])
    return np.stack(
        [ndi.map_coordinates(c, coords, order=1, mode="nearest").astype(np.float32) for c in field]
    )


@dataclass(frozen=True)
class Shrinkage:
    """Radial contraction of ``loss`` at the centre of the ellipsoid ``center + axes @ q``, |q| <= ~1.7.

    The tissue map (template -> subject) is ``y = c + A q (1 - L exp(-|q|^2/2))^(1/3)``, ``q = A^-1 (x - c)``;
    its Jacobian is :meth:`jacobian`. :meth:`pull_back` is its inverse, what resampling needs.
    """

    center: np.ndarray  # mm
    axes: np.ndarray  # 3x3, columns are the semi-axes (mm)
    loss: float  # 0 <= loss < 1

    def _radius_out(self, r: np.ndarray) -> np.ndarray:
        return r * np.cbrt(1.0 - self.loss * np.exp(-0.5 * r * r))

    def jacobian(self, r: np.ndarray) -> np.ndarray:
        """Volume change of the tissue map at ellipsoidal radius ``r``."""
        return 1.0 - self.loss * np.exp(-0.5 * r * r) * (1.0 - r * r / 3.0)

    def push_forward(self, points_mm: np.ndarray) -> np.ndarray:
        """Where template points (3, ...) go in the subject."""
        q = self._to_q(points_mm)
        r = np.sqrt(np.sum(q * q, axis=0))
        scale = np.cbrt(1.0 - self.loss * np.exp(-0.5 * r * r))
        return self._from_q(q * scale)

    def pull_back(self, points_mm: np.ndarray) -> np.ndarray:
        """The template point (3, ...) that lands on each subject point: :meth:`push_forward` inverted."""
        if self.loss <= 0:
            return points_mm
        q = self._to_q(points_mm)
        r_out = np.sqrt(np.sum(q * q, axis=0))
        table = np.linspace(0.0, 8.0, 8001)
        r_in = np.interp(r_out, self._radius_out(table), table, right=np.nan)
        r_in = np.where(np.isnan(r_in), r_out, r_in)  # beyond r = 8 the map is the identity
        # r_in / r_out -> (1 - L)^(-1/3) at the centre
        ratio = np.where(r_out > 1e-9, r_in / np.maximum(r_out, 1e-9), np.cbrt(1.0 / (1.0 - self.loss)))
        return self._from_q(q * ratio)

    def _to_q(self, points_mm: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.axes)
        return np.tensordot(inv, points_mm - self.center.reshape(3, *([1] * (points_mm.ndim - 1))), axes=1)

    def _from_q(self, q: np.ndarray) -> np.ndarray:
        return np.tensordot(self.axes, q, axes=1) + self.center.reshape(3, *([1] * (q.ndim - 1)))


__all__ = [
    "Shrinkage",
    "affine_part",
    "grid_points",
    "integrate_velocity",
    "jacobian_determinant",
    "random_diffeomorphism",
    "resample_field",
]
