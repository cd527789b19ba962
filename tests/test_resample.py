"""Resampling between grids: the cropped resampler of atlas regions equals resampling the whole volume."""

import numpy as np
import pytest

from morphgen.resample import resample_array, resample_local


def _affine(voxel_mm: float, shape, flip: bool = False, angle: float = 0.0) -> np.ndarray:
    """A grid of ``shape`` whose centre is the world point (0, 0, 0)."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-voxel_mm if flip else voxel_mm, voxel_mm, voxel_mm])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


@pytest.mark.parametrize(
    "dst_mm, flip, angle, order",
    [
        (4.0, False, 0.0, 1),
        (4.0, True, 0.3, 1),
        (2.5, False, 0.1, 1),
        (1.0, False, 0.0, 1),
        (6.0, True, 0.0, 0),
    ],
)
def test_a_cropped_region_resamples_exactly_as_the_whole_volume(dst_mm, flip, angle, order):
    rng = np.random.default_rng(3)
    data = np.zeros((80, 96, 70), dtype=np.float32)
    data[30:41, 50:58, 20:33] = rng.uniform(0.2, 1.0, (11, 8, 13))  # one small region, off centre
    data[31, 51, 21] = 0.0
    shape = tuple(int(n / dst_mm) for n in (80, 96, 70))
    src, dst = _affine(1.0, data.shape), _affine(dst_mm, shape, flip, angle)
    whole = resample_array(data, src, dst, shape, order=order)
    local = resample_local(data, src, dst, shape, order=order)
    assert whole.any()  # the region lands on the destination grid
    np.testing.assert_array_equal(local, whole)


def test_an_empty_or_off_grid_region_resamples_to_zeros():
    data = np.zeros((40, 40, 40), dtype=np.float32)
    src = _affine(1.0, data.shape)
    assert not resample_local(data, src, _affine(4.0, (10, 10, 10)), (10, 10, 10)).any()
    data[2:5, 2:5, 2:5] = 1.0
    far = _affine(4.0, (10, 10, 10))
    far[:3, 3] += 500.0  # the destination grid lies elsewhere
    assert not resample_local(data, src, far, (10, 10, 10)).any()


def test_spline_orders_are_refused():
    with pytest.raises(ValueError, match="order"):
        resample_local(np.ones((4, 4, 4), np.float32), np.eye(4), np.eye(4), (4, 4, 4), order=3)
