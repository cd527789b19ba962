"""Tissue Dice of a reconstruction against its real image, on label maps of known geometry."""

import nibabel as nib
import numpy as np
import pytest

from morphgen.errors import SubjectError
from morphgen.metrics.overlap import tissue_dice
from morphgen.report.tables import reconstruction_dice
from morphgen.segmentation.base import TISSUE_LABELS
from morphgen.segmentation.volumes import label_maps, label_path


def _cubes(shift: int = 0) -> np.ndarray:
    """GM in a 10-voxel cube, WM in a 4-voxel cube inside it, CSF a slab; the GM cube moved by ``shift``."""
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[2 + shift : 12 + shift, 2:12, 2:12] = TISSUE_LABELS["gm"]
    labels[5:9, 5:9, 5:9] = TISSUE_LABELS["wm"]
    labels[16:20, :, :] = TISSUE_LABELS["csf"]
    return labels


def test_dice_of_a_shifted_cube_is_its_known_overlap():
    real, shifted = _cubes(), _cubes(shift=1)
    dice = tissue_dice(real, shifted)
    gm = 1000 - 64  # voxels of GM in each map: the cube less the WM inside it
    overlap = 900 - 64  # one 10 x 10 face slides out and another in; the WM cube stays where it was
    assert dice["gm"] == pytest.approx(2 * overlap / (2 * gm), rel=1e-6)
    assert dice["wm"] == pytest.approx(1.0) and dice["csf"] == pytest.approx(1.0)
    assert tissue_dice(real, real) == {"csf": 1.0, "gm": 1.0, "wm": 1.0}
    empty = np.zeros_like(real)
    assert tissue_dice(real, empty)["gm"] == 0.0  # nothing labelled where the tissue is


def test_the_table_pairs_each_reconstruction_with_its_own_subject(tmp_path):
    real_dir, recon_dir = tmp_path / "real", tmp_path / "recon"
    real_dir.mkdir(), recon_dir.mkdir()
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    for subject, shift in (("sub-01", 0), ("sub-02", 2), ("sub-03", 0)):
        nib.save(nib.Nifti1Image(_cubes(shift), affine), label_path(real_dir, subject))
    for subject in ("sub-01", "sub-02"):  # sub-02's reconstruction has its GM where sub-01's is
        nib.save(nib.Nifti1Image(_cubes(0), affine), label_path(recon_dir, subject))
    table = reconstruction_dice(label_maps(real_dir), label_maps(recon_dir)).set_index("subject")
    assert list(table.index) == ["sub-01", "sub-02", "mean", "min"]  # sub-03 was not reconstructed
    assert table.loc["sub-01", "dice_gm"] == 1.0 and table.loc["sub-02", "dice_gm"] < 0.85
    assert table.loc["mean", "dice_gm"] == pytest.approx(table.loc[["sub-01", "sub-02"], "dice_gm"].mean())
    assert table.loc["min", "dice_gm"] == table.loc["sub-02", "dice_gm"]
    nib.save(nib.Nifti1Image(_cubes(0), affine), label_path(recon_dir, "sub-04"))
    with pytest.raises(SubjectError, match="sub-04"):
        reconstruction_dice(label_maps(real_dir), label_maps(recon_dir))
    nib.save(nib.Nifti1Image(_cubes(0)[:20], affine), label_path(real_dir, "sub-04"))
    with pytest.raises(SubjectError, match="sub-04.*not on the grid"):
        reconstruction_dice(label_maps(real_dir), label_maps(recon_dir))
