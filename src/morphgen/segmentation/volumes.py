"""Segment many images with one back-end and write their volumes as one TSV (and label maps on request)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from morphgen.errors import ConfigError, SubjectError
from morphgen.nifti import load_volume, save_volume
from morphgen.segmentation.base import CORE_VOLUMES, Segmentation, Segmenter
from morphgen.tsv import write_tsv

LOG = logging.getLogger(__name__)

ID_COLUMN = "participant_id"
LABELS_DESCRIPTION = "morphgen tissue labels: 0 background, 1 csf, 2 gm, 3 wm"
# Segmentation.intensities key -> volumes table column
INTENSITY_COLUMNS = {
    "csf": "csf_intensity",
    "gm": "gm_intensity",
    "wm": "wm_intensity",
    "sigma": "intensity_sigma",
}


def volumes_row(subject_id: str, seg: Segmentation) -> dict:
    """A TSV row: participant_id, gm_ml, wm_ml, csf_ml, ventricles_ml, brain_ml, then regional ``*_ml``,
    then the tissue intensities of the unmixing (:data:`INTENSITY_COLUMNS`) when the back-end has them."""
    row: dict = {ID_COLUMN: str(subject_id)}
    names = list(CORE_VOLUMES) + [k for k in seg.volumes_ml if k not in CORE_VOLUMES]
    for name in names:
        row[f"{name}_ml"] = round(float(seg.volumes_ml.get(name, np.nan)), 4)
    for key, column in INTENSITY_COLUMNS.items():
        if seg.intensities is not None and key in seg.intensities:
            row[column] = round(float(seg.intensities[key]), 5)
    return row


def _intensity_table(table: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """The :data:`INTENSITY_COLUMNS` of a real volumes table, by subject, without the subjects whose
    segmentation failed; errors name ``source``."""
    missing = [c for c in INTENSITY_COLUMNS.values() if c not in table.columns]
    if missing:
        raise ConfigError(
            f"{source} has no tissue intensities ({missing}): made by another segmentation back-end or "
            "an older morphgen; segment the real images again (snakemake --forcerun segment_real)"
        )
    values = table.set_index(table[ID_COLUMN].astype(str))[list(INTENSITY_COLUMNS.values())]
    values = values.apply(pd.to_numeric, errors="coerce").dropna()
    if values.empty:
        raise ConfigError(f"{source}: no subject has tissue intensities (every segmentation failed?)")
    return values


def reference_intensities(table: pd.DataFrame, source: str | Path) -> dict[str, float]:
    """The real cohort's tissue intensities: the median over ``table``'s subjects (a real volumes table,
    ``source`` names it in errors) of each :data:`INTENSITY_COLUMNS` column."""
    values = _intensity_table(table, source)
    return {key: float(values[column].median()) for key, column in INTENSITY_COLUMNS.items()}


def subject_intensities(table: pd.DataFrame, source: str | Path) -> dict[str, dict[str, float]]:
    """Each real subject's own tissue intensities (subject -> csf, gm, wm, sigma) from ``table``, a real
    volumes table (``source`` names it in errors); subjects whose segmentation failed are left out.

    A reconstruction is unmixed with its own subject's: on a cohort of several scanners the cohort's median
    (:func:`reference_intensities`) misreads each subject's contrast, so that even a perfect reconstruction
    would not measure its subject's volumes.
    """
    values = _intensity_table(table, source)
    return {
        subject: {key: float(row[column]) for key, column in INTENSITY_COLUMNS.items()}
        for subject, row in values.iterrows()
    }


def label_path(out_label_dir: str | Path, subject_id: str) -> Path:
    """Where :func:`segment_files` writes a subject's label map."""
    return Path(out_label_dir) / f"{subject_id}_dseg.nii.gz"


def label_maps(folders) -> dict[str, Path]:
    """Subject -> label map, of every :func:`label_path` file in ``folders`` (those segment_files wrote)."""
    maps = {}
    for folder in [folders] if isinstance(folders, (str, Path)) else folders:
        for path in sorted(Path(folder).glob("*_dseg.nii.gz")):
            maps[path.name.removesuffix("_dseg.nii.gz")] = path
    return maps


