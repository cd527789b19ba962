"""Why generated images are unmixed with the real cohort's tissue intensities (for BENCHMARKS.md).

On a finished run's test reconstructions: each image's own intensity fit, the ventricles it measures and those
measured with the real cohort's intensities, against the real volumes; the real test images blurred by
``--blur`` voxels with their own fit; and the darkness summed over the ventricle region (1 - intensity), which
needs no segmentation.

usage: python benchmarks/generated_intensities.py results [--blur 1.2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from morphgen.preprocess.derivatives import find_preprocessed
from morphgen.segmentation.atropos import AtroposSegmenter
from morphgen.segmentation.base import TISSUES
from morphgen.segmentation.mni_atlas import mni_atlas
from morphgen.segmentation.volumes import reference_intensities
from morphgen.tsv import read_tsv


def darkness(image: nib.Nifti1Image) -> float:
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    _, region = mni_atlas(image.affine, data.shape)
    return float(np.sum(np.clip(1.0 - data[region], 0.0, 1.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--blur", type=float, default=1.2, help="Gaussian sigma in voxels for the real images"
    )
    args = parser.parse_args()
    r = args.results
    real = read_tsv(r / "volumes/real.tsv").set_index("participant_id")
    own_seg = AtroposSegmenter()
    ref_seg = own_seg.with_reference(reference_intensities(real.reset_index(), r / "volumes/real.tsv"))
    ids = sorted(
        p.name.removesuffix(".nii.gz") for p in (r / "models/autoencoder/reconstructions").glob("*.nii.gz")
    )
    cols = {k: [] for k in ("real", "own", "reference", "blurred_real", "dark_recon", "dark_real")}
    intensities = []
    for s in ids:
        image = nib.load(find_preprocessed(r, s))
        mask = np.asanyarray(nib.load(find_preprocessed(r, s, "mask")).dataobj) > 0.5
        recon = nib.load(r / "models/autoencoder/reconstructions" / f"{s}.nii.gz")
        own = own_seg.segment(recon, mask)
        intensities.append([own.intensities[t] for t in TISSUES])
        blurred = nib.Nifti1Image(
            ndi.gaussian_filter(image.get_fdata().astype(np.float32), args.blur), image.affine
        )
        cols["real"].append(real.loc[s, "ventricles_ml"])
        cols["own"].append(own.volumes_ml["ventricles"])
        cols["reference"].append(ref_seg.segment(recon, mask).volumes_ml["ventricles"])
        cols["blurred_real"].append(own_seg.segment(blurred, mask).volumes_ml["ventricles"])
        cols["dark_recon"].append(darkness(recon))
        cols["dark_real"].append(darkness(image))
    print(f"{len(ids)} test subjects of {r}")
    print(
        "real scans' median intensities (csf, gm, wm):",
        [round(float(real[f"{t}_intensity"].median()), 3) for t in TISSUES],
    )
    print(
        "reconstructions' own fit, median (csf, gm, wm):",
        np.round(np.median(intensities, axis=0), 3).tolist(),
    )
    for name in ("own", "reference", "blurred_real", "dark_recon", "dark_real"):
        values = np.asarray(cols[name])
        r_value = np.corrcoef(cols["real"], values)[0, 1]
        span = f"{values.min():.1f}-{values.max():.1f}"
        print(f"{name:>13}: r = {r_value:+.2f} against the real ventricles; range {span}")


if __name__ == "__main__":
    main()
