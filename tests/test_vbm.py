"""VBM: Welch t-maps, FWHM smoothing, Jacobian modulation and a phantom study with a planted GM loss."""

import math

from morphgen.antsio import set_itk_threads

set_itk_threads(1)  # before antspyx is imported: one ITK thread (bit-reproducible SyN, 2-core machine)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from scipy import stats  # noqa: E402

from morphgen.errors import SubjectError  # noqa: E402
from morphgen.metrics import vbm  # noqa: E402
from morphgen.nifti import save_volume  # noqa: E402
from morphgen.segmentation.base import Segmenter  # noqa: E402
from morphgen.space import Grid  # noqa: E402

GRID = Grid(4.0, (32, 40, 32), (0.0, 0.0, 0.0))
BLOB_IJK = (12, 26, 18)  # centre of the GM blob that group b lacks (voxels); it lies wholly inside the WM
BLOB_RADIUS = 2.5  # voxels, 10 mm


# ------------------------------------------------------------------------------------------------ phantom


def _phantom_fractions(blob: bool, scale_x: float = 1.0, supersample: int = 2) -> dict[str, np.ndarray]:
    """CSF, GM and WM fractions of an ellipsoidal brain (GM rim, WM core, ventricles, two GM nuclei, and
    optionally a GM blob inside the WM at BLOB_IJK), rendered at ``supersample`` x and averaged down.
    ``scale_x`` stretches the brain along the first axis about the grid centre."""
    shape = GRID.shape
    s = supersample
    fine = np.indices(tuple(n * s for n in shape)).astype(np.float64) / s + (0.5 / s - 0.5)
    centre = (np.asarray(shape) - 1) / 2
    fine[0] = (fine[0] - centre[0]) / scale_x + centre[0]

    def ellipsoid(c, r):
        return sum(((fine[a] - c[a]) / r[a]) ** 2 for a in range(3)) < 1

    brain = ellipsoid(centre, (12.0, 15.5, 12.0))
    core = ellipsoid(centre, (8.9, 11.5, 8.9))
    vent = ellipsoid(centre + (0, -1, 1), (4.0, 6.0, 3.0))
    inner_gm = ellipsoid(centre + (-5, 3, -2), (2.0,) * 3) | ellipsoid(centre + (5, 3, -2), (2.0,) * 3)
    if blob:
        inner_gm |= ellipsoid(BLOB_IJK, (BLOB_RADIUS,) * 3)
    csf = brain & vent
    gm = (brain & ~core & ~csf) | (core & inner_gm & ~vent)
    wm = brain & ~gm & ~csf

    def down(m):
        return m.reshape(shape[0], s, shape[1], s, shape[2], s).mean(axis=(1, 3, 5)).astype(np.float32)

    return {"csf": down(csf), "gm": down(gm), "wm": down(wm)}


def _t1(fr: dict[str, np.ndarray]) -> np.ndarray:
    return (0.25 * fr["csf"] + 0.55 * fr["gm"] + 0.9 * fr["wm"]).astype(np.float32)


def _deform(maps: dict[str, np.ndarray], rng: np.random.Generator, amplitude: float = 0.8) -> dict:
    """The maps pulled through a smooth random displacement (at most ``amplitude`` voxels per axis)."""
    disp = []
    for _ in range(3):
        d = ndi.gaussian_filter(rng.standard_normal(GRID.shape), 4.0)
        disp.append(d / np.abs(d).max() * amplitude * rng.uniform(0.5, 1.0))
    coords = np.indices(GRID.shape).astype(np.float64) + np.stack(disp)
    return {k: ndi.map_coordinates(v, coords, order=1).astype(np.float32) for k, v in maps.items()}


def _template() -> nib.Nifti1Image:
    return nib.Nifti1Image(_t1(_phantom_fractions(blob=True)), GRID.affine)


# ------------------------------------------------------------------------------------------------- tests


