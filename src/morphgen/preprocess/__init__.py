"""Per-subject preprocessing of raw T1 volumes to the working grid, with quality control.

Each step is a small function usable alone; :func:`preprocess_subject` chains them and writes the outputs.
"""

from morphgen.preprocess.bias import n4_correct
from morphgen.preprocess.intensity import scale_to_unit
from morphgen.preprocess.orient import axcodes, to_ras
from morphgen.preprocess.pipeline import STEPS, check_preprocessing_config, preprocess_subject
from morphgen.preprocess.qc import (
    apply_qc_gate,
    check_qc_config,
    collect_qc,
    masked_correlation,
    qc_flag,
    registration_ncc,
)
from morphgen.preprocess.register import register_to_mni
from morphgen.preprocess.resample import mask_to_grid, native_to_grid
from morphgen.preprocess.skullstrip import brain_mask, deepbet_mask, robex_mask, threshold_mask

__all__ = [
    "STEPS",
    "apply_qc_gate",
    "axcodes",
    "brain_mask",
    "check_preprocessing_config",
    "check_qc_config",
    "collect_qc",
    "deepbet_mask",
    "mask_to_grid",
    "masked_correlation",
    "n4_correct",
    "native_to_grid",
    "preprocess_subject",
    "qc_flag",
    "register_to_mni",
    "registration_ncc",
    "robex_mask",
    "scale_to_unit",
    "threshold_mask",
    "to_ras",
]
