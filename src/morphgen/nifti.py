"""Reading NIfTI volumes with checks that name the subject and file, and writing them (and any other output
file or folder) atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from morphgen.errors import SubjectError


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A killed or failing job therefore never leaves a file that looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the full suffix (.nii.gz, .tsv) so writers that dispatch on it still work
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; results must be readable as the user's umask allows, like any other file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it becomes ``path`` only if the block succeeds.

    For rules whose output is a whole folder (Snakemake's ``directory()``): a killed or failing job leaves at
    most a hidden ``.<name>.*.part`` sibling, never a half-filled ``path``. A folder already at ``path`` is
    moved aside first and deleted once the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    # mkdtemp creates 0700; the folder must be as readable as any other output
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o777 & ~umask)
    try:
        yield tmp_path
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp_path, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)


def load_volume(path: str | Path, subject: str | None = None) -> nib.Nifti1Image:
    """Load a 3D volume and check it is usable.

    Accepts a 4D file whose last axis has length 1. Raises :class:`SubjectError` naming the subject and
    the file when the file is missing, unreadable or truncated, not 3D, empty, or holds NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise SubjectError(subject, path, "file does not exist")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for damaged headers
        raise SubjectError(subject, path, f"not a readable NIfTI file ({exc})") from exc
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise SubjectError(subject, path, f"expected a 3D volume, got shape {tuple(shape)}")
    try:  # every read of the data block in here: a cut-short file fails on the first one
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # truncated gzip or short data block
        raise SubjectError(
            subject, path, f"image data cannot be read, the file may be truncated ({exc})"
        ) from exc
    if data.ndim == 4:  # x*y*z*1, as converters write a single volume
        data = data[..., 0]
    if min(data.shape) < 2:
        raise SubjectError(subject, path, f"volume has a degenerate shape {data.shape}")
    if not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise SubjectError(subject, path, f"{n_bad} voxels are NaN or Inf")
    if float(data.max()) == float(data.min()):
        raise SubjectError(subject, path, f"image is empty (every voxel equals {float(data.min())})")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-9:
        raise SubjectError(subject, path, "the affine in the header is singular or not finite")
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(np.float32)
    return out


def save_volume(
    path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    dtype: type = np.float32,
    description: str | None = None,
) -> Path:
    """Write ``data`` with ``affine`` (qform and sform both set, scanner space) atomically."""
    arr = np.asarray(data).astype(dtype, copy=False)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    if description:
        img.header["descrip"] = description.encode()[:79]
    with atomic_output(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
