"""Segmentation volumetry: phantoms of known anatomy, orientation, the ONNX back-end and the volumes TSV."""

from __future__ import annotations

import os

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # before ANTs loads: 2 shared cores

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from morphgen import templates  # noqa: E402
from morphgen.errors import ChecksumError, ConfigError, SubjectError  # noqa: E402
from morphgen.segmentation import (  # noqa: E402
    AtroposSegmenter,
    OnnxSynthSegSegmenter,
    Segmentation,
    Segmenter,
    make_segmenter,
    segment_files,
    volumes_row,
)
from morphgen.segmentation.base import generated_intensities  # noqa: E402
from morphgen.segmentation.onnx_synthseg import prepare_input, synthseg_rescale  # noqa: E402
from morphgen.segmentation.partial_volume import fit_partial_volume  # noqa: E402
from morphgen.segmentation.volumes import (  # noqa: E402
    INTENSITY_COLUMNS,
    reference_intensities,
    subject_intensities,
)
from morphgen.space import Grid  # noqa: E402
from morphgen.weights import sha256sum  # noqa: E402

torch.set_num_threads(1)

GRID = Grid(4.0, (48, 64, 48))
VOXEL_ML = GRID.voxel_volume_ml
T1 = {"csf": 0.2, "gm": 0.6, "wm": 1.0}
CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def t1_phantom(maps: dict[str, np.ndarray], seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """T1 of known tissue content: partial-volume mix of tissue intensities, noise inside the brain."""
    brain = maps["csf"] + maps["gm"] + maps["wm"]
    rng = np.random.default_rng(seed)
    image = sum(T1[t] * maps[t] for t in T1) + rng.normal(0.0, noise, brain.shape) * (brain > 0.01)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def sum_ml(volume: np.ndarray, voxel_ml: float = VOXEL_ML) -> float:
    return float(np.sum(volume, dtype=np.float64)) * voxel_ml


def centroid_mm(weights: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.array(ndi.center_of_mass(weights.astype(np.float64)))
    return affine[:3, :3] @ ijk + affine[:3, 3]


@pytest.fixture(scope="module")
def maps():
    """GM/WM/CSF probability maps of the MNI152 brain on the 4 mm grid: the phantom's known anatomy."""
    return templates.mni_tissue_priors(GRID)


@pytest.fixture(scope="module")
def enlarged():
    """The same brain with the ventricles grown by 3 mm into the white matter around them (done at 1 mm).

    The WM of a 3 mm shell around the MNI lateral ventricles becomes CSF; returns the 4 mm maps and the CSF
    added (ml).
    """
    mni = templates.mni_1mm()
    vent = mni["ventricles"] > 0.5
    shell = ndi.binary_dilation(vent, iterations=3) & ~vent
    out = {t: mni[t].copy() for t in ("csf", "gm", "wm")}
    moved = np.where(shell, out["wm"], 0.0)
    out["wm"] -= moved
    out["csf"] += moved
    added_ml = float(np.sum(out["csf"] - mni["csf"], dtype=np.float64)) / 1000.0
    return {t: templates.resample_to_grid(v, mni["affine"], GRID) for t, v in out.items()}, added_ml


@pytest.fixture(scope="module")
def atropos_result(maps):
    return AtroposSegmenter().segment(GRID.image(t1_phantom(maps)))


# ------------------------------------------------------------------------------------------ Atropos


def test_atropos_phantom_volumes_match_the_maps(maps, atropos_result):
    vols = atropos_result.volumes_ml
    for tissue in ("gm", "wm"):
        assert vols[tissue] == pytest.approx(sum_ml(maps[tissue]), rel=0.10), tissue
    true_brain = sum_ml(maps["gm"] + maps["wm"])
    assert vols["brain"] == pytest.approx(true_brain, rel=0.05)
    assert vols["brain"] == pytest.approx(vols["gm"] + vols["wm"])
    # total CSF is the hard one: background/GM mixes at the rim of the brain read as CSF (see report)
    assert vols["csf"] == pytest.approx(sum_ml(maps["csf"]), rel=0.35)
    roi = templates.ventricle_roi(GRID)
    assert vols["ventricles"] == pytest.approx(sum_ml(maps["csf"] * roi), rel=0.10)


def test_atropos_outputs_are_consistent(maps, atropos_result):
    seg = atropos_result
    assert seg.labels.dtype == np.uint8 and seg.labels.shape == GRID.shape
    assert set(np.unique(seg.labels)) == {0, 1, 2, 3}
    inside = seg.labels > 0
    total = sum(seg.probabilities[t] for t in ("csf", "gm", "wm"))
    np.testing.assert_allclose(total[inside], 1.0, atol=1e-3)
    assert np.all(total[~inside] == 0)
    # the WM label sits where the WM map is high
    assert np.mean(maps["wm"][seg.labels == 3]) > 0.7
    fractions = sum(seg.fractions[t] for t in ("csf", "gm", "wm"))
    assert np.all(fractions <= 1.0 + 1e-5) and np.all(fractions[~inside] == 0)


def test_atropos_gives_the_same_segmentation_every_time(maps, atropos_result):
    """Atropos seeds its random generator from the clock unless told not to; the tables must not change."""
    again = AtroposSegmenter().segment(GRID.image(t1_phantom(maps)))
    assert again.volumes_ml == atropos_result.volumes_ml
    np.testing.assert_array_equal(again.labels, atropos_result.labels)
    for tissue in ("csf", "gm", "wm"):
        np.testing.assert_array_equal(again.probabilities[tissue], atropos_result.probabilities[tissue])


def test_enlarged_ventricles_are_measured_larger_by_about_the_known_amount(maps, enlarged, atropos_result):
    grown_maps, added_ml = enlarged
    assert added_ml > 5.0  # the phantom really changed
    grown = AtroposSegmenter().segment(GRID.image(t1_phantom(grown_maps)))
    increase = grown.volumes_ml["ventricles"] - atropos_result.volumes_ml["ventricles"]
    assert 0.6 * added_ml < increase < 1.4 * added_ml


def decoded(maps: dict[str, np.ndarray], roi: np.ndarray) -> np.ndarray:
    """The phantom as a smooth decoder makes it: half of the sulcal CSF (outside ``roi``) turned to GM
    intensity, the image blurred by one voxel."""
    sulcal = 0.5 * maps["csf"] * ~roi
    greyed = {"csf": maps["csf"] - sulcal, "gm": maps["gm"] + sulcal, "wm": maps["wm"]}
    return ndi.gaussian_filter(t1_phantom(greyed), 1.0)


def test_generated_images_unmixed_with_the_real_intensities_keep_the_ventricle_change(
    maps, enlarged, atropos_result
):
    """On a decoder-like image the image's own intensity fit swaps CSF and GM; the real cohort's intensities
    (here: those fitted on the sharp phantom) still measure the enlarged ventricles larger."""
    grown_maps, added_ml = enlarged
    roi = templates.ventricle_roi(GRID)
    base, grown = (GRID.image(decoded(m, roi)) for m in (maps, grown_maps))
    own = AtroposSegmenter().segment(base).intensities
    assert own["csf"] > own["gm"]  # the failure this guards against happens on this phantom
    reference = atropos_result.intensities
    assert 0 < reference["csf"] < reference["gm"] < reference["wm"]
    segmenter = AtroposSegmenter().with_reference(reference)
    before, after = (segmenter.segment(img) for img in (base, grown))
    assert before.intensities == pytest.approx(reference)  # used as given, not re-fitted
    increase = after.volumes_ml["ventricles"] - before.volumes_ml["ventricles"]
    assert 0.5 * added_ml < increase < 1.4 * added_ml


def test_reference_intensities_are_the_real_cohorts_median(atropos_result):
    rows = [volumes_row(f"sub-{i}", atropos_result) for i in range(3)]
    for row, scale in zip(rows, (0.9, 1.0, 1.2), strict=True):
        for column in INTENSITY_COLUMNS.values():
            row[column] *= scale
    table = pd.DataFrame(rows)
    got = reference_intensities(table, "volumes/real.tsv")
    for key, column in INTENSITY_COLUMNS.items():
        assert got[key] == pytest.approx(table[column].median())
        assert got[key] == pytest.approx(atropos_result.intensities[key], rel=1e-3)
    with pytest.raises(
        ConfigError, match=r"volumes/real.tsv has no tissue intensities.*forcerun segment_real"
    ):
        reference_intensities(table.drop(columns="gm_intensity"), "volumes/real.tsv")
    swapped = {**atropos_result.intensities, "csf": 0.7}
    with pytest.raises(ConfigError, match="0 < csf < gm < wm"):
        AtroposSegmenter().with_reference(swapped)


def test_a_perfect_reconstruction_measures_its_subjects_volumes_whatever_the_scanner(maps, tmp_path):
    """Three scanners of different contrast: a reconstruction equal to its subject's image, read with that
    subject's own intensities, measures the real volumes, and so does one that changed only the contrast;
    the cohort's median intensities misread the scanners that differ from it (the demo cohort: WM slope 4.8
    for its real test images)."""
    contrasts = {"sub-a": (0.24, 0.59, 0.95), "sub-b": (0.34, 0.66, 0.96), "sub-c": (0.30, 0.63, 0.95)}
    images, recoloured = {}, {}
    brain = maps["csf"] + maps["gm"] + maps["wm"]
    for k, (subject, (csf, gm, wm)) in enumerate(contrasts.items()):
        noise = np.random.default_rng(k).normal(0.0, 0.02, brain.shape) * (brain > 0.01)
        for folder, (a, b) in ((images, (0.0, 1.0)), (recoloured, (0.12, 0.82))):
            # recoloured: a decoder that gives the same anatomy another scanner's contrast
            tissue = {"csf": a + b * csf, "gm": a + b * gm, "wm": a + b * wm}
            data = np.clip(sum(tissue[t] * maps[t] for t in tissue) + noise, 0, 1).astype(np.float32)
            folder[subject] = tmp_path / f"{subject}_{a}.nii.gz"
            nib.save(GRID.image(data), folder[subject])
    real = segment_files(images, AtroposSegmenter(), tmp_path / "real.tsv", progress=False).set_index(
        "participant_id"
    )
    own = subject_intensities(pd.read_csv(tmp_path / "real.tsv", sep="\t"), "real.tsv")
    assert own["sub-b"]["csf"] > own["sub-a"]["csf"] + 0.04  # each subject's own scale, not one for all
    paired = segment_files(
        images, AtroposSegmenter(), tmp_path / "paired.tsv", progress=False, intensities=own
    ).set_index("participant_id")
    median = segment_files(
        images,
        AtroposSegmenter().with_reference(reference_intensities(real.reset_index(), "real.tsv")),
        tmp_path / "median.tsv",
        progress=False,
    ).set_index("participant_id")
    for tissue in ("csf", "gm", "wm", "ventricles"):  # not exact: the real fit stops short of its fixed point
        np.testing.assert_allclose(paired[f"{tissue}_ml"], real[f"{tissue}_ml"], rtol=0.04)
    changed = segment_files(
        recoloured, AtroposSegmenter(), tmp_path / "recoloured.tsv", progress=False, intensities=own
    ).set_index("participant_id")
    fixed = AtroposSegmenter()
    unfitted = {s: fixed.with_reference(v).segment(nib.load(recoloured[s])) for s, v in own.items()}
    for tissue in ("csf", "gm", "wm", "ventricles"):
        error = (changed[f"{tissue}_ml"] / real[f"{tissue}_ml"] - 1).abs()
        assert error.max() < 0.08, tissue
        as_given = [abs(unfitted[s].volumes_ml[tissue] / real.loc[s, f"{tissue}_ml"] - 1) for s in own]
        assert max(as_given) > error.max(), tissue  # the subject's contrast as it was would misread it
    misread = (median[["csf_ml", "gm_ml", "wm_ml"]] / real[["csf_ml", "gm_ml", "wm_ml"]] - 1).abs()
    assert misread.loc[["sub-a", "sub-b"]].max().max() > 0.05  # what the subject's own intensities correct
    with pytest.raises(SubjectError, match="sub-c.*no tissue intensities of its real image"):
        segment_files(
            images,
            AtroposSegmenter(),
            tmp_path / "x.tsv",
            progress=False,
            on_error="raise",
            intensities={s: v for s, v in own.items() if s != "sub-c"},
        )


def test_generated_intensities_are_chosen_for_atropos_only():
    cfg = yaml.safe_load(CONFIG.read_text())
    assert generated_intensities(cfg)  # the default: the real cohort's
    cfg["segmentation"]["atropos"]["generated_intensities"] = "own"
    assert not generated_intensities(cfg)
    make_segmenter(cfg)  # the workflow's key is not a segmenter argument
    cfg["segmentation"]["atropos"]["generated_intensities"] = "real"
    cfg["segmentation"]["backend"] = "onnx"
    assert not generated_intensities(cfg)  # SynthSeg does not unmix intensities


def test_partial_volume_model_recovers_known_mixtures():
    """1D voxels of known content: pure CSF/GM/WM and GM/WM mixes with uniform fractions, plus noise."""
    rng = np.random.default_rng(0)
    n = 20000
    kind = rng.choice(4, size=n, p=[0.1, 0.4, 0.3, 0.2])  # pure csf, pure gm, pure wm, gm/wm mix
    t = rng.uniform(0.0, 1.0, n)
    truth = np.zeros((4, n))  # background, csf, gm, wm
    truth[1, kind == 0] = truth[2, kind == 1] = truth[3, kind == 2] = 1.0
    truth[2, kind == 3], truth[3, kind == 3] = 1.0 - t[kind == 3], t[kind == 3]
    means = np.array([0.0, 0.25, 0.55, 0.95])
    x = means @ truth + rng.normal(0.0, 0.02, n)
    prior = np.vstack([np.zeros(n), 0.7 * truth[1:] + 0.1]) + 1e-4  # an informative but blurred prior
    fit = fit_partial_volume(x, prior, means=(0.3, 0.6, 0.9))  # started away from the truth
    np.testing.assert_allclose(fit.means, means, atol=0.01)
    assert fit.sigma == pytest.approx(0.02, abs=0.005)
    np.testing.assert_allclose(fit.fractions.sum(axis=0), 1.0, atol=1e-9)
    for k in (2, 3):
        assert fit.fractions[k].sum() == pytest.approx(truth[k].sum(), rel=0.08)
    mixed = kind == 3
    pv_error = np.abs(fit.fractions[3][mixed] - t[mixed]).mean()
    hard_error = np.abs((x[mixed] > 0.75) - t[mixed]).mean()  # what a hard GM/WM label would give
    assert pv_error < 0.07 and pv_error < 0.4 * hard_error


def test_the_affine_fit_finds_a_contrast_that_is_an_affine_map_of_the_given_one():
    """Voxels of a scanner whose tissue means are 0.1 + 0.8 x another's: started at the other's means, the
    affine fit finds the image's own, in order, where a free fit from far away may not."""
    rng = np.random.default_rng(1)
    n = 20000
    kind = rng.choice(3, size=n, p=[0.2, 0.45, 0.35])
    truth = np.zeros((4, n))
    truth[1 + kind, np.arange(n)] = 1.0
    given = np.array([0.25, 0.55, 0.95])
    means = np.concatenate([[0.0], 0.1 + 0.8 * given])
    x = means @ truth + rng.normal(0.0, 0.02, n)
    prior = np.vstack([np.zeros(n), 0.7 * truth[1:] + 0.1]) + 1e-4
    fit = fit_partial_volume(x, prior, means=tuple(given), affine=True)
    np.testing.assert_allclose(fit.means, means, atol=0.01)
    for k in (1, 2, 3):
        assert fit.fractions[k].sum() == pytest.approx(truth[k].sum(), rel=0.08)  # as the free fit gives
    fixed = fit_partial_volume(x, prior, means=tuple(given), n_iter=1)  # the given contrast, not fitted
    wm = truth[3].sum()
    assert abs(fixed.fractions[3].sum() - wm) > 3 * abs(fit.fractions[3].sum() - wm)


@pytest.fixture(scope="module")
def asymmetric(maps):
    """The phantom with the WM of a left upper block turned to GM, so a left-right flip would show."""
    world = (
        np.einsum("ij,jxyz->ixyz", GRID.affine[:3, :3], np.indices(GRID.shape))
        + GRID.affine[:3, 3, None, None, None]
    )
    block = (world[0] < -10.0) & (world[2] > 15.0)
    out = {t: v.copy() for t, v in maps.items()}
    out["gm"][block] += out["wm"][block]
    out["wm"][block] = 0.0
    return out


def test_label_maps_overlay_the_input_in_any_voxel_order(asymmetric, tmp_path):
    """Labels written for a RAS and a LAS copy of one image lie on the WM map in world mm."""
    data = t1_phantom(asymmetric)
    ras = GRID.image(data)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = GRID.shape[0] - 1
    las = nib.Nifti1Image(data[::-1].copy(), GRID.affine @ flip)  # same world content, x axis reversed
    paths = {}
    for name, img in {"ras": ras, "las": las}.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(img, paths[name])
    table = segment_files(
        paths, AtroposSegmenter(), tmp_path / "vol.tsv", tmp_path / "labels", progress=False
    )

    wm_mm = centroid_mm(asymmetric["wm"], GRID.affine)
    assert wm_mm[0] > 5.0  # the block made WM lean right; a left-right flip would put it near -5 mm
    labels = {}
    for name, img in {"ras": ras, "las": las}.items():
        labels_img = nib.load(tmp_path / "labels" / f"{name}_dseg.nii.gz")
        np.testing.assert_allclose(labels_img.affine, img.affine, atol=1e-5)
        labels[name] = np.asanyarray(labels_img.dataobj)
        assert labels[name].dtype == np.uint8
        # hard labels lean a little towards the (symmetric) prior, hence a few mm of slack
        label_mm = centroid_mm(labels[name] == 3, labels_img.affine)
        np.testing.assert_allclose(label_mm, wm_mm, atol=4.0)
        assert label_mm[0] > 2.0
    assert np.mean(labels["las"][::-1] == labels["ras"]) > 0.99  # the same voxels, whatever the axis order
    a, b = (
        table.set_index("participant_id").loc[["ras", "las"], ["gm_ml", "wm_ml", "ventricles_ml"]].to_numpy()
    )
    np.testing.assert_allclose(a, b, rtol=0.02)


# ------------------------------------------------------------------------------------------- ONNX


BAND_THRESHOLDS = (0.1, 0.3, 0.5, 0.75)
# channel -> FreeSurfer label: background, left lateral ventricle, left hippocampus, left cortex, right WM
BAND_LABELS = (0, 4, 17, 3, 41)


class BandNet(torch.nn.Module):
    """1x1x1 conv whose argmax is the intensity band: channel c has logit K (c x - sum of thresholds < c)."""

    def __init__(self, thresholds=BAND_THRESHOLDS, sharpness: float = 200.0):
        super().__init__()
        n = len(thresholds) + 1
        self.conv = torch.nn.Conv3d(1, n, kernel_size=1)
        bias = np.concatenate([[0.0], -np.cumsum(thresholds)])
        with torch.no_grad():
            self.conv.weight.copy_(sharpness * torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1))
            self.conv.bias.copy_(sharpness * torch.tensor(bias, dtype=torch.float32))

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module")
def band_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "band.onnx"
    dims = {2: torch.export.Dim("x"), 3: torch.export.Dim("y"), 4: torch.export.Dim("z")}
    torch.onnx.export(
        BandNet().eval(),
        (torch.rand(1, 1, 32, 32, 32),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": dims},
        external_data=False,
    )
    return path, sha256sum(path)


@pytest.fixture(scope="module")
def band_image(maps):
    """A smooth T1 whose values keep 0.0025 away from every band threshold (float32 ties cannot flip)."""
    data = np.round(t1_phantom(maps, noise=0.0) * 200.0) / 200.0 + 0.0025
    data[data < 0.01] = 0.0
    return data.astype(np.float32)


def expected_band_volumes(data: np.ndarray, voxel_ml: float) -> dict[str, float]:
    band = np.digitize(data, BAND_THRESHOLDS)  # 0..4, the channel index
    ml = [float(np.sum(band == c)) * voxel_ml for c in range(len(BAND_LABELS))]
    return {"csf": ml[1], "ventricles": ml[1], "gm": ml[2] + ml[3], "wm": ml[4], "left_hippocampus": ml[2]}


def test_onnx_volumes_equal_the_intensity_bands(band_model, band_image):
    path, digest = band_model
    seg = OnnxSynthSegSegmenter(path, digest, label_order=BAND_LABELS, voxel_size_mm=None, normalise=False)
    result = seg.segment(GRID.image(band_image))
    expected = expected_band_volumes(band_image, VOXEL_ML)
    for key, value in expected.items():
        assert result.volumes_ml[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    vols = result.volumes_ml
    assert vols["brain"] == pytest.approx(vols["gm"] + vols["wm"])
    assert vols["hippocampus"] == vols["left_hippocampus"] == vols["deep_gm"]
    assert vols["left_cortex"] + vols["left_hippocampus"] == pytest.approx(vols["gm"])
    band = np.digitize(band_image, BAND_THRESHOLDS)
    tissue_of_band = np.array([0, 1, 2, 2, 3], dtype=np.uint8)  # bg, csf, gm, gm, wm
    np.testing.assert_array_equal(result.labels, tissue_of_band[band])
    # the logits went through a softmax: WM probability = softmax of BandNet's logits, computed here
    net = BandNet()
    logits = net.conv.weight.detach().numpy().ravel()[:, None] * band_image.ravel()[None]
    logits += net.conv.bias.detach().numpy()[:, None]
    softmax = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose(result.probabilities["wm"].ravel(), softmax[4], atol=1e-4)
    # a brain mask restricts the volumes to it
    half = np.zeros(GRID.shape, dtype=bool)
    half[:24] = True
    masked = seg.segment(GRID.image(band_image), mask=half)
    assert masked.volumes_ml["wm"] == pytest.approx(float(np.sum(band[half] == 4)) * VOXEL_ML)
    assert np.all(masked.labels[~half] == 0)
    row = volumes_row("sample-1", result)
    assert row["participant_id"] == "sample-1" and row["left_hippocampus_ml"] == round(
        vols["left_hippocampus"], 4
    )


def test_onnx_input_is_1mm_padded_to_32_and_volumes_survive_the_resampling(band_model):
    """Nested boxes whose band thresholds lie halfway between neighbours: linear resampling keeps volumes."""
    path, digest = band_model
    boxes = np.zeros((45, 61, 47), dtype=np.float32)  # 180 x 244 x 188 at 1 mm, padded to 192 x 256 x 192
    boxes[5:40, 6:55, 5:42] = 0.2
    boxes[8:37, 9:52, 8:39] = 0.4
    boxes[11:34, 13:48, 11:36] = 0.6
    boxes[14:31, 17:44, 14:33] = 0.9
    affine = GRID.affine
    model_input = prepare_input(boxes, affine, voxel_size_mm=1.0, normalise=False)
    assert model_input.tensor.shape == (1, 1, 192, 256, 192) and model_input.tensor.dtype == np.float32
    assert model_input.shape == (180, 244, 188)
    # the 1 mm grid covers the 4 mm field of view: its first voxel centre is 1.5 mm inside the corner
    np.testing.assert_allclose(model_input.affine[:3, 3], affine[:3, 3] - 1.5, atol=1e-6)
    np.testing.assert_allclose(model_input.tensor[0, 0][model_input.crop][100, 120, 100], 0.9)
    assert np.all(model_input.tensor[0, 0, :6] == 0)  # padding

    result = OnnxSynthSegSegmenter(path, digest, label_order=BAND_LABELS, normalise=False).segment(
        nib.Nifti1Image(boxes, affine)
    )
    expected = expected_band_volumes(boxes, VOXEL_ML)
    for key in ("csf", "gm", "wm", "left_hippocampus"):
        assert result.volumes_ml[key] == pytest.approx(expected[key], rel=0.01), key
    native = np.array([0, 1, 2, 2, 3], dtype=np.uint8)[np.digitize(boxes, BAND_THRESHOLDS)]
    assert np.mean(result.labels == native) > 0.99


def test_synthseg_rescale_maps_percentiles_to_0_and_1():
    data = np.linspace(-1.0, 3.0, 1001).astype(np.float32)
    out = synthseg_rescale(data)
    lo, hi = np.percentile(data, [0.5, 99.5])
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[500], (data[500] - lo) / (hi - lo), rtol=1e-5)


def test_onnx_channels_last_model_gives_the_same_volumes(band_model, band_image, tmp_path):
    import onnx
    from onnx import helper

    path, digest = band_model
    model = onnx.load(str(path))
    graph = model.graph
    inp, out = graph.input[0].name, graph.output[0].name
    for node in graph.node:  # rename the graph's ends, then wrap them in transposes
        node.input[:] = [f"{n}_cf" if n == inp else n for n in node.input]
        node.output[:] = [f"{n}_cf" if n == out else n for n in node.output]
    graph.node.insert(0, helper.make_node("Transpose", [inp], [f"{inp}_cf"], perm=[0, 4, 1, 2, 3]))
    graph.node.append(helper.make_node("Transpose", [f"{out}_cf"], [out], perm=[0, 2, 3, 4, 1]))
    for value, dims in ((graph.input[0], [1, "x", "y", "z", 1]), (graph.output[0], [1, "x", "y", "z", 5])):
        value.CopyFrom(helper.make_tensor_value_info(value.name, onnx.TensorProto.FLOAT, dims))
    last = tmp_path / "band_channels_last.onnx"
    onnx.save(model, str(last))
    common = dict(label_order=BAND_LABELS, voxel_size_mm=None, normalise=False)
    first = OnnxSynthSegSegmenter(path, digest, **common).segment(GRID.image(band_image))
    second = OnnxSynthSegSegmenter(last, sha256sum(last), channels_last=True, **common).segment(
        GRID.image(band_image)
    )
    assert second.volumes_ml == first.volumes_ml
    np.testing.assert_array_equal(second.labels, first.labels)


def test_onnx_wrong_checksum_is_refused_before_onnxruntime_loads(band_model, monkeypatch):
    import onnxruntime

    path, digest = band_model

    def never(*args, **kwargs):
        raise AssertionError("onnxruntime opened a model whose checksum did not match")

    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    wrong = "f" * 64
    with pytest.raises(ChecksumError) as err:
        OnnxSynthSegSegmenter(path, wrong, label_order=BAND_LABELS)
    msg = str(err.value)
    assert str(path) in msg and wrong in msg and digest in msg and "segmentation" in msg
    with pytest.raises(ChecksumError, match="unverified"):
        OnnxSynthSegSegmenter(path, None, label_order=BAND_LABELS)


def test_onnx_label_table_must_match_the_output_channels(band_model):
    path, digest = band_model
    with pytest.raises(ConfigError, match="5 output channels"):
        OnnxSynthSegSegmenter(path, digest)  # SynthSeg 2.0's 33 labels for a 5-channel model
    with pytest.raises(ConfigError, match="not in SynthSeg"):
        OnnxSynthSegSegmenter(path, digest, label_order=(0, 4, 17, 3, 999))


# ---------------------------------------------------------------------------- factory and TSV


def test_make_segmenter_reads_the_project_config(band_model):
    config = yaml.safe_load(CONFIG.read_text())
    seg = make_segmenter(config["segmentation"])
    assert isinstance(seg, AtroposSegmenter)
    assert seg.prior_weight == config["segmentation"]["atropos"]["prior_weight"]
    assert seg.mrf == config["segmentation"]["atropos"]["mrf"]
    assert seg.iterations == config["segmentation"]["atropos"]["iterations"]
    assert isinstance(make_segmenter(config), AtroposSegmenter)  # the whole config works too
    with pytest.raises(ConfigError, match="backend"):
        make_segmenter({"backend": "freesurfer"})
    with pytest.raises(ConfigError, match="onnx_model"):
        make_segmenter({"backend": "onnx", "onnx_model": None, "onnx_sha256": None})
    path, digest = band_model
    with pytest.raises(ChecksumError):
        make_segmenter({"backend": "onnx", "onnx_model": str(path), "onnx_sha256": None})
    seg = make_segmenter(
        {"backend": "onnx", "onnx_model": str(path), "onnx_sha256": digest, "onnx_labels": list(BAND_LABELS)}
    )
    assert isinstance(seg, OnnxSynthSegSegmenter) and seg.label_order == BAND_LABELS


class FixedSegmenter(Segmenter):
    """Labels = intensity > 0.5 as WM; volumes from the image sum, so each row is checkable."""

    def segment(self, image, mask=None):
        data = np.asanyarray(image.dataobj, dtype=np.float32)
        if data.max() > 5:
            raise RuntimeError("intensities out of range")
        labels = np.where(data > 0.5, 3, 0).astype(np.uint8)
        vols = {"gm": float(data.sum()), "wm": 2.0, "csf": 1.0, "ventricles": float("nan"), "brain": 0.0}
        vols["left_hippocampus"] = 0.5
        return Segmentation(probabilities={}, labels=labels, volumes_ml=vols)


def test_segment_files_writes_one_tsv_and_uint8_labels(tmp_path):
    grid = Grid(4.0, (6, 8, 5))
    paths = {}
    for i, sid in enumerate(["001", "sample-2"]):
        data = np.zeros(grid.shape, dtype=np.float32)
        data[1 : 3 + i, 2:5, 1:4] = 1.0
        paths[sid] = tmp_path / f"{sid}_T1w.nii.gz"
        nib.save(grid.image(data), paths[sid])
    out = tmp_path / "volumes" / "synthetic.tsv"
    table = segment_files(paths, FixedSegmenter(), out, tmp_path / "labels", progress=False)
    text = out.read_text().splitlines()
    assert text[0].split("\t") == [
        "participant_id", "gm_ml", "wm_ml", "csf_ml", "ventricles_ml", "brain_ml", "left_hippocampus_ml"
    ]  # fmt: skip
    assert text[1].split("\t")[0] == "001" and "n/a" in text[1].split("\t")  # ids stay text, NaN is n/a
    read = pd.read_csv(out, sep="\t", dtype={"participant_id": str})
    assert read["gm_ml"].tolist() == [18.0, 27.0] == table["gm_ml"].tolist()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    for sid in paths:
        img = nib.load(tmp_path / "labels" / f"{sid}_dseg.nii.gz")
        assert img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, grid.affine)


def test_segment_files_names_the_subject_and_file_that_failed(tmp_path):
    grid = Grid(4.0, (6, 8, 5))
    bad = tmp_path / "sub-07_T1w.nii.gz"
    data = np.zeros(grid.shape, dtype=np.float32)
    data[2, 2, 2] = 10.0
    nib.save(grid.image(data), bad)
    with pytest.raises(SubjectError) as err:
        segment_files({"sub-07": bad}, FixedSegmenter(), tmp_path / "v.tsv", progress=False, on_error="raise")
    assert "sub-07" in str(err.value) and str(bad) in str(err.value) and "out of range" in str(err.value)
    assert not (tmp_path / "v.tsv").exists()


def test_segment_files_records_a_failed_image_and_keeps_the_others(tmp_path):
    grid = Grid(4.0, (6, 8, 5))
    good, blank = tmp_path / "sample-0000.nii.gz", tmp_path / "sample-0001.nii.gz"
    data = np.zeros(grid.shape, dtype=np.float32)
    nib.save(grid.image(data), blank)  # a blank synthetic sample
    data[1:3, 2:5, 1:4] = 1.0
    nib.save(grid.image(data), good)
    table = segment_files(
        {"sample-0000": good, "sample-0001": blank}, FixedSegmenter(), tmp_path / "v.tsv", progress=False
    )
    assert table["gm_ml"].iloc[0] == 18.0 and np.isnan(table["gm_ml"].iloc[1])
    assert (
        "sample-0001" in table["segmentation_error"].iloc[1]
        and "empty" in table["segmentation_error"].iloc[1]
    )
