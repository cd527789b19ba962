"""Fréchet distances (FID) between real and synthetic brains, on features of networks loaded from local files.

Table 1 of Tudosiu et al. 2022 reports FID on the middle slice of each axis (2D Inception-v3 features); Kapoor
et al. 2023 average the per-axis FID over fixed slice positions; Pinaya et al. 2022 use a 3D FID on Med3D
(MedicalNet) volume features. All three are here: :func:`fid_2d` (``positions=None`` for middle slices, a
list of fractions for fixed positions) and :func:`fid_3d`.

Weights are never downloaded and torchvision is not used: a feature network is a file named in the
configuration with its sha256 (checked by :func:`morphgen.weights.verify_sha256` before anything loads it).
Without configured weights :func:`build_extractor` returns None and :func:`fid_columns` writes
``"no weights configured"``: the table says so rather than silently using another network, whose numbers
would not be comparable with published FIDs.

Getting the standard weights (on a machine with internet access, once):

* 2D FID, pytorch-fid's Inception-v3 (``pt_inception-2015-12-05``, the TF FID weights), as ONNX::

      pip install pytorch-fid onnx
      python - <<'EOF'
      import torch
      from pytorch_fid.inception import InceptionV3
      net = InceptionV3([3]).eval()  # block 3: the 2048-d pool features; input in [0, 1], resized to 299

      class Pool(torch.nn.Module):
          def __init__(self, net):
              super().__init__()
              self.net = net

          def forward(self, x):
              return self.net(x)[0].flatten(1)  # [N, 2048]

      torch.onnx.export(Pool(net), (torch.rand(1, 3, 299, 299),), "pt_inception_fid.onnx",
                        input_names=["image"], output_names=["pool3"], dynamo=False)
      EOF
      sha256sum pt_inception_fid.onnx

  The export has a fixed batch of 1, which :class:`OnnxFeatures` handles (it feeds one slice at a time);
  ``dynamic_axes={"image": {0: "n"}, "pool3": {0: "n"}}`` gives a faster variable batch.

* 3D FID, MedicalNet (Tencent/MedicalNet, Chen et al. 2019): ``resnet_10_23dataset.pth`` or
  ``resnet_18_23dataset.pth`` from the links in that repository's README, used as they are (a state dict whose
  keys carry DataParallel's ``module.`` prefix, under ``"state_dict"``); then ``sha256sum`` the file.

Configuration (paths and digests are the user's; ``null`` means not configured)::

    fid2d: {onnx: /weights/pt_inception_fid.onnx, sha256: <64 hex>, input_name: image, output_name: pool3}
    fid3d: {state_dict: /weights/resnet_10_23dataset.pth, sha256: <64 hex>, arch: resnet10}

Volumes are stacks ``[N, X, Y, Z]`` in RAS+ (the working grid), so axis 0 gives sagittal, 1 coronal and 2
axial planes. Slices are fed as stored (no rotation): real and synthetic get the same treatment.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from morphgen.errors import ConfigError
from morphgen.metrics.fidelity import as_image_stack
from morphgen.weights import load_weights_only, verify_sha256

NO_WEIGHTS = "no weights configured"
AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
# Fixed slice positions as fractions of the extent: symmetric around the middle, inside the brain on every
# axis of an MNI-aligned grid (Kapoor et al. used voxels 30-60 of an 80x96x80 crop, i.e. 0.31-0.75).
DEFAULT_FRACTIONS = (0.35, 0.45, 0.5, 0.55, 0.65)
SCALINGS = ("clip", "minmax")
FID_COLUMNS = ("fid_axial", "fid_coronal", "fid_sagittal", "fid_slices", "fid_3d")


# ---------------------------------------------------------------------------- Fréchet distance


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's sqrtm, quiet (it prints on failure); failures come back as NaN for the caller to handle."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return linalg.sqrtm(matrix)


def _is_sqrt(root: np.ndarray, matrix: np.ndarray, rtol: float = 1e-4) -> bool:
    """Whether ``root @ root`` is ``matrix``: sqrtm of a near-singular product can be finite but wrong."""
    if not np.all(np.isfinite(root)):
        return False
    scale = max(np.linalg.norm(matrix), 1e-12)
    return bool(np.linalg.norm(root @ root - matrix) <= rtol * scale)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½)``. With fewer samples than features the covariances are
    singular and the square root of their product unreliable; then, as pytorch-fid does, ``eps·I`` is added to
    both. Tiny imaginary parts from round-off are dropped; large ones mean the input is not a covariance.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"inconsistent shapes: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}"
        )
    product = sigma1 @ sigma2
    covmean = _sqrtm(product)
    if not _is_sqrt(covmean, product):
        offset = np.eye(mu1.size) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.all(np.isfinite(covmean)):
            raise ValueError("the square root of the covariance product is not finite, even with eps added")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(S1 S2)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (ddof=1, as pytorch-fid) of features ``[N, F]``, in float64."""
    feats = np.asarray(features, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"features must be [N, F] with N >= 2 for a covariance, got shape {feats.shape}")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False, ddof=1))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets ``[N, F]`` and ``[M, F]``."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets {a.shape} and {b.shape} are not [N, F] with the same F")
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


