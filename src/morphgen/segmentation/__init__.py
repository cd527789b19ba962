"""Segmentation-based volumetry: one interface, two back-ends (ANTs Atropos by default, ONNX SynthSeg).

The back-ends are imported on first use (``AtroposSegmenter`` pulls in ANTs, ``OnnxSynthSegSegmenter``
onnxruntime).
"""

from __future__ import annotations

from morphgen.segmentation.backends import make_segmenter
from morphgen.segmentation.base import (
    CORE_VOLUMES,
    TISSUE_LABELS,
    Segmentation,
    Segmenter,
    derive_brain_mask,
)
from morphgen.segmentation.volumes import segment_files, volumes_row

__all__ = [
    "CORE_VOLUMES",
    "TISSUE_LABELS",
    "AtroposSegmenter",
    "OnnxSynthSegSegmenter",
    "Segmentation",
    "Segmenter",
    "derive_brain_mask",
    "make_segmenter",
    "segment_files",
    "volumes_row",
]


def __getattr__(name: str):
    if name == "AtroposSegmenter":
        from morphgen.segmentation.atropos import AtroposSegmenter

        return AtroposSegmenter
    if name == "OnnxSynthSegSegmenter":
        from morphgen.segmentation.onnx_synthseg import OnnxSynthSegSegmenter

        return OnnxSynthSegSegmenter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
