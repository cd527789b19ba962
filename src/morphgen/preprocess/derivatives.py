"""The preprocessed cohort as a BIDS-derivatives dataset, named as fMRIPrep names its outputs, so that other
BIDS tools (pybids, nilearn, fMRIPrep's own readers) can find the images and masks."""

from __future__ import annotations

import json
from pathlib import Path

from morphgen import __version__
from morphgen.nifti import atomic_output

# nilearn's MNI152 (mni_icbm152_t1_tal_nlin_sym_09a), by its TemplateFlow name
TEMPLATE_SPACE = "MNI152NLin2009aSym"
BIDS_VERSION = "1.9.0"


def resolution_label(voxel_size: float) -> str:
    """The ``res`` entity of a grid: ``4mm``, ``1mm``, ``1p5mm`` (BIDS labels are alphanumeric)."""
    text = f"{float(voxel_size):g}".replace(".", "p")
    return f"{text}mm"


def space_entities(space_cfg: dict) -> str:
    """``space-<template>_res-<voxel size>`` of the working grid."""
    return f"space-{TEMPLATE_SPACE}_res-{resolution_label(space_cfg['voxel_size'])}"


def preprocessed_patterns(root: str, space_cfg: dict) -> dict[str, str]:
    """Paths of one subject's preprocessing outputs below ``root``, with a ``{subject}`` placeholder: the T1w
    image and brain mask (``anat/``), the QC figure (``figures/``) and the QC row."""
    return _patterns(root, space_entities(space_cfg))


def _patterns(root: str | Path, entities: str) -> dict[str, str]:
    folder = f"{root}/preprocessed/{{subject}}"
    return {
        "image": f"{folder}/anat/{{subject}}_{entities}_desc-preproc_T1w.nii.gz",
        "mask": f"{folder}/anat/{{subject}}_{entities}_desc-brain_mask.nii.gz",
        "qc_png": f"{folder}/figures/{{subject}}_{entities}_desc-qc_T1w.png",
        "qc_tsv": f"{folder}/{{subject}}_desc-qc_T1w.tsv",
    }


def find_preprocessed(results: str | Path, subject: str, kind: str = "image") -> Path:
    """The preprocessed image (``kind="image"``) or brain mask (``"mask"``) of ``subject`` in a results
    folder, whatever its grid."""
    pattern = Path(_patterns(results, "space-*")[kind].format(subject=subject))
    found = sorted(pattern.parent.glob(pattern.name))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one {kind} of {subject} in {Path(results) / 'preprocessed'}, found {len(found)}"
        )
    return found[0]


def dataset_description(source: str, space_cfg: dict, preprocessing_cfg: dict) -> dict:
    """``dataset_description.json`` of the preprocessed cohort."""
    steps = (
        f"RAS+ reorientation, {'N4 bias correction, ' if preprocessing_cfg.get('n4') else ''}"
        f"skull stripping ({preprocessing_cfg.get('skull_strip')}), {preprocessing_cfg.get('registration')} "
        f"registration to {TEMPLATE_SPACE}, resampling to {space_cfg['voxel_size']:g} mm "
        f"{'x'.join(str(s) for s in space_cfg['shape'])}, brain intensities scaled to [0, 1]"
    )
    return {
        "Name": "morphgen preprocessed T1w",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "morphgen", "Version": __version__, "Description": steps}],
        "SourceDatasets": [{"URL": source}],
    }


def write_dataset_description(
    path: str | Path, source: str, space_cfg: dict, preprocessing_cfg: dict
) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(dataset_description(source, space_cfg, preprocessing_cfg), indent=2) + "\n")