# ---------------------------------------------------------------------------- slices


def axis_index(axis: int | str) -> int:
    """Axis of a volume ``[X, Y, Z]`` (RAS+) from its index or plane name (sagittal, coronal, axial)."""
    names = {name: index for index, name in AXIS_NAMES.items()}
    if isinstance(axis, str):
        if axis not in names:
            raise ValueError(f"axis must be one of {sorted(names)} or 0-2, got {axis!r}")
        return names[axis]
    if int(axis) not in AXIS_NAMES:
        raise ValueError(f"axis must be 0, 1 or 2 (of [X, Y, Z]), got {axis}")
    return int(axis)


def slice_index(extent: int, fraction: float) -> int:
    """Plane ``floor(fraction · extent)`` (at most the last), so 0.5 is the middle plane ``extent // 2``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"slice position must be a fraction in [0, 1], got {fraction}")
    return min(int(np.floor(fraction * extent)), extent - 1)


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Plane ``index`` along spatial ``axis`` of ``[X, Y, Z]`` or of every volume of ``[N, X, Y, Z]``."""
    arr = np.asarray(volume)
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected a volume [X, Y, Z] or a stack [N, X, Y, Z], got shape {arr.shape}")
    return np.take(arr, index, axis=axis + arr.ndim - 3)


