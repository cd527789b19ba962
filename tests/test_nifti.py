import os

import nibabel as nib
import numpy as np
import pytest

from morphgen.errors import SubjectError
from morphgen.nifti import atomic_output, load_volume, save_volume
from morphgen.space import Grid


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "x.txt") as tmp:
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


def test_save_volume_round_trips_affine_and_dtype(tmp_path):
    grid = Grid(4.0, (12, 16, 12))
    data = np.random.default_rng(0).random(grid.shape).astype(np.float32)
    path = save_volume(tmp_path / "a.nii.gz", data, grid.affine, description="test")
    img = load_volume(path, "sub-x")
    np.testing.assert_allclose(img.affine, grid.affine)
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), data)
    assert nib.load(path).header.get_sform(coded=True)[1] == 1


def test_grid_centre_is_on_the_mni_brain_centre():
    grid = Grid(2.0, (80, 112, 80), center_mm=(0.0, -16.5, 6.0))
    centre_voxel = (np.array(grid.shape) - 1) / 2
    np.testing.assert_allclose(grid.affine[:3, :3] @ centre_voxel + grid.affine[:3, 3], (0.0, -16.5, 6.0))


def test_load_volume_names_subject_and_file(tmp_path):
    with pytest.raises(SubjectError, match=r"sub-07.*missing\.nii\.gz.*does not exist"):
        load_volume(tmp_path / "missing.nii.gz", "sub-07")
