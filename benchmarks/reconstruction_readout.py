"""How a finished run's test reconstructions are read into volumes (for BENCHMARKS.md).

Per tissue, r, slope and bias against the real segmentation (``volumes/real.tsv``) of:
- the real test images themselves, i.e. a perfect autoencoder, unmixed with the cohort's median tissue
  intensities and with each subject's own;
- the real test images blurred by ``--blur`` voxels (each sigma), with each subject's own intensities;
- the reconstructions, with the cohort's median, with their subject's, with their own fit, and with their own
  fit unless it is out of order (CSF < GM < WM), then their subject's.

usage: python benchmarks/reconstruction_readout.py results [--blur 0.5 1.0 1.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from morphgen.preprocess.derivatives import find_preprocessed
from morphgen.segmentation.atropos import AtroposSegmenter
from morphgen.segmentation.volumes import reference_intensities, subject_intensities
from morphgen.tsv import read_tsv

TISSUES = ("gm", "wm", "csf", "ventricles")


def agreement(real: pd.Series, measured: pd.Series) -> str:
    r = np.corrcoef(real, measured)[0, 1]
    slope = np.polyfit(real, measured, 1)[0]
    return f"r {r:+.2f} slope {slope:+.2f} bias {100 * (measured.mean() / real.mean() - 1):+4.0f}%"


def readout(results: Path, blur: list[float]) -> pd.DataFrame:
    """One row per (reading, subject): the volumes of each tissue."""
    source = results / "volumes/real.tsv"
    real_table = read_tsv(source)
    segmenter = AtroposSegmenter()
    median = segmenter.with_reference(reference_intensities(real_table, source))
    own = subject_intensities(real_table, source)
    folder = results / "models/autoencoder/reconstructions"
    rows = []
    for path in sorted(folder.glob("*.nii.gz")):
        subject = path.name.removesuffix(".nii.gz")
        image = nib.load(find_preprocessed(results, subject))
        mask = np.asanyarray(nib.load(find_preprocessed(results, subject, "mask")).dataobj) > 0.5
        recon = nib.load(path)
        theirs = segmenter.with_reference(own[subject])
        anchored = segmenter.with_reference(own[subject], affine=True)  # as the pipeline reads them
        readings = {
            "perfect, cohort median": median.segment(image, mask),
            "perfect, subject's": theirs.segment(image, mask),
            "reconstruction, cohort median": median.segment(recon, mask),
            "reconstruction, subject's": theirs.segment(recon, mask),
            "reconstruction, own fit": segmenter.segment(recon, mask),
            "perfect, subject's up to an affine map": anchored.segment(image, mask),
            "reconstruction, subject's up to an affine map": anchored.segment(recon, mask),
        }
        fit = readings["reconstruction, own fit"].intensities
        ordered = 0 < fit["csf"] < fit["gm"] < fit["wm"]
        readings["reconstruction, own fit unless out of order"] = (
            readings["reconstruction, own fit"] if ordered else readings["reconstruction, subject's"]
        )
        data = image.get_fdata(dtype=np.float32)
        for sigma in blur:
            blurred = nib.Nifti1Image(ndi.gaussian_filter(data, sigma), image.affine)
            readings[f"real blurred {sigma:g} voxels, subject's"] = theirs.segment(blurred, mask)
        for reading, seg in readings.items():
            volumes = {t: seg.volumes_ml[t] for t in TISSUES}
            rows.append({"reading": reading, "participant_id": subject, **volumes})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--blur", type=float, nargs="*", default=[0.5, 1.0, 1.5], help="Gaussian sigmas in voxels"
    )
    args = parser.parse_args()
    table = readout(args.results, args.blur)
    real = read_tsv(args.results / "volumes/real.tsv").set_index("participant_id")
    print(f"{table['participant_id'].nunique()} test subjects of {args.results}")
    for reading, rows in table.groupby("reading", sort=False):
        rows = rows.set_index("participant_id")
        print(reading)
        for tissue in TISSUES:
            print(f"  {tissue:>10}: {agreement(real.loc[rows.index, f'{tissue}_ml'], rows[tissue])}")


if __name__ == "__main__":
    main()