def test_welch_t_map_equals_scipy_at_every_voxel():
    rng = np.random.default_rng(7)
    shape = (4, 5, 6)
    a = rng.normal(0.3, 1.0, (5,) + shape)
    b = rng.normal(0.0, 2.5, (8,) + shape) * rng.uniform(0.2, 3.0, shape)  # unequal, voxel-varying variances
    mask = rng.random(shape) > 0.3
    t, p = vbm.welch_t_map(list(a), b, mask)
    ref = stats.ttest_ind(a, b, axis=0, equal_var=False)
    np.testing.assert_allclose(t[mask], ref.statistic[mask], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p[mask], ref.pvalue[mask], rtol=1e-8, atol=1e-14)
    assert np.all(t[~mask] == 0) and np.all(p[~mask] == 1)
    # no mask: every voxel; a constant voxel (zero variance in both groups) gives t 0, p 1, not NaN
    a[:, 0, 0, 0] = 1.0
    b[:, 0, 0, 0] = 1.0
    t, p = vbm.welch_t_map(a, b)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="Precision loss"):
        ref = stats.ttest_ind(a, b, axis=0, equal_var=False)
    finite = np.isfinite(ref.statistic)
    assert not finite[0, 0, 0] and finite.sum() == t.size - 1
    np.testing.assert_allclose(t[finite], ref.statistic[finite], rtol=1e-10)
    np.testing.assert_allclose(p[finite], ref.pvalue[finite], rtol=1e-8, atol=1e-14)
    assert t[0, 0, 0] == 0 and p[0, 0, 0] == 1


