"""The segmentation back-end a config names, imported on first use (Atropos pulls in ANTs, the ONNX
SynthSeg back-end onnxruntime)."""

from __future__ import annotations

from morphgen.errors import ConfigError
from morphgen.segmentation.base import Segmenter


def make_segmenter(cfg: dict) -> Segmenter:
    """The back-end named by ``config['segmentation']`` (pass either that section or the whole config).

    ``backend: atropos`` uses the ``atropos`` sub-section (prior_weight, mrf, iterations); ``backend: onnx``
    needs ``onnx_model`` and ``onnx_sha256`` (weights without a checksum are refused).
    """
    seg = cfg.get("segmentation", cfg)
    backend = seg.get("backend", "atropos")
    if backend == "atropos":
        from morphgen.segmentation.atropos import AtroposSegmenter

        opts = dict(seg.get("atropos") or {})
        opts.pop("generated_intensities", None)  # the workflow's choice: see generated_intensities()
        known = {
            "prior_weight",
            "mrf",
            "iterations",
            "partial_volume",
            "mask_threshold",
            "edge_voxels",
            "atlas_weight",
        }
        unknown = set(opts) - known
        if unknown:
            raise ConfigError(
                f"segmentation.atropos: unknown keys {sorted(unknown)} (known: {sorted(known)})"
            )
        return AtroposSegmenter(**opts)
    if backend == "onnx":
        from morphgen.segmentation.onnx_synthseg import OnnxSynthSegSegmenter

        if not seg.get("onnx_model"):
            raise ConfigError("segmentation.backend is onnx but segmentation.onnx_model is not set")
        kwargs = {}
        if seg.get("onnx_labels") is not None:
            kwargs["label_order"] = tuple(int(v) for v in seg["onnx_labels"])
        if "onnx_voxel_size" in seg:
            kwargs["voxel_size_mm"] = seg["onnx_voxel_size"]
        return OnnxSynthSegSegmenter(seg["onnx_model"], seg.get("onnx_sha256"), **kwargs)
    raise ConfigError(f"segmentation.backend {backend!r} is not one of: atropos, onnx")