def probability_path(out_label_dir: str | Path, subject_id: str, tissue: str) -> Path:
    """Where :func:`segment_files` writes a subject's ``csf``/``gm``/``wm`` probability map (BIDS probseg)."""
    return Path(out_label_dir) / f"{subject_id}_label-{tissue.upper()}_probseg.nii.gz"


def _with_own(segmenter: Segmenter, intensities: Mapping, subject_id: str, path) -> Segmenter:
    if subject_id not in intensities:
        raise SubjectError(subject_id, path, "no tissue intensities of its real image to unmix it with")
    try:
        return segmenter.with_reference(intensities[subject_id], affine=True)
    except ConfigError as exc:
        raise SubjectError(subject_id, path, f"its real image's tissue intensities: {exc}") from exc


def segment_files(
    images: Mapping[str, str | Path],
    segmenter: Segmenter,
    out_tsv: str | Path,
    out_label_dir: str | Path | None = None,
    progress: bool = True,
    masks: Mapping[str, str | Path] | None = None,
    on_error: str = "record",
    intensities: Mapping[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Segment every image (id -> path) and write the volumes TSV atomically; return the table.

    The id column is ``participant_id`` for real subjects and synthetic samples alike (the value is the sample
    id). Label maps (uint8, 0 bg / 1 csf / 2 gm / 3 wm, the image's affine) go to
    ``out_label_dir/<id>_dseg.nii.gz`` when a folder is given, with the tissue probability maps beside them
    (:func:`probability_path`; VBM reads the grey-matter map). ``masks`` (id -> brain mask file) is optional;
    images without one get a mask derived from the image. A failure names the subject and its file: with
    ``on_error="record"`` (default) its volumes are NaN and the reason is in the ``segmentation_error`` column
    (e.g. a blank synthetic sample), so one image does not lose the others; ``"raise"`` stops at it.
    ``intensities`` (id -> tissue intensities, :func:`subject_intensities`) unmixes each image with its own
    (a reconstruction: its subject's) up to an affine map fitted to the image, so that a decoder that changes
    only the scanner's contrast still measures its subject's anatomy; an image without an entry is an error
    of that image.
    """
    if out_label_dir is not None:
        Path(out_label_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for subject_id, path in tqdm(
        images.items(), desc="segmenting", unit="image", file=sys.stderr, disable=not progress
    ):
        try:
            image = load_volume(path, subject=subject_id)
            mask = None
            if masks is not None and subject_id in masks:
                mask = np.asanyarray(load_volume(masks[subject_id], subject=subject_id).dataobj) > 0.5
            used = segmenter if intensities is None else _with_own(segmenter, intensities, subject_id, path)
            try:
                seg = used.segment(image, mask)
            except SubjectError:
                raise
            except Exception as exc:  # any back-end failure: say whose image it was
                raise SubjectError(subject_id, path, f"segmentation failed: {exc}") from exc
        except SubjectError as exc:
            if on_error == "raise":
                raise
            LOG.warning("%s", exc)
            rows.append({ID_COLUMN: subject_id, "segmentation_error": str(exc)})
            continue
        if out_label_dir is not None:
            save_volume(
                label_path(out_label_dir, subject_id),
                seg.labels,
                image.affine,
                dtype=np.uint8,
                description=LABELS_DESCRIPTION,
            )
            for tissue, prob in seg.probabilities.items():
                save_volume(
                    probability_path(out_label_dir, subject_id, tissue),
                    prob,
                    image.affine,
                    description=f"morphgen {tissue} probability",
                )
        rows.append(volumes_row(subject_id, seg))
    columns = [ID_COLUMN] + [f"{name}_ml" for name in CORE_VOLUMES]
    for row in rows:
        columns += [c for c in row if c not in columns]
    table = pd.DataFrame(rows, columns=columns)
    write_tsv(table, out_tsv)
    return table