def _measured_fwhm(profile: np.ndarray) -> float:
    """Width (samples) at half maximum of a single-peaked profile; crossings by linear interpolation."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2.0
    left = peak - int(np.argmax(profile[peak::-1] < half))
    right = peak + int(np.argmax(profile[peak:] < half))
    x_left = left + (half - profile[left]) / (profile[left + 1] - profile[left])
    x_right = right - 1 + (profile[right - 1] - half) / (profile[right - 1] - profile[right])
    return x_right - x_left


@pytest.mark.parametrize("fwhm_mm", [8.0, 6.0])
def test_smoothing_fwhm_of_a_delta_matches_the_request(fwhm_mm):
    voxels = (1.5, 2.0, 2.5)  # anisotropic on purpose: sigma must be set per axis
    affine = np.diag(voxels + (1.0,))
    delta = np.zeros((41, 41, 41), dtype=np.float32)
    delta[20, 20, 20] = 1.0
    out = vbm.smooth(delta, affine, fwhm_mm)
    assert out.sum() == pytest.approx(1.0, rel=1e-4)  # the kernel is normalised, nothing leaks
    profiles = (out[:, 20, 20], out[20, :, 20], out[20, 20, :])
    for axis, (profile, size) in enumerate(zip(profiles, voxels, strict=True)):
        measured = _measured_fwhm(profile.astype(np.float64))
        assert abs(measured - fwhm_mm / size) < 0.15, (axis, measured * size, fwhm_mm)


def _displacement_image(field_ras: np.ndarray, affine: np.ndarray):
    """ANTs displacement-field image of a RAS+ displacement ``field_ras`` (X, Y, Z, 3) in mm."""
    import ants

    from morphgen.antsio import FLIP, to_ants

    ref = to_ants(np.zeros(field_ras.shape[:3], np.float32), affine)
    lps = field_ras @ FLIP.T  # vector components in ITK's LPS+ world
    return ants.from_numpy(
        lps.astype(np.float32),
        origin=ref.origin,
        spacing=ref.spacing,
        direction=ref.direction,
        has_components=True,
    )


def test_jacobian_and_warp_direction_on_a_known_field(tmp_path):
    """phi(x) = x + u(x), u = 0.1 (x_R - c) along R: det D phi = 1.1; warping pulls subject(phi(x))."""
    import ants

    template = _template()
    xyz = nib.affines.apply_affine(GRID.affine, np.indices(GRID.shape).reshape(3, -1).T).reshape(
        GRID.shape + (3,)
    )
    field = np.zeros(GRID.shape + (3,))
    field[..., 0] = 0.1 * (xyz[..., 0] - 2.0)
    warp = tmp_path / "warp.nii.gz"
    ants.image_write(_displacement_image(field, GRID.affine), str(warp))
    jac = vbm.jacobian_determinant(template, [str(warp)])
    interior = (slice(2, -2),) * 3
    np.testing.assert_allclose(jac[interior], 1.1, atol=1e-3)
    ramp = xyz[..., 0].astype(np.float32)  # subject intensity = its R coordinate
    pulled = vbm.warp_to_template(ramp, GRID.affine, template, [str(warp)])
    np.testing.assert_allclose(pulled[interior], (xyz[..., 0] + field[..., 0])[interior], atol=1e-3)


def test_modulation_preserves_gm_volume_under_a_scaling(tmp_path):
    """Subject = template phantom stretched by 1.1 along x; SyN to the template, then modulation."""
    template = _template()
    subject = _phantom_fractions(blob=True, scale_x=1.1)
    image = nib.Nifti1Image(_t1(subject), GRID.affine)
    # the finest level too (ANTs' default (40, 20, 0) skips it): at 4 mm the 1-voxel GM rim needs it
    norm = vbm.normalise_to_template(image, template, tmp_path / "reg", reg_iterations=(40, 20, 10))
    warped_gm = vbm.warp_to_template(subject["gm"], GRID.affine, template, norm.fwd_transforms)
    modulated = vbm.modulated_map(subject["gm"], GRID.affine, template, norm.fwd_transforms)
    jac = vbm.jacobian_determinant(template, norm.fwd_transforms)
    total = float(subject["gm"].sum())
    template_fr = _phantom_fractions(blob=True)
    # direction: the subject is larger, so the template-to-subject map expands (J ~ 1.1 inside the brain)
    assert float(np.median(jac[template_fr["wm"] > 0.5])) == pytest.approx(1.1, abs=0.02)
    # unmodulated, the warped GM has the template's volume (10 % less); modulation restores the subject's
    assert float(warped_gm.sum()) == pytest.approx(float(template_fr["gm"].sum()), rel=0.02)
    assert float(modulated.sum()) == pytest.approx(total, rel=0.02)
    # deterministic: the same registration again gives the same warp
    again = vbm.normalise_to_template(image, template, tmp_path / "reg2", reg_iterations=(40, 20, 10))
    np.testing.assert_array_equal(jac, vbm.jacobian_determinant(template, again.fwd_transforms))


def test_t_map_correlation_of_a_map_with_itself_and_its_negation():
    rng = np.random.default_rng(3)
    t = ndi.gaussian_filter(rng.standard_normal((20, 22, 18)), 1.5)
    mask = rng.random(t.shape) > 0.2
    assert vbm.t_map_correlation(t, t, mask) == pytest.approx(1.0, abs=1e-12)
    assert vbm.t_map_correlation(t, -t, mask) == pytest.approx(-1.0, abs=1e-12)
    assert vbm.t_map_correlation(t, 2.0 * t + 5.0) == pytest.approx(1.0, abs=1e-12)  # Pearson, not cosine
    other = ndi.gaussian_filter(rng.standard_normal(t.shape), 1.5)
    assert abs(vbm.t_map_correlation(t, other, mask)) < 0.2
    # NaN voxels and voxels outside the mask are left out, not propagated
    noisy = t.copy()
    noisy[~mask] = rng.standard_normal(int((~mask).sum())) * 100
    noisy[0, 0, 0] = np.nan
    assert vbm.t_map_correlation(t, noisy, mask & np.isfinite(noisy)) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(vbm.t_map_correlation(t, np.zeros_like(t), mask))


def test_phantom_vbm_finds_the_planted_gm_loss_and_nothing_far_from_it(tmp_path):
    """6 + 6 phantoms with random smooth deformations and noise; group b lacks a 10 mm GM blob."""
    rng = np.random.default_rng(11)
    template = _template()
    groups = {}
    for name, blob in (("a", True), ("b", False)):
        base = _phantom_fractions(blob=blob)
        images, gms = [], []
        for n in range(6):
            fr = _deform(base, rng)
            # per-subject GM: a global gain and smooth noise inside the brain (segmentation variability)
            brain = (fr["gm"] + fr["wm"] + fr["csf"]) > 0.5
            noise = 0.15 * ndi.gaussian_filter(rng.standard_normal(GRID.shape), 1.0) * brain
            gm = np.clip(fr["gm"] * rng.uniform(0.9, 1.1) + noise, 0.0, 1.0).astype(np.float32)
            t1 = _t1(fr) + rng.normal(0, 0.01, GRID.shape).astype(np.float32)
            images.append(save_volume(tmp_path / "in" / f"sub-{name}{n}_T1w.nii.gz", t1, GRID.affine))
            gms.append(save_volume(tmp_path / "in" / f"sub-{name}{n}_gm.nii.gz", gm, GRID.affine))
        groups[name] = (images, gms)
    fwhm = 8.0
    result = vbm.run_vbm(
        groups["a"][0],
        groups["b"][0],
        template,
        tmp_path / "vbm",
        gm_maps_a=groups["a"][1],
        gm_maps_b=groups["b"][1],
        fwhm_mm=fwhm,
        progress=False,
    )
    t_img, p_img = nib.load(result.t_map), nib.load(result.p_map)
    np.testing.assert_allclose(t_img.affine, GRID.affine)
    t, p = t_img.get_fdata(), p_img.get_fdata()
    mask = nib.load(result.mask).get_fdata() > 0
    assert result.n_voxels == int(mask.sum()) > 1000
    ijk = np.indices(t.shape)
    dist_mm = np.linalg.norm((ijk.T - np.asarray(BLOB_IJK)).T, axis=0) * GRID.voxel_size
    # the peak |t| lies inside the planted blob (radius 10 mm; the peak voxel of a Welch map of 6 + 6
    # subjects wanders within it, since the variances vary as much as the effect)
    peak = np.unravel_index(int(np.argmax(np.abs(t) * mask)), t.shape)
    assert dist_mm[peak] <= (BLOB_RADIUS + 0.5) * GRID.voxel_size, (peak, BLOB_IJK)
    assert t[peak] > 0  # group a has more GM there
    bonferroni = 0.05 / int(mask.sum())
    significant = mask & (p < bonferroni)
    assert significant[peak]
    # the |t|-weighted centre of the significant voxels is the blob's centre, within one voxel
    weight = np.abs(t) * significant
    centre = (ijk * weight).reshape(3, -1).sum(axis=1) / weight.sum()
    assert np.linalg.norm(centre - np.asarray(BLOB_IJK)) * GRID.voxel_size <= GRID.voxel_size, centre
    # nothing significant farther than 2 FWHM from it
    far = dist_mm > 2 * fwhm
    assert not np.any(significant & far), np.argwhere(significant & far)[:5]
    assert result.figure.exists() and result.figure.stat().st_size > 5000
    assert set(result.registration_seconds) == {f"sub-{g}{n}_T1w" for g in "ab" for n in range(6)}


class _FailingSegmenter(Segmenter):
    def segment(self, image, mask=None):
        raise RuntimeError("no tissue found")


def test_run_vbm_errors_name_the_subject_and_file(tmp_path):
    template = _template()
    good = save_volume(tmp_path / "good.nii.gz", _t1(_phantom_fractions(blob=True)), GRID.affine)
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(SubjectError, match="sub-02.*missing.nii.gz"):
        vbm.run_vbm(
            [good, missing],
            [good, good],
            template,
            tmp_path / "out",
            gm_maps_a=[good, good],
            gm_maps_b=[good, good],
            ids_a=["sub-01", "sub-02"],
            progress=False,
        )
    with pytest.raises(SubjectError, match="sub-01.*good.nii.gz.*segmentation failed"):
        vbm.run_vbm(
            [good, good],
            [good, good],
            template,
            tmp_path / "out",
            segmenter=_FailingSegmenter(),
            ids_a=["sub-01", "sub-02"],
            progress=False,
        )
    assert not (tmp_path / "out" / "t_map.nii.gz").exists()


def _modulated_group(tmp_path, name: str, blob: bool, n: int, rng) -> list:
    """Modulated GM maps in template space (no registration): the phantom's GM plus smooth noise."""
    base = _phantom_fractions(blob=blob)["gm"]
    brain = _t1(_phantom_fractions(blob=False)) > 0.1
    paths = []
    for k in range(n):
        noise = 0.15 * ndi.gaussian_filter(rng.standard_normal(GRID.shape), 1.0) * brain
        gm = np.clip(base * rng.uniform(0.9, 1.1) + noise, 0.0, 1.0)
        paths.append(save_volume(tmp_path / name / f"{name}-{k}_mwp1.nii.gz", gm, GRID.affine))
    return paths


