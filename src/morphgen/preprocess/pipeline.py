"""One subject from a raw T1 file to a brain on the working grid, with its mask and QC."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from morphgen.antsio import set_itk_threads
from morphgen.errors import ConfigError, SubjectError
from morphgen.nifti import atomic_output, load_volume, save_volume
from morphgen.preprocess.bias import n4_correct
from morphgen.preprocess.intensity import scale_to_unit
from morphgen.preprocess.orient import axcodes, to_ras
from morphgen.preprocess.qc import registration_ncc, tissue_intensities, write_qc_png, write_qc_tsv
from morphgen.preprocess.register import check_transform_type, register_to_mni
from morphgen.preprocess.resample import mask_to_grid, native_to_grid
from morphgen.preprocess.skullstrip import METHODS, brain_mask
from morphgen.resample import voxel_sizes
from morphgen.space import Grid
from morphgen.templates import mni_brain_mask, mni_t1, mni_tissue_priors

STEPS = ("load", "reorient", "n4", "skull_strip", "register", "resample", "intensity", "write")


def check_preprocessing_config(cfg: dict) -> dict:
    """Validated copy of ``config['preprocessing']``; raises :class:`ConfigError` naming the bad key."""
    try:
        out = {
            "n4": bool(cfg["n4"]),
            "skull_strip": str(cfg["skull_strip"]),
            "registration": str(cfg["registration"]),
            "intensity_percentile": float(cfg["intensity_percentile"]),
        }
    except KeyError as exc:
        raise ConfigError(f"preprocessing.{exc.args[0]} is missing from the configuration") from exc
    if out["skull_strip"] not in METHODS:
        raise ConfigError(f"preprocessing.skull_strip must be one of {METHODS}, got {out['skull_strip']!r}")
    check_transform_type(out["registration"])
    if not 50.0 < out["intensity_percentile"] <= 100.0:
        raise ConfigError(
            f"preprocessing.intensity_percentile must be in (50, 100], got {out['intensity_percentile']}"
        )
    return out


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fmt(values) -> str:
    return "x".join(f"{float(v):g}" for v in values)


def preprocess_subject(
    subject: str,
    in_path: str | Path,
    grid: Grid,
    cfg: dict,
    out_image: str | Path,
    out_mask: str | Path,
    out_qc_png: str | Path,
    out_qc_tsv: str | Path,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Preprocess one raw T1: RAS+ reorientation, N4, skull stripping, affine registration to MNI152,
    resampling onto ``grid`` and scaling to [0, 1].

    Writes ``out_image`` (float32, [0, 1], zero outside the brain), ``out_mask`` (uint8), both with
    ``grid.affine``; ``out_qc_png`` (three planes with outlines) and ``out_qc_tsv`` (one row). All four appear
    together or, on error, none does. Returns the QC row. Raises :class:`SubjectError` naming the subject and
    ``in_path`` when the input cannot be processed, :class:`ConfigError` for a bad ``cfg``.
    """
    from tqdm import tqdm

    cfg = check_preprocessing_config(cfg)
    outputs = [Path(p) for p in (out_image, out_mask, out_qc_png, out_qc_tsv)]
    for path in outputs:  # a failed run must not leave an older run's files looking current
        path.unlink(missing_ok=True)
    set_itk_threads(threads)
    seconds: dict[str, float] = {}
    bar = tqdm(
        total=len(STEPS), desc=f"preprocess {subject}", disable=not progress, file=sys.stderr, leave=False
    )
    step = STEPS[0]
    start = clock = time.perf_counter()

    def done(name: str) -> None:
        nonlocal clock, step
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now
        bar.update(1)
        if name != STEPS[-1]:
            step = STEPS[STEPS.index(name) + 1]
            bar.set_postfix_str(step)

    try:
        with _torch_threads(threads):
            raw = load_volume(in_path, subject)
            done("load")
            img = to_ras(raw)
            done("reorient")
            if cfg["n4"]:
                img = n4_correct(img)
            done("n4")
            native_mask = brain_mask(img, cfg["skull_strip"])
            if not native_mask.any():
                raise SubjectError(subject, in_path, f"skull stripping ({cfg['skull_strip']}) found no brain")
            brain = np.where(native_mask, np.asarray(img.dataobj, dtype=np.float32), 0.0).astype(np.float32)
            done("skull_strip")
            mni_to_native = register_to_mni(brain, img.affine, cfg["registration"])
            done("register")
            image = native_to_grid(brain, img.affine, mni_to_native, grid)
            mask = mask_to_grid(native_mask, img.affine, mni_to_native, grid)
            if not mask.any():
                raise SubjectError(
                    subject, in_path, "the brain does not overlap the working grid after registration"
                )
            done("resample")
            image = scale_to_unit(image, mask, cfg["intensity_percentile"])
            done("intensity")

            native_voxel_ml = abs(float(np.linalg.det(img.affine[:3, :3]))) / 1000.0
            reference_mask = mni_brain_mask(grid)
            row = {
                "participant_id": subject,
                "input_file": str(in_path),
                "input_shape": "x".join(str(s) for s in raw.shape[:3]),
                "input_voxel_mm": _fmt(voxel_sizes(raw.affine)),
                "input_orientation": axcodes(raw),
                "skull_strip": cfg["skull_strip"],
                "registration": cfg["registration"],
                "brain_volume_native_ml": float(native_mask.sum()) * native_voxel_ml,
                "brain_volume_grid_ml": float(mask.sum()) * grid.voxel_volume_ml,
                "affine_det": float(np.linalg.det(mni_to_native[:3, :3])),
                "registration_ncc": registration_ncc(
                    image, mni_t1(grid).get_fdata(), reference_mask, grid.voxel_size
                ),
            }
            overlap = 2.0 * float((mask & reference_mask).sum())
            row["mask_dice_mni"] = overlap / max(1.0, float(mask.sum() + reference_mask.sum()))
            intensities = tissue_intensities(image, mask, mni_tissue_priors(grid))
            row.update({f"intensity_{tissue}": value for tissue, value in intensities.items()})
            title = (
                f"{subject}: brain {row['brain_volume_native_ml']:.0f} ml, det {row['affine_det']:.2f}, "
                f"NCC with MNI {row['registration_ncc']:.3f}, mask Dice {row['mask_dice_mni']:.2f}\n"
                f"median intensity WM {intensities['wm']:.2f}, GM {intensities['gm']:.2f}, "
                f"CSF {intensities['csf']:.2f}"
            )
            with contextlib.ExitStack() as stack:
                tmp_image, tmp_mask, tmp_png, tmp_tsv = (
                    stack.enter_context(atomic_output(p)) for p in outputs
                )
                save_volume(
                    tmp_image, image, grid.affine, dtype=np.float32, description=f"morphgen {subject}"
                )
                save_volume(
                    tmp_mask, mask, grid.affine, dtype=np.uint8, description=f"morphgen mask {subject}"
                )
                write_qc_png(
                    tmp_png,
                    image,
                    mask,
                    title,
                    grid.voxel_size,
                    reference_mask,
                )
                done("write")
                row.update({f"seconds_{name}": round(seconds.get(name, 0.0), 3) for name in STEPS})
                row["seconds_total"] = round(time.perf_counter() - start, 3)
                write_qc_tsv(tmp_tsv, row)
                # leaving the stack renames the four files into place
    except (SubjectError, ConfigError):
        raise
    except Exception as exc:
        raise SubjectError(subject, in_path, f"preprocessing step {step!r} failed: {exc}") from exc
    finally:
        bar.close()
    return row


