"""Reconstructions against their originals: tissue Dice on label maps of known geometry, and MS-SSIM and
log bMMD² of images with a known change."""

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


def test_paired_bmmd2_is_the_squared_change_the_autoencoder_makes():
    from morphgen.metrics.fidelity import paired_bmmd2

    rng = np.random.default_rng(0)
    originals = rng.uniform(0, 1, (6, 8, 8, 8))
    assert paired_bmmd2(originals, originals.copy(), 3, 0, n_batches=20)[0] == 0.0
    # every voxel of every subject brighter by c: every batch's mean image moves by c, so bMMD² is c²
    mean, sd = paired_bmmd2(originals, originals + 0.1, 3, 0, n_batches=20)
    assert mean == pytest.approx(0.01, rel=1e-9) and sd == pytest.approx(0.0, abs=1e-12)
    # subjects swapped: the set is the same, but each reconstruction is another subject's
    swapped = paired_bmmd2(originals, originals[::-1], 2, 0, n_batches=50)[0]
    assert swapped > 0.01
    with pytest.raises(ValueError, match="do not pair"):
        paired_bmmd2(originals, originals[:-1], 3, 0)


def test_reconstruction_fidelity_table(tmp_path):
    import pandas as pd

    from morphgen.nifti import save_volume
    from morphgen.report.tables import reconstruction_fidelity

    rng = np.random.default_rng(1)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    originals, reconstructions = {}, {}
    for k in range(6):
        subject = f"sub-{k:02d}"
        image = rng.uniform(0.2, 0.8, (8, 8, 8)).astype(np.float32)
        originals[subject] = save_volume(tmp_path / "o" / f"{subject}.nii.gz", image, affine)
        reconstructions[subject] = save_volume(tmp_path / "r" / f"{subject}.nii.gz", image + 0.05, affine)
    per_subject = pd.DataFrame(
        {
            "subject": [*originals, "mean"],
            "mae": [0.05] * 6 + [0.05],
            "psnr": [26.0] * 6 + [26.0],
            "msssim": [0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 0.95],
        }
    )
    row = reconstruction_fidelity(originals, reconstructions, per_subject, 4, 0, n_batches=10).iloc[0]
    assert row["n_subjects"] == 6 and row["batch_size"] == 4
    assert row["log_bmmd2"] == pytest.approx(np.log(0.05**2), abs=1e-4)
    assert row["msssim_mean"] == pytest.approx(0.95) and row["msssim_min"] == pytest.approx(0.9)
    # two halves of 3 originals: batches of 3, and the subjects differ by far more than 0.05
    assert row["real_log_bmmd2"] > row["log_bmmd2"]
    with pytest.raises(SubjectError, match="sub-09"):
        reconstruction_fidelity(
            originals, {**reconstructions, "sub-09": reconstructions["sub-00"]}, per_subject, 4, 0
        )