def test_contrast_vbm_correlates_real_and_synthetic_t_maps(tmp_path):
    from morphgen.metrics.morphometry import contrast_vbm

    rng = np.random.default_rng(5)
    template = _template()
    real_a, real_b = (
        _modulated_group(tmp_path, "ra", True, 6, rng),
        _modulated_group(tmp_path, "rb", False, 6, rng),
    )
    kept_a, kept_b = (
        _modulated_group(tmp_path, "sa", True, 5, rng),
        _modulated_group(tmp_path, "sb", False, 5, rng),
    )
    lost_a = _modulated_group(tmp_path, "la", False, 5, rng)  # samples that lost the effect

    kept = contrast_vbm(real_a, real_b, kept_a, kept_b, template, tmp_path / "kept", tmp_path / "kept.png")
    lost = contrast_vbm(real_a, real_b, lost_a, kept_b, template, tmp_path / "lost", tmp_path / "lost.png")
    assert kept["t_map_correlation"] > 0.7 and kept["synthetic_significant_voxels"] > 0
    assert lost["t_map_correlation"] < kept["t_map_correlation"] - 0.3
    assert kept["real_significant_voxels"] == lost["real_significant_voxels"] > 0  # same real analysis
    # the correlation is the one of the t-maps written, inside the mask written
    t_real = nib.load(tmp_path / "kept" / "real_t.nii.gz").get_fdata()
    t_synth = nib.load(tmp_path / "kept" / "synthetic_t.nii.gz").get_fdata()
    mask = nib.load(tmp_path / "kept" / "mask.nii.gz").get_fdata() > 0
    assert kept["mask_voxels"] == int(mask.sum())
    assert kept["t_map_correlation"] == pytest.approx(np.corrcoef(t_real[mask], t_synth[mask])[0, 1])
    assert (tmp_path / "kept.png").stat().st_size > 5000
    # too few synthetic images: the real analysis still runs, the synthetic side says so
    few = contrast_vbm(real_a, real_b, kept_a[:1], kept_b, template, tmp_path / "few", tmp_path / "few.png")
    assert math.isnan(few["t_map_correlation"]) and math.isnan(few["synthetic_significant_voxels"])
    with pytest.raises(ValueError, match="two real images"):
        contrast_vbm(real_a[:1], real_b, kept_a, kept_b, template, tmp_path / "x", tmp_path / "x.png")