def write_failed_subject(
    subject: str,
    in_path: str | Path,
    problem: str,
    grid: Grid,
    out_image: str | Path,
    out_mask: str | Path,
    out_qc_png: str | Path,
    out_qc_tsv: str | Path,
) -> dict:
    """The outputs of a subject whose preprocessing failed (``input.on_error: exclude``): an empty image and
    mask on ``grid`` (placeholders: the QC table excludes the subject), a PNG and a QC row naming the problem.
    Returns the QC row."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    row = {"participant_id": subject, "input_file": str(in_path), "preprocessing_error": problem}
    empty = np.zeros(grid.shape, dtype=np.float32)
    outputs = [Path(p) for p in (out_image, out_mask, out_qc_png, out_qc_tsv)]
    with contextlib.ExitStack() as stack:
        tmp_image, tmp_mask, tmp_png, tmp_tsv = (stack.enter_context(atomic_output(p)) for p in outputs)
        save_volume(tmp_image, empty, grid.affine, dtype=np.float32, description=f"morphgen FAILED {subject}")
        save_volume(tmp_mask, empty, grid.affine, dtype=np.uint8, description=f"morphgen FAILED {subject}")
        fig = plt.figure(figsize=(12, 2))
        fig.text(0.02, 0.5, f"{subject}: preprocessing failed, excluded\n{in_path}\n{problem}", va="center")
        try:
            fig.savefig(tmp_png, format="png", dpi=80)
        finally:
            plt.close(fig)
        write_qc_tsv(tmp_tsv, row)
    return row
