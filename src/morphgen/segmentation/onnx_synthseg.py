"""Optional back-end: a SynthSeg-compatible network exported to ONNX, run by onnxruntime on the CPU.

Input contract (what the model receives):

* the image (already skull-stripped, in [0, 1]) resampled with linear interpolation onto an axis-aligned RAS
  grid of ``voxel_size_mm`` (1 mm, as SynthSeg expects) covering the image's field of view, or the image's
  own voxel grid when ``voxel_size_mm`` is None;
* rescaled like SynthSeg (0.5th / 99.5th percentiles to 0 / 1, clipped) when ``normalise``;
* zero-padded symmetrically so every side is a multiple of ``pad_multiple`` (32: SynthSeg's five levels);
* a float32 tensor of shape (1, 1, X, Y, Z), or (1, X, Y, Z, 1) with ``channels_last`` (Keras exports).

Output contract: one tensor (1, n_labels, X, Y, Z) (or channels last) of posteriors or logits (softmax is
applied unless the channels already sum to 1); channel c is the FreeSurfer label ``label_order[c]``, by
default SynthSeg 2.0's order. Labels are the argmax; volumes are counted on the model's grid (finer than 4 mm
grids), grouped as documented in :mod:`morphgen.segmentation.synthseg_labels`; the tissue probabilities and
labels are brought back onto the image's grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path

import nibabel as nib
import numpy as np

from morphgen.errors import ConfigError
from morphgen.resample import resample_array
from morphgen.segmentation.base import (
    TISSUE_LABELS,
    TISSUES,
    Segmentation,
    Segmenter,
    image_data,
    voxel_volume_ml,
)
from morphgen.segmentation.synthseg_labels import (
    STRUCTURES,
    SYNTHSEG_2_LABELS,
    TISSUE_OF_LABEL,
    VENTRICLE_LABELS,
    regional_groups,
)
from morphgen.weights import verify_sha256

MODEL_WHAT = "ONNX segmentation model (segmentation.onnx_model)"


@dataclass
class ModelInput:
    """The network input and where it lies: ``tensor[..., crop]`` is the grid ``affine`` / ``shape``."""

    tensor: np.ndarray
    affine: np.ndarray
    shape: tuple[int, int, int]
    crop: tuple[slice, slice, slice]


def model_grid(affine: np.ndarray, shape: tuple[int, ...], voxel_size_mm: float) -> tuple[np.ndarray, tuple]:
    """Axis-aligned RAS grid of ``voxel_size_mm`` covering the field of view of ``affine`` / ``shape``."""
    corners = np.array([[c - 0.5 for c in corner] for corner in product(*[(0, s) for s in shape])])
    world = corners @ np.asarray(affine, dtype=np.float64)[:3, :3].T + np.asarray(affine)[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    out_shape = tuple(int(n) for n in np.maximum(np.ceil((hi - lo) / voxel_size_mm - 1e-6), 1))
    out_affine = np.diag([voxel_size_mm] * 3 + [1.0])
    out_affine[:3, 3] = lo + voxel_size_mm / 2.0
    return out_affine, out_shape


def synthseg_rescale(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """SynthSeg's intensity normalisation: percentiles ``low`` / ``high`` of the volume to 0 / 1, clipped."""
    lo, hi = np.percentile(data, [low, high])
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return ((np.clip(data, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def prepare_input(
    data: np.ndarray,
    affine: np.ndarray,
    voxel_size_mm: float | None = 1.0,
    pad_multiple: int = 32,
    normalise: bool = True,
    channels_last: bool = False,
) -> ModelInput:
    """The tensor the network receives (see the module docstring) and the grid it covers."""
    if voxel_size_mm is None:
        grid_affine, grid_shape = np.asarray(affine, dtype=np.float64), tuple(data.shape)
        vol = np.asarray(data, dtype=np.float32)
    else:
        grid_affine, grid_shape = model_grid(affine, data.shape, float(voxel_size_mm))
        vol = resample_array(data, affine, grid_affine, grid_shape, order=1)
    if normalise:
        vol = synthseg_rescale(vol)
    padded = [int(np.ceil(s / pad_multiple)) * pad_multiple for s in grid_shape]
    before = [(p - s) // 2 for p, s in zip(padded, grid_shape, strict=True)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, grid_shape, strict=True))
    tensor = np.zeros(padded, dtype=np.float32)
    tensor[crop] = vol
    tensor = tensor[..., None][None] if channels_last else tensor[None, None]
    return ModelInput(tensor=tensor, affine=grid_affine, shape=grid_shape, crop=crop)


def _softmax_inplace(x: np.ndarray) -> np.ndarray:
    """Softmax over axis 0, in place on float32 (the output can be a gigabyte at 1 mm)."""
    x -= x.max(axis=0, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=0, keepdims=True)
    return x


class OnnxSynthSegSegmenter(Segmenter):
    """SynthSeg-compatible ONNX model (see the module docstring for the tensor contract).

    The sha256 of ``model_path`` is verified before onnxruntime opens it; a missing checksum is refused unless
    ``allow_unverified``. ``label_order`` maps output channels to FreeSurfer labels (SynthSeg 2.0 by default).
    A given brain mask restricts labels and volumes to it; without one the network's own background is used.
    """

    def __init__(
        self,
        model_path: str | Path,
        sha256: str | None,
        label_order: tuple[int, ...] = SYNTHSEG_2_LABELS,
        voxel_size_mm: float | None = 1.0,
        pad_multiple: int = 32,
        normalise: bool = True,
        channels_last: bool = False,
        threads: int | None = None,
        allow_unverified: bool = False,
    ):
        self.model_path = Path(model_path)
        verify_sha256(self.model_path, sha256, MODEL_WHAT, allow_unverified=allow_unverified)
        self.label_order = tuple(int(v) for v in label_order)
        unknown = sorted(set(self.label_order) - set(STRUCTURES) - {0})
        if unknown:
            raise ConfigError(f"{MODEL_WHAT} {self.model_path}: labels {unknown} are not in SynthSeg's table")
        self.voxel_size_mm = None if voxel_size_mm is None else float(voxel_size_mm)
        self.pad_multiple = int(pad_multiple)
        self.normalise = bool(normalise)
        self.channels_last = bool(channels_last)

        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        n_out = self.session.get_outputs()[0].shape[-1 if self.channels_last else 1]
        if isinstance(n_out, int) and n_out != len(self.label_order):
            raise ConfigError(
                f"{MODEL_WHAT} {self.model_path}: the model has {n_out} output channels but the label table "
                f"has {len(self.label_order)} labels"
            )
        self.regions = regional_groups(self.label_order)

    def posteriors(self, model_input: ModelInput) -> np.ndarray:
        """Per-channel posteriors (n_labels, X, Y, Z) on the model grid (padding removed)."""
        out = self.session.run(None, {self.input_name: model_input.tensor})[0]
        out = np.moveaxis(out, -1, 1) if self.channels_last else out
        if out.ndim != 5 or out.shape[1] != len(self.label_order):
            raise ValueError(
                f"{MODEL_WHAT} {self.model_path}: output of shape {out.shape}, expected (1, "
                f"{len(self.label_order)}, X, Y, Z)"
            )
        post = np.ascontiguousarray(out[0][(slice(None),) + model_input.crop], dtype=np.float32)
        sums = post.sum(axis=0)
        if post.min() < -1e-4 or not np.allclose(sums, 1.0, atol=1e-3):
            post = _softmax_inplace(post)
        return post

    def segment(self, image: nib.Nifti1Image, mask: np.ndarray | None = None) -> Segmentation:
        data = image_data(image)
        affine = np.asarray(image.affine, dtype=np.float64)
        native = self.voxel_size_mm is None
        model_input = prepare_input(
            data, affine, self.voxel_size_mm, self.pad_multiple, self.normalise, self.channels_last
        )
        post = self.posteriors(model_input)
        channel = np.argmax(post, axis=0)
        inside = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != data.shape:
                raise ValueError(f"brain mask of shape {mask.shape} does not match the image of {data.shape}")
            inside = mask.astype(bool)
            if not native:
                grid = (affine, model_input.affine, model_input.shape)
                inside = resample_array(inside.astype(np.float32), *grid, order=0) > 0.5

        volumes = self.label_volumes(channel, inside, voxel_volume_ml(model_input.affine))
        if native:
            probabilities, labels = self._native_maps(post, channel, inside)
        else:
            probabilities, labels = self._resampled_maps(post, inside, model_input, affine, data.shape)
        return Segmentation(probabilities=probabilities, labels=labels, volumes_ml=volumes)

    def label_volumes(
        self, channel: np.ndarray, inside: np.ndarray | None, voxel_ml: float
    ) -> dict[str, float]:
        """Core and regional volumes (ml) from the argmax channel of every model-grid voxel."""
        counts = np.bincount(
            channel[inside] if inside is not None else channel.ravel(), minlength=len(self.label_order)
        )
        per_label: dict[int, float] = {}
        for c, lab in enumerate(self.label_order):
            per_label[lab] = per_label.get(lab, 0.0) + float(counts[c]) * voxel_ml
        tissue_ml = {t: 0.0 for t in TISSUES}
        for lab, ml in per_label.items():
            if lab in TISSUE_OF_LABEL:
                tissue_ml[TISSUE_OF_LABEL[lab]] += ml
        present = [lab for lab in VENTRICLE_LABELS if lab in per_label]
        volumes = {
            "gm": tissue_ml["gm"],
            "wm": tissue_ml["wm"],
            "csf": tissue_ml["csf"],
            "ventricles": sum(per_label[lab] for lab in present) if present else float("nan"),
            "brain": tissue_ml["gm"] + tissue_ml["wm"],
        }
        for name, labs in self.regions.items():
            volumes[name] = sum(per_label[lab] for lab in labs)
        return volumes

    def _tissue_posteriors(self, post: np.ndarray, inside: np.ndarray | None) -> dict[str, np.ndarray]:
        """Background, csf, gm, wm posteriors on the model grid (channels summed by tissue)."""
        tissue_of_channel = [TISSUE_OF_LABEL.get(lab, "background") for lab in self.label_order]
        out = {}
        for t in ("background",) + TISSUES:
            idx = [c for c, name in enumerate(tissue_of_channel) if name == t]
            p = post[idx].sum(axis=0) if idx else np.zeros(post.shape[1:], dtype=np.float32)
            if inside is not None:
                p = np.where(inside, p, float(t == "background")).astype(np.float32)
            out[t] = p
        return out

    def _native_maps(self, post: np.ndarray, channel: np.ndarray, inside: np.ndarray | None):
        """Model grid = image grid: probabilities as they are, labels straight from the argmax."""
        probs = self._tissue_posteriors(post, inside)
        lut = np.array([TISSUE_LABELS[TISSUE_OF_LABEL.get(lab, "background")] for lab in self.label_order])
        labels = lut.astype(np.uint8)[channel]
        if inside is not None:
            labels[~inside] = 0
        return {t: probs[t] for t in TISSUES}, labels

    def _resampled_maps(self, post, inside, model_input: ModelInput, affine: np.ndarray, shape: tuple):
        """Tissue posteriors resampled (smoothed) onto the image grid; labels = their argmax."""
        probs = {
            t: np.clip(
                resample_array(p, model_input.affine, affine, shape, order=1, cval=float(t == "background")),
                0,
                1,
            )
            for t, p in self._tissue_posteriors(post, inside).items()
        }
        stack = np.stack([probs[t] for t in ("background",) + TISSUES])  # the order of TISSUE_LABELS
        return {t: probs[t] for t in TISSUES}, np.argmax(stack, axis=0).astype(np.uint8)
