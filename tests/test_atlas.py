"""Regional volumes from the packaged atlas: its regions, the volume formula, and the demo cohort's truth."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from morphgen.cohort import demo
from morphgen.errors import ConfigError
from morphgen.metrics.morphometry import jacobian_path, modulated_path, normalise_files
from morphgen.segmentation import atlas
from morphgen.space import Grid
from morphgen.templates import mni_t1, resample_to_grid

GRID = Grid(4.0, (48, 64, 48))  # the demo's working grid


@pytest.fixture(scope="module")
def dk() -> atlas.Atlas:
    return atlas.default_atlas()


def test_packaged_atlas_covers_ventricles_hippocampi_and_deep_grey_nuclei(dk):
    for name in (
        "lateral_ventricle",
        "hippocampus",
        "thalamus",
        "caudate",
        "putamen",
        "pallidum",
        "amygdala",
    ):
        assert name in dk.regions and f"left_{name}" in dk.regions and f"right_{name}" in dk.regions
        assert set(dk.regions[name]) == set(dk.regions[f"left_{name}"] + dk.regions[f"right_{name}"])
    assert dk.regions["left_hippocampus"] == (17,) and dk.regions["right_lateral_ventricle"] == (43,)
    cortex = [r for r in dk.regions if r.startswith("cortex_")]
    assert len(cortex) == 34 and all(len(dk.regions[r]) == 2 for r in cortex)  # both hemispheres
    assert dk.tissue("hippocampus") == "gm" and dk.tissue("cortex_precentral") == "gm"
    assert dk.tissue("lateral_ventricle") == "csf" and dk.tissue("brainstem") == "wm"
    # tissue classes themselves are not regions: the tissue volumes cover them
    assert "cerebral_wm" not in dk.regions and "cortex" not in dk.regions


def test_fractions_keep_each_region_volume_on_a_coarse_grid(dk):
    one_mm = {r: np.isin(dk.labels, labs).sum() / 1000.0 for r, labs in dk.regions.items()}
    fractions = atlas.region_fractions(dk, GRID.affine, GRID.shape)
    on_grid = atlas.regional_volumes(np.ones(GRID.shape), GRID.affine, fractions)
    for region in ("lateral_ventricle", "hippocampus", "thalamus", "putamen", "cortex_precentral"):
        assert on_grid[region] == pytest.approx(one_mm[region], rel=0.03)


def test_volume_scales_with_the_jacobian_and_the_tissue_fraction():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm3 voxels
    frac = np.zeros((10, 10, 10), dtype=np.float32)
    frac[2:6, 2:6, 2:6] = 1.0  # 64 voxels = 0.512 ml
    frac[6, 2:6, 2:6] = 0.5  # a half-covered face: 8 voxels' worth = 0.064 ml
    fractions = {"a": frac, "b": frac}
    jac = np.full(frac.shape, 1.5)
    gm = np.full(frac.shape, 0.25)
    vols = atlas.regional_volumes(jac, affine, fractions, {"gm": gm}, {"a": "gm", "b": None})
    assert vols["b"] == pytest.approx(1.5 * 0.576)  # Jacobian only
    assert vols["a"] == pytest.approx(1.5 * 0.25 * 0.576)  # modulated grey matter
    with pytest.raises(ValueError, match="region a"):
        atlas.regional_volumes(np.ones((4, 4, 4)), affine, {"a": frac})


def test_configured_atlas_needs_its_label_table(tmp_path):
    with pytest.raises(ConfigError, match="label table"):
        atlas.load_atlas(tmp_path / "atlas.nii.gz", None)
    labels = np.zeros((8, 8, 8), dtype=np.int16)
    labels[2:4, 2:4, 2:4] = 17
    labels[4:6, 2:4, 2:4] = 99  # not a FreeSurfer structure: ignored
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "atlas.nii.gz")
    pd.DataFrame({"index": [0, 17, 99], "name": ["Unknown", "Left-Hippocampus", "Other"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    mine = atlas.load_atlas(tmp_path / "atlas.nii.gz", tmp_path / "labels.csv")
    assert mine.regions == {"left_hippocampus": (17,), "hippocampus": (17,), "deep_gm": (17,)}


def test_demo_ventricles_measured_through_the_atlas_follow_the_truth(tmp_path, dk):
    """The simulated ventricles grow with age; the atlas volumes must rank them as the truth does."""
    reference = demo.reference_anatomy()
    ages = (45.0, 55.0, 65.0, 75.0, 85.0)
    images, maps, truth = {}, {}, []
    for n, age in enumerate(ages):
        sid = f"sub-{n:02d}"
        subject = demo.SimulatedSubject(sid, age=age, sex="F", group="CN", head_scale=1.0)
        anatomy = demo.simulate_anatomy(reference, subject)
        tissue = anatomy.maps
        truth.append(tissue.volumes_ml(reference.grid.voxel_volume_ml)["ventricles"])
        brain = (tissue.gm + tissue.wm + tissue.csf) > 0.5  # skull-stripped, as preprocessing leaves it
        t1 = resample_to_grid(demo.t1_image(anatomy) * brain, reference.grid.affine, GRID)
        images[sid] = tmp_path / f"{sid}_T1w.nii.gz"
        nib.save(GRID.image(t1.astype(np.float32)), images[sid])
        maps[sid] = {}
        for name, data in (("gm", tissue.gm), ("wm", tissue.wm), ("csf", tissue.csf)):
            maps[sid][name] = tmp_path / f"{sid}_{name}.nii.gz"
            on_grid = np.clip(resample_to_grid(data, reference.grid.affine, GRID), 0, 1)
            nib.save(GRID.image(on_grid.astype(np.float32)), maps[sid][name])
    fractions = atlas.region_fractions(dk, GRID.affine, GRID.shape)
    table = normalise_files(
        images,
        maps,
        mni_t1(GRID),
        tmp_path / "normalised",
        fractions=fractions,
        tissue_of={r: dk.tissue(r) for r in fractions},
        progress=False,
    )
    measured = table["lateral_ventricle_ml"].to_numpy()
    assert np.all(np.isfinite(measured))
    assert np.corrcoef(measured, truth)[0, 1] >= 0.9
    assert np.all(np.diff(measured) > 0)  # each older subject measured larger, as simulated
    for sid in images:
        for path in (
            jacobian_path(tmp_path / "normalised", sid),
            modulated_path(tmp_path / "normalised", sid),
        ):
            img = nib.load(path)
            np.testing.assert_allclose(img.affine, GRID.affine)
            assert img.shape == GRID.shape