def middle_slices(volume: np.ndarray, axis: int | str) -> np.ndarray:
    """The middle plane (``extent // 2``) along ``axis``, as in Table 1 of Tudosiu et al. 2022."""
    ax = axis_index(axis)
    arr = np.asarray(volume)
    return _take(arr, ax, arr.shape[arr.ndim - 3 + ax] // 2)


def fixed_slices(
    volume: np.ndarray, axis: int | str, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> list[np.ndarray]:
    """Planes at fixed fractions of the extent along ``axis`` (Kapoor et al. 2023), one array per fraction.

    Fractions rather than voxel indices, so the positions mean the same anatomy on any working grid.
    """
    ax = axis_index(axis)
    arr = np.asarray(volume)
    extent = arr.shape[arr.ndim - 3 + ax]
    return [_take(arr, ax, slice_index(extent, f)) for f in fractions]


# ---------------------------------------------------------------------------- pre-processing


def scale_slices(slices: torch.Tensor, scaling: str) -> torch.Tensor:
    """Bring slices ``[N, 1, H, W]`` to [0, 1], the range pytorch-fid's Inception expects.

    ``clip`` keeps intensities as they are (the pipeline's T1s are already in [0, 1]), so a global intensity
    difference between real and synthetic counts; ``minmax`` rescales each slice on its own (constant
    slices become 0).
    """
    if scaling == "clip":
        return slices.clamp(0.0, 1.0)
    if scaling == "minmax":
        flat = slices.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        span = (flat.max(dim=1).values.view(-1, 1, 1, 1) - low).clamp_min(1e-12)
        return torch.where(span > 1e-12, (slices - low) / span, torch.zeros_like(slices))
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")


def zscore_volumes(volumes: torch.Tensor) -> torch.Tensor:
    """Z-score each volume ``[N, 1, D, H, W]`` with the mean and sd of its non-zero voxels, as MedicalNet's
    data loader does (its random background noise is left out so features are deterministic)."""
    out = torch.empty_like(volumes)
    for k, vol in enumerate(volumes):
        fg = vol[vol > 0]
        ref = fg if fg.numel() > 1 else vol.flatten()
        std = ref.std()
        out[k] = (vol - ref.mean()) / std if std > 0 else torch.zeros_like(vol)
    return out


def pool_features(output: np.ndarray) -> np.ndarray:
    """Network output ``[N, C, ...]`` as features ``[N, C]``: spatial dimensions averaged (global pool)."""
    out = np.asarray(output)
    if out.ndim > 2:
        out = out.mean(axis=tuple(range(2, out.ndim)))
    return out.reshape(len(out), -1)


def _size_tuple(size: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...] | None:
    """``input_size`` as one int per spatial dimension (an int means a square / cube)."""
    if size is None:
        return None
    if isinstance(size, int | np.integer):
        return (int(size),) * spatial_dims
    size = tuple(int(s) for s in size)
    if len(size) != spatial_dims:
        raise ConfigError(f"input_size {size} does not have {spatial_dims} dimensions")
    return size


# ---------------------------------------------------------------------------- feature extractors


class FeatureExtractor:
    """Pre-processing shared by the feature networks; subclasses implement :meth:`forward` on a batch.

    2D (``spatial_dims=2``): slices ``[N, H, W]`` are scaled to [0, 1], resized (bilinear) to ``input_size``
    (299 for Inception by default) and repeated to ``channels``. 3D: volumes ``[N, X, Y, Z]`` are optionally
    resized (trilinear), z-scored per volume and fed as ``[N, channels, X, Y, Z]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        input_size: int | Sequence[int] | None = None,
        channels: int | None = None,
        scaling: str = "clip",
        batch_size: int = 16,
        fixed_batch: int | None = None,
    ):
        if spatial_dims not in (2, 3):
            raise ConfigError(f"feature networks must take 2D or 3D images, got {spatial_dims} spatial dims")
        if scaling not in SCALINGS:
            raise ConfigError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.spatial_dims = spatial_dims
        default_size = 299 if spatial_dims == 2 else None
        self.input_size = _size_tuple(default_size if input_size is None else input_size, spatial_dims)
        self.channels = int(channels) if channels else (3 if spatial_dims == 2 else 1)
        self.scaling = scaling
        self.batch_size = int(batch_size)
        self.fixed_batch = fixed_batch

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """Images ``[N, *spatial]`` as the network's input ``[N, channels, *input_size]`` (float32)."""
        x = torch.as_tensor(np.asarray(images, np.float32))
        if x.ndim != self.spatial_dims + 1:
            raise ValueError(f"expected {self.spatial_dims}D images [N, ...], got shape {tuple(x.shape)}")
        x = x.unsqueeze(1)
        if self.spatial_dims == 2:
            x = scale_slices(x, self.scaling)
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size:
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            x = F.interpolate(x, size=self.input_size, mode=mode, align_corners=False)
        if self.spatial_dims == 3:
            x = zscore_volumes(x)
        return x.expand(-1, self.channels, *x.shape[2:]).contiguous()

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """Network output for one prepared batch."""
        raise NotImplementedError

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features ``[N, F]`` of images ``[N, *spatial]``, in chunks of ``batch_size`` (memory)."""
        chunk = self.fixed_batch or self.batch_size
        feats = []
        for start in range(0, len(images), chunk):
            batch = self.prepare(images[start : start + chunk])
            n = len(batch)
            if self.fixed_batch and n < chunk:  # a static-batch export: pad, then drop the padding
                batch = torch.cat([batch, batch[-1:].expand(chunk - n, *batch.shape[1:])])
            feats.append(pool_features(self.forward(batch))[:n])
        if not feats:
            raise ValueError("no images given")
        return np.concatenate(feats).astype(np.float64)


class OnnxFeatures(FeatureExtractor):
    """A feature network exported to ONNX (Inception-v3 for 2D, MedicalNet for 3D), run by onnxruntime (CPU).

    2D or 3D follows from the rank of the model's input; static channel, batch and spatial sizes of the input
    are respected. The sha256 is checked before onnxruntime opens the file.
    """

    def __init__(
        self,
        path: str | Path,
        sha256: str | None,
        input_name: str | None = None,
        output_name: str | None = None,
        input_size: int | Sequence[int] | None = None,
        channels: int | None = None,
        *,
        scaling: str = "clip",
        batch_size: int = 16,
        threads: int | None = None,
        what: str = "ONNX FID feature network",
        allow_unverified: bool = False,
    ):
        self.path = Path(path)
        verify_sha256(self.path, sha256, what, allow_unverified=allow_unverified)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inp = _pick(self.session.get_inputs(), input_name, "input", what, self.path)
        self.input_name = inp.name
        self.output_name = _pick(self.session.get_outputs(), output_name, "output", what, self.path).name
        shape = list(inp.shape)
        if len(shape) not in (4, 5):
            raise ConfigError(f"{what} {self.path}: input {inp.name} has shape {shape}, not [N, C, ...2D/3D]")
        model_channels = shape[1] if isinstance(shape[1], int) else None
        if channels and model_channels and int(channels) != model_channels:
            raise ConfigError(f"{what} {self.path}: channels={channels} but the model takes {model_channels}")
        spatial = shape[2:]
        if input_size is None and all(isinstance(s, int) for s in spatial):
            input_size = spatial
        super().__init__(
            len(shape) - 2,
            input_size,
            channels or model_channels,
            scaling,
            batch_size,
            fixed_batch=shape[0] if isinstance(shape[0], int) else None,
        )

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """Run the session on one batch."""
        return self.session.run([self.output_name], {self.input_name: batch.numpy()})[0]


def _pick(values, name: str | None, kind: str, what: str, path: Path):
    """The model input/output called ``name`` (the first when None); the error lists those it has."""
    if name is None:
        return values[0]
    for value in values:
        if value.name == name:
            return value
    raise ConfigError(f"{what} {path}: no {kind} named {name!r}; it has {[v.name for v in values]}")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (``weights_only``: no code runs), unwrapped from ``"state_dict"`` and with
    DataParallel's ``module.`` prefix removed, as MedicalNet ships them. A file that is not plain tensors (a
    pickled object would run code) or cannot be read raises :class:`ConfigError` naming it."""
    state = load_weights_only(path, "state dict file")
    if not isinstance(state, Mapping):
        raise ConfigError(f"state dict file {path} holds a {type(state).__name__}, not a state dict")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


class TorchFeatures(FeatureExtractor):
    """A torch module whose weights are a state dict file (e.g. MedicalNet's ``.pth``), checked by sha256.

    Every parameter and buffer of ``module`` must be in the file; extra keys are allowed only under
    ``ignore_prefixes`` (MedicalNet's segmentation head ``conv_seg``, a classifier ``fc``).
    """

    def __init__(
        self,
        module: nn.Module,
        state_dict_path: str | Path,
        sha256: str | None,
        *,
        spatial_dims: int | None = None,
        input_size: int | Sequence[int] | None = None,
        channels: int | None = None,
        scaling: str = "clip",
        batch_size: int = 4,
        ignore_prefixes: Sequence[str] = ("conv_seg.", "fc."),
        what: str = "FID feature network state dict",
        allow_unverified: bool = False,
    ):
        self.path = Path(state_dict_path)
        verify_sha256(self.path, sha256, what, allow_unverified=allow_unverified)
        state = load_state_dict(self.path)
        expected = set(module.state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(k for k in set(state) - expected if not k.startswith(tuple(ignore_prefixes)))
        if missing or unexpected:
            raise ConfigError(
                f"{what} {self.path} does not fit {type(module).__name__}: missing {missing[:5]} "
                f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
            )
        module.load_state_dict({k: state[k] for k in expected})
        self.module = module.eval()
        dims = spatial_dims or getattr(module, "spatial_dims", None)
        if dims is None:
            raise ConfigError(f"{what}: spatial_dims is needed for {type(module).__name__}")
        super().__init__(dims, input_size, channels, scaling, batch_size)

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """The module's output on one batch, without autograd."""
        with torch.inference_mode():
            return self.module(batch).numpy()


# ---------------------------------------------------------------------------- MedicalNet 3D ResNet


class BasicBlock3d(nn.Module):
    """MedicalNet's BasicBlock: two 3x3x3 convolutions (dilated in layers 3-4) and a shortcut.

    Shortcut ``B`` is a 1x1x1 convolution + BN (``downsample.0/1``); ``A`` has no weights: strided identity
    with zero channels appended.
    """

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, shortcut: str):
        super().__init__()
        conv = dict(kernel_size=3, padding=dilation, dilation=dilation, bias=False)
        self.conv1 = nn.Conv3d(cin, cout, stride=stride, **conv)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, **conv)
        self.bn2 = nn.BatchNorm3d(cout)
        self.stride, self.pad = stride, 0
        self.downsample = None
        if stride != 1 or cin != cout:
            if shortcut == "B":
                self.downsample = nn.Sequential(
                    nn.Conv3d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(cout)
                )
            else:
                self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.downsample is not None:
            res = self.downsample(x)
        else:
            s = self.stride
            res = F.pad(x[:, :, ::s, ::s, ::s], (0, 0, 0, 0, 0, 0, 0, self.pad))
        return F.relu(out + res)


MEDICALNET_ARCHS = {"resnet10": ((1, 1, 1, 1), "B"), "resnet18": ((2, 2, 2, 2), "A")}


class MedicalNetResNet(nn.Module):
    """MedicalNet's 3D ResNet encoder (Chen et al. 2019), parameter names as in its checkpoints.

    conv1 7x7x7 stride 2, max-pool, layers 1-4 (64, 128, 256, 512 channels; layer 2 stride 2, layers 3 and 4
    dilated 2 and 4), then a global average pool: 512 features per volume ``[N, 1, D, H, W]``. The default
    shortcut per depth is the one the published weights use (resnet10: B, resnet18: A).
    """

    spatial_dims = 3

    def __init__(self, arch: str = "resnet10", shortcut: str | None = None):
        super().__init__()
        if arch not in MEDICALNET_ARCHS:
            raise ConfigError(f"arch must be one of {sorted(MEDICALNET_ARCHS)}, got {arch!r}")
        blocks, default_shortcut = MEDICALNET_ARCHS[arch]
        shortcut = shortcut or default_shortcut
        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=(2, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        cin = 64
        specs = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))  # (channels, stride, dilation)
        for i, (n, (cout, stride, dilation)) in enumerate(zip(blocks, specs, strict=True), start=1):
            layer = [BasicBlock3d(cin, cout, stride, dilation, shortcut)]
            layer += [BasicBlock3d(cout, cout, 1, dilation, shortcut) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            cin = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool3d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


# ---------------------------------------------------------------------------- FID of volume stacks


def fid_2d(
    real: np.ndarray,
    synthetic: np.ndarray,
    extractor: FeatureExtractor,
    axes: Sequence[int | str] = (2, 1, 0),
    positions: Sequence[float] | None = None,
) -> dict[str, float]:
    """FID per axis on 2D slices of volume stacks ``[N, X, Y, Z]``, keyed by plane name.

    ``positions=None``: the middle slice of each axis (Tudosiu et al. 2022, Table 1). A list of fractions:
    the mean over those slice positions of the per-position FID (Kapoor et al. 2023).
    """
    if extractor.spatial_dims != 2:
        raise ValueError("fid_2d needs a 2D feature network")
    real, synthetic = as_image_stack(real, "real"), as_image_stack(synthetic, "synthetic")
    result = {}
    for axis in axes:
        ax = axis_index(axis)
        if positions is None:
            pairs = [(middle_slices(real, ax), middle_slices(synthetic, ax))]
        else:
            pairs = list(
                zip(fixed_slices(real, ax, positions), fixed_slices(synthetic, ax, positions), strict=True)
            )
        values = [fid_from_features(extractor(r), extractor(s)) for r, s in pairs]
        result[AXIS_NAMES[ax]] = float(np.mean(values))
    return result


def fid_3d(real: np.ndarray, synthetic: np.ndarray, extractor: FeatureExtractor) -> float:
    """FID on whole-volume features (Pinaya et al. 2022: Med3D / MedicalNet) of stacks ``[N, X, Y, Z]``."""
    if extractor.spatial_dims != 3:
        raise ValueError("fid_3d needs a 3D feature network")
    real, synthetic = as_image_stack(real, "real"), as_image_stack(synthetic, "synthetic")
    return fid_from_features(extractor(real), extractor(synthetic))


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FeatureConfig:
    """One feature network of the configuration (section ``fid2d`` or ``fid3d``); no file means none."""

    kind: str
    onnx: str | None = None
    state_dict: str | None = None
    sha256: str | None = None
    input_name: str | None = None
    output_name: str | None = None
    input_size: int | list[int] | None = None
    channels: int | None = None
    scaling: str = "clip"
    arch: str = "resnet10"
    batch_size: int = 8
    threads: int | None = None

    @classmethod
    def from_config(cls, config: Mapping, kind: str) -> FeatureConfig:
        """Section ``kind`` of ``config`` (or of ``config["fid"]``); unknown keys are errors (typos)."""
        if kind not in ("fid2d", "fid3d"):
            raise ConfigError(f"feature network kind must be fid2d or fid3d, got {kind!r}")
        if "fid" in config and kind not in config:
            config = config["fid"]
        section = dict(config.get(kind) or {})
        known = {f.name for f in fields(cls)} - {"kind"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"{kind}: unknown keys {unknown}; known: {sorted(known)}")
        cfg = cls(kind=kind, **section)
        if cfg.onnx and cfg.state_dict:
            raise ConfigError(f"{kind}: give either onnx or state_dict, not both")
        if cfg.state_dict and kind == "fid2d":
            raise ConfigError("fid2d: only ONNX networks are supported (the MedicalNet state dicts are 3D)")
        return cfg

    @property
    def configured(self) -> bool:
        """Whether a weights file is named."""
        return bool(self.onnx or self.state_dict)


def build_extractor(cfg: FeatureConfig | Mapping, kind: str | None = None) -> FeatureExtractor | None:
    """The feature network of ``cfg`` (a :class:`FeatureConfig`, or a config mapping with ``kind``); None
    when no weights are configured, so callers report that instead of substituting another network."""
    if not isinstance(cfg, FeatureConfig):
        if kind is None:
            raise ValueError("kind (fid2d or fid3d) is needed to read a configuration mapping")
        cfg = FeatureConfig.from_config(cfg, kind)
    if not cfg.configured:
        return None
    if cfg.onnx:
        return OnnxFeatures(
            cfg.onnx,
            cfg.sha256,
            cfg.input_name,
            cfg.output_name,
            cfg.input_size,
            cfg.channels,
            scaling=cfg.scaling,
            batch_size=cfg.batch_size,
            threads=cfg.threads,
            what=f"FID feature network ({cfg.kind}.onnx)",
        )
    return TorchFeatures(
        MedicalNetResNet(cfg.arch),
        cfg.state_dict,
        cfg.sha256,
        input_size=cfg.input_size,
        batch_size=cfg.batch_size,
        what=f"FID feature network ({cfg.kind}.state_dict)",
    )


def unmeasured_fid_columns(
    extractor_2d: FeatureExtractor | None, extractor_3d: FeatureExtractor | None
) -> dict[str, float | str]:
    """FID columns of a row with too few images: :data:`NO_WEIGHTS` where no network is configured (it could
    not have been measured anyway), NaN where one is."""
    missing = {c: extractor_2d is None for c in FID_COLUMNS if c != "fid_3d"} | {
        "fid_3d": extractor_3d is None
    }
    return {c: NO_WEIGHTS if missing[c] else float("nan") for c in FID_COLUMNS}


def fid_columns(
    real: np.ndarray,
    synthetic: np.ndarray,
    extractor_2d: FeatureExtractor | None,
    extractor_3d: FeatureExtractor | None,
    positions: Sequence[float] | None = DEFAULT_FRACTIONS,
) -> dict[str, float | str]:
    """Table columns ``fid_axial, fid_coronal, fid_sagittal`` (middle slice, seed 000), ``fid_slices`` (the
    mean over the three axes of the FID averaged over the slice ``positions``, seed 001) and ``fid_3d``
    (seed 004): values, or :data:`NO_WEIGHTS` for a network that is not configured, so the table states why
    a FID is missing."""
    columns: dict[str, float | str] = dict.fromkeys(FID_COLUMNS, NO_WEIGHTS)
    if extractor_2d is not None:
        per_axis = fid_2d(real, synthetic, extractor_2d)
        columns.update({f"fid_{name}": value for name, value in per_axis.items()})
        if positions:
            columns["fid_slices"] = float(
                np.mean(list(fid_2d(real, synthetic, extractor_2d, positions=positions).values()))
            )
    if extractor_3d is not None:
        columns["fid_3d"] = fid_3d(real, synthetic, extractor_3d)
    return columns
