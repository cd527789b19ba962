"""Checksums of weight files: a configured model is used only if its sha256 matches the configuration."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from morphgen.errors import ChecksumError, ConfigError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256sum(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_of(configured: str) -> str:
    """A configured sha256 as hex digits: case and a ``sha256:`` prefix do not matter."""
    return str(configured).strip().lower().removeprefix("sha256:")


def verify_sha256(
    path: str | Path, expected: str | None, what: str, *, allow_unverified: bool = False
) -> str:
    """Check that ``path`` has the sha256 ``expected``; return the actual digest.

    ``what`` says what the file is for (e.g. "ONNX segmentation model (segmentation.onnx_model)"); every
    error names it with the file. Raises :class:`ConfigError` when the file does not exist and
    :class:`ChecksumError` when the digest differs, is malformed, or is missing (``expected`` None), unless
    ``allow_unverified`` is set: weights of unknown origin are refused by default.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: weights file {path} does not exist")
    actual = sha256sum(path)
    if expected is None:
        if allow_unverified:
            return actual
        raise ChecksumError(
            f"{what}: refusing unverified weights {path}: no sha256 is configured "
            f"(the file's sha256 is {actual}; put it in the configuration after checking where it came from)"
        )
    wanted = _digest_of(expected)
    if not _HEX64.match(wanted):
        raise ChecksumError(f"{what}: the configured sha256 {expected!r} for {path} is not 64 hex digits")
    if wanted != actual:
        raise ChecksumError(
            f"{what}: sha256 mismatch for {path}: expected {wanted}, actual {actual} "
            "(wrong or corrupted file, or the configuration names another version)"
        )
    return actual


def load_weights_only(path: str | Path, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU: tensors and plain types only, so no pickled code runs.

    A missing file raises FileNotFoundError, and one that cannot be read this way (truncated, foreign, or
    holding pickled objects) :class:`ConfigError`; both name ``what`` and the file.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file, or pickled objects refused by weights_only
        raise ConfigError(f"{what} {path} cannot be read as tensors only ({exc})") from exc


def ship_checkpoint(trained: str | Path, shipped: str | Path, expected: str | None) -> tuple[str, bool]:
    """Copy a freshly trained model file to where a configuration loads it from (``shipped``).

    Returns its sha256 and whether that is ``expected`` (the configured digest): a checkpoint reproduced
    bit for bit. The copy is written either way, through a temporary file, so that a half-written file is
    never left in place.
    """
    import shutil

    from morphgen.nifti import atomic_output

    trained, shipped = Path(trained), Path(shipped)
    if not trained.is_file():
        raise ConfigError(f"trained model {trained} does not exist")
    actual = sha256sum(trained)
    shipped.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(shipped) as tmp:
        shutil.copyfile(trained, tmp)
    return actual, expected is not None and actual == _digest_of(expected)
