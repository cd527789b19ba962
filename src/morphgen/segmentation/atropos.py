"""Default back-end: ANTs Atropos (3 classes) with MNI152 tissue priors, and partial-volume tissue volumes."""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from morphgen.antsio import to_ants
from morphgen.errors import ConfigError
from morphgen.segmentation.base import (
    TISSUES,
    Segmentation,
    Segmenter,
    check_mask,
    image_data,
    labels_from_probabilities,
    tissue_volumes,
    voxel_volume_ml,
)
from morphgen.segmentation.mni_atlas import mni_atlas
from morphgen.segmentation.partial_volume import fit_partial_volume

# Prior of background (vs tissue) in the rim of the mask. Tuned on 4 mm phantoms built from the MNI maps:
# lower values read the brain's rim (background/GM mixes, intensity like CSF) as CSF.
EDGE_BACKGROUND_PRIOR = 0.9


@contextlib.contextmanager
def _private_tempdir() -> Iterator[None]:
    """ants.atropos writes its posteriors to tempfile's folder and never deletes them: give it its own."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="morphgen-atropos-") as tmp:
        tempfile.tempdir = tmp
        try:
            yield
        finally:
            tempfile.tempdir = saved


class AtroposSegmenter(Segmenter):
    """Atropos GM/WM/CSF segmentation initialised and constrained by MNI152 2009 tissue priors.

    The image must be in MNI space (any voxel grid; priors are resampled to it). Atropos runs inside the
    brain mask with ``PriorProbabilityImages`` (csf, gm, wm) of weight ``prior_weight``, MRF ``mrf`` and
    ``iterations`` iterations; its posteriors are ``Segmentation.probabilities`` and their argmax the labels.

    Volumes: with ``partial_volume`` (default) they are sums of partial-volume fractions
    (:mod:`morphgen.segmentation.partial_volume`): a mixel model whose spatial prior is
    ``atlas_weight`` x MNI prior + (1 - ``atlas_weight``) x Atropos posterior, and which may mix in
    background only within ``edge_voxels`` of the mask border. Otherwise they are sums of the posteriors
    inside the mask. Posteriors alone badly miss sub-voxel CSF: on a 4 mm phantom they report ~2x the true
    CSF and see only 2 of 10 ml added to the ventricles.

    Ventricles are defined as the CSF (fraction, or posterior) inside morphgen.templates.ventricle_roi: the
    MNI lateral ventricles dilated by 6 mm, within the mask. This includes the third ventricle's upper part
    and excludes the temporal horns.

    The mixel model fits each image's tissue intensities, which is right for real scans. A generator's image
    may lack a tissue's intensity altogether (a smooth decoder makes sulcal CSF grey): the fit then swaps CSF
    and GM and the volumes invert. ``tissue_intensities`` (csf, gm, wm, sigma; :meth:`with_reference`, from
    the real cohort) are then used as they are, so every image is unmixed on the real cohort's scale.
    """

    def __init__(
        self,
        prior_weight: float = 0.25,
        mrf: str = "[0.1,1x1x1]",
        iterations: int = 5,
        partial_volume: bool = True,
        mask_threshold: float = 0.05,
        edge_voxels: int = 2,
        atlas_weight: float = 0.75,
    ):
        self.prior_weight = float(prior_weight)
        self.mrf = str(mrf)
        self.iterations = int(iterations)
        self.partial_volume = bool(partial_volume)
        self.mask_threshold = float(mask_threshold)
        self.edge_voxels = int(edge_voxels)
        self.atlas_weight = float(atlas_weight)
        self.tissue_intensities: dict[str, float] | None = None  # see with_reference
        self.reference_affine = False

    def with_reference(self, intensities: dict[str, float], affine: bool = False) -> AtroposSegmenter:
        fixed = copy.copy(self)
        fixed.tissue_intensities = checked_intensities(intensities)
        fixed.reference_affine = bool(affine)
        return fixed

    def posteriors(
        self, data: np.ndarray, affine: np.ndarray, mask: np.ndarray, priors: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Atropos posteriors (csf, gm, wm), zero outside ``mask``."""
        import ants

        with _private_tempdir():
            out = ants.atropos(
                a=to_ants(data, affine),
                x=to_ants(mask.astype(np.float32), affine),
                i=[to_ants(priors[t], affine) for t in TISSUES],  # the prior order is the class order
                m=self.mrf,
                c=f"[{self.iterations},0]",
                priorweight=self.prior_weight,
                r=0,  # --use-random-seed 0: a constant seed; ANTs' default reseeds from the clock every run
            )
        images = out["probabilityimages"]
        if len(images) != len(TISSUES):
            raise RuntimeError(f"Atropos returned {len(images)} posterior images, expected {len(TISSUES)}")
        return {t: (img.numpy().astype(np.float32) * mask) for t, img in zip(TISSUES, images, strict=True)}

    def fractions(
        self,
        data: np.ndarray,
        mask: np.ndarray,
        priors: dict[str, np.ndarray],
        posteriors: dict[str, np.ndarray],
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Partial-volume csf, gm, wm fractions inside ``mask`` (see the class docstring), and the tissue
        intensities they were unmixed with."""
        atlas = np.stack([priors[t] for t in TISSUES])[:, mask]
        post = np.stack([posteriors[t] for t in TISSUES])[:, mask]
        spatial = self.atlas_weight * atlas / np.clip(atlas.sum(0), 1e-6, None)
        spatial += (1.0 - self.atlas_weight) * post / np.clip(post.sum(0), 1e-6, None)
        interior = ndi.binary_erosion(mask, iterations=self.edge_voxels) if self.edge_voxels > 0 else mask
        edge = (mask & ~interior)[mask].astype(np.float64)
        bg = EDGE_BACKGROUND_PRIOR * edge
        prior = np.concatenate([bg[None], spatial * (1.0 - bg)[None]]) + 1e-4
        x = data[mask]
        if self.tissue_intensities is not None:  # the reference's intensities, not re-estimated
            ref = self.tissue_intensities
            means = tuple(ref[t] for t in TISSUES)
            if self.reference_affine:  # the reference's contrast up to an affine map fitted to this image
                fit = fit_partial_volume(x, prior, means, sigma=ref["sigma"], affine=True)
            else:
                fit = fit_partial_volume(x, prior, means, sigma=ref["sigma"], n_iter=1)
        else:
            # start from the posterior-weighted class means (T1 defaults for an empty class)
            weights = post.sum(axis=1)
            defaults = (0.2, 0.6, 1.0)
            means = tuple(
                float(post[k] @ x / weights[k]) if weights[k] > 0 else defaults[k] for k in range(3)
            )
            fit = fit_partial_volume(x, prior, means)
        out = {}
        for k, t in enumerate(TISSUES):
            vol = np.zeros(data.shape, dtype=np.float32)
            vol[mask] = fit.fractions[k + 1]
            out[t] = vol
        intensities = {t: float(fit.means[k + 1]) for k, t in enumerate(TISSUES)}
        return out, {**intensities, "sigma": float(fit.sigma)}

    def segment(self, image: nib.Nifti1Image, mask: np.ndarray | None = None) -> Segmentation:
        data = image_data(image)
        mask = check_mask(mask, data, self.mask_threshold)
        priors, ventricle_region = mni_atlas(image.affine, data.shape)
        posteriors = self.posteriors(data, image.affine, mask, priors)
        labels = labels_from_probabilities(posteriors, mask)
        fractions, intensities = (
            self.fractions(data, mask, priors, posteriors) if self.partial_volume else (None, None)
        )
        amounts = fractions if fractions is not None else posteriors
        voxel_ml = voxel_volume_ml(image.affine)
        ventricles = float(np.sum(amounts["csf"][ventricle_region & mask], dtype=np.float64)) * voxel_ml
        return Segmentation(
            probabilities=posteriors,
            labels=labels,
            volumes_ml=tissue_volumes(amounts, voxel_ml, ventricles),
            fractions=fractions,
            intensities=intensities,
        )


def checked_intensities(intensities: dict[str, float]) -> dict[str, float]:
    """``intensities`` as floats, refused unless 0 < csf < gm < wm (T1) and sigma > 0."""
    try:
        out = {k: float(intensities[k]) for k in (*TISSUES, "sigma")}
    except KeyError as exc:
        raise ConfigError(
            f"tissue intensities need csf, gm, wm and sigma, got {sorted(intensities)}"
        ) from exc
    if not (0 < out["csf"] < out["gm"] < out["wm"] and out["sigma"] > 0):
        raise ConfigError(f"tissue intensities must satisfy 0 < csf < gm < wm (T1) and sigma > 0, got {out}")
    return out
