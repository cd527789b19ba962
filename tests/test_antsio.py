import numpy as np
import pytest

from morphgen.antsio import from_ants, to_ants


def test_ants_arrays_keep_world_coordinates_lps_vs_ras():
    ants = pytest.importorskip("ants")
    # a LAS-ordered, anisotropic grid, so sign and axis mistakes both show
    affine = np.array([[-2.0, 0, 0, 90.0], [0, 3.0, 0, -120.0], [0, 0, 2.5, -60.0], [0, 0, 0, 1]])
    data = np.random.default_rng(1).random((7, 5, 6)).astype(np.float32)
    img = to_ants(data, affine)
    np.testing.assert_array_equal(img.numpy(), data)
    back, back_affine = from_ants(img)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-6)
    for ijk in [(0, 0, 0), (6, 4, 5), (3, 1, 2)]:
        ras = affine[:3, :3] @ np.array(ijk) + affine[:3, 3]
        lps = np.array(ants.transform_index_to_physical_point(img, ijk))
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-5)