def test_paired_t_map_equals_scipy_at_every_voxel():
    rng = np.random.default_rng(11)
    shape = (4, 5, 6)
    a = rng.normal(0.0, 1.0, (7,) + shape)
    b = a + rng.normal(0.2, 0.5, (7,) + shape) * rng.uniform(0.2, 3.0, shape)  # the pairs are correlated
    mask = rng.random(shape) > 0.3
    t, p = vbm.paired_t_map(list(a), b, mask)
    ref = stats.ttest_rel(a, b, axis=0)
    np.testing.assert_allclose(t[mask], ref.statistic[mask], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p[mask], ref.pvalue[mask], rtol=1e-8, atol=1e-14)
    assert np.all(t[~mask] == 0) and np.all(p[~mask] == 1)
    # a paired test differs from the two-sample one on the same maps: the subjects' spread cancels
    assert np.abs(t[mask]).mean() > np.abs(vbm.welch_t_map(a, b, mask)[0][mask]).mean()
    # identical pairs at a voxel: no change there, t 0 and p 1 (not NaN)
    b[:, 0, 0, 0] = a[:, 0, 0, 0]
    t, p = vbm.paired_t_map(a, b)
    assert t[0, 0, 0] == 0 and p[0, 0, 0] == 1
    with pytest.raises(ValueError, match="same subjects"):
        vbm.paired_t_map(a, b[:-1])


def test_paired_vbm_is_empty_for_faithful_reconstructions_and_finds_a_lost_blob(tmp_path):
    """Originals: the phantom's GM with subject-specific noise. Faithful reconstructions keep it up to a
    small independent error; lossy ones also lose the GM blob at BLOB_IJK in every subject."""
    from morphgen.metrics.morphometry import paired_vbm

    rng = np.random.default_rng(3)
    template = _template()
    with_blob = _phantom_fractions(blob=True)["gm"]
    without = _phantom_fractions(blob=False)["gm"]
    brain = _t1(_phantom_fractions(blob=False)) > 0.1
    originals, faithful, lossy = {}, {}, {}
    for k in range(8):
        subject = f"sub-{k:02d}"
        own = 0.15 * ndi.gaussian_filter(rng.standard_normal(GRID.shape), 1.0) * brain
        gm = np.clip(with_blob * rng.uniform(0.9, 1.1) + own, 0.0, 1.0)
        error = 0.01 * ndi.gaussian_filter(rng.standard_normal(GRID.shape), 1.0) * brain
        originals[subject] = save_volume(tmp_path / "o" / f"{subject}_mwp1.nii.gz", gm, GRID.affine)
        faithful[subject] = save_volume(
            tmp_path / "f" / f"{subject}_mwp1.nii.gz", np.clip(gm + error, 0, 1), GRID.affine
        )
        blob = with_blob - without  # the blob's GM fraction
        lossy[subject] = save_volume(
            tmp_path / "l" / f"{subject}_mwp1.nii.gz", np.clip(gm - blob + error, 0, 1), GRID.affine
        )
    kept = paired_vbm(originals, faithful, template, tmp_path / "kept", tmp_path / "kept.png")
    lost = paired_vbm(originals, lossy, template, tmp_path / "lost", tmp_path / "lost.png")
    assert kept["n_subjects"] == 8 and kept["bonferroni_voxels"] == 0
    assert kept["significant_voxels"] <= 0.01 * kept["mask_voxels"]  # p < 0.001 by chance, about 0.1%
    assert abs(kept["gm_change_pct"]) < 0.5
    assert lost["bonferroni_voxels"] > 10 and lost["gm_change_pct"] < -0.5
    t = nib.load(tmp_path / "lost" / "t.nii.gz").get_fdata()
    p = nib.load(tmp_path / "lost" / "p.nii.gz").get_fdata()
    found = np.argwhere(p < 0.05 / lost["mask_voxels"])
    distance = np.linalg.norm(found - np.asarray(BLOB_IJK), axis=1)
    assert t[BLOB_IJK] < 0 and distance.max() < BLOB_RADIUS + 4  # where the blob was, and nowhere else
    np.testing.assert_allclose(nib.load(tmp_path / "lost" / "t.nii.gz").affine, GRID.affine, atol=1e-6)
    assert (tmp_path / "lost.png").stat().st_size > 5000
    extra = {**faithful, "sub-99": faithful["sub-00"]}
    with pytest.raises(SubjectError, match="sub-99"):
        paired_vbm(originals, extra, template, tmp_path / "x", tmp_path / "x.png")
