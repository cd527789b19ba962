import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from morphgen.errors import SubjectError
from morphgen.nifti import atomic_directory, atomic_output, load_volume, save_volume
from morphgen.space import Grid


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "x.txt") as tmp:
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_directory_leaves_nothing_on_failure_and_keeps_what_was_there(tmp_path):
    target = tmp_path / "tokens"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target and not any(tmp.iterdir())
            (tmp / "sub-001.npy").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "sub-001.npy").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "sub-001.npy").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == [target] and (target / "sub-001.npy").read_text() == "old"


def test_atomic_directory_replaces_an_old_folder_whole(tmp_path):
    target = tmp_path / "labels"
    target.mkdir()
    (target / "stale.nii.gz").write_text("old")
    old = os.umask(0o022)
    try:
        with atomic_directory(target) as tmp:
            (tmp / "sub-001_dseg.nii.gz").write_text("new")
            assert not (target / "sub-001_dseg.nii.gz").exists()  # nothing shows before the block ends
    finally:
        os.umask(old)
    assert list(tmp_path.iterdir()) == [target]
    assert [p.name for p in target.iterdir()] == ["sub-001_dseg.nii.gz"]
    assert target.stat().st_mode & 0o777 == 0o755


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from morphgen.nifti import atomic_directory, atomic_output

kind, target = sys.argv[1], Path(sys.argv[2])
with (atomic_output if kind == "file" else atomic_directory)(target) as tmp:
    (tmp if kind == "file" else tmp / "sub-001.npy").write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_killed_writer_leaves_only_a_hidden_part_beside_the_output(kind, tmp_path):
    """SIGKILL runs no clean-up: the output must still not exist, only a temporary name that says so."""
    target = tmp_path / ("scores.tsv" if kind == "file" else "tokens")
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, kind, str(target)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".{target.name}.") and ".part" in left[0], left


def _fail_rename(monkeypatch):
    """The job dies between writing and renaming: ``os.replace`` never happens."""

    def killed(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)


def _writers():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from matplotlib import pyplot as plt

    from morphgen.png import save_figure
    from morphgen.preprocess.qc import write_qc_png, write_qc_tsv
    from morphgen.tsv import write_tsv

    grid = Grid(4.0, (12, 16, 12))
    data = np.zeros(grid.shape, dtype=np.float32)
    data[3:9, 4:12, 3:9] = 1.0
    return {
        "save_volume": lambda p: save_volume(p / "a.nii.gz", data, grid.affine),
        "write_tsv": lambda p: write_tsv(pd.DataFrame({"participant_id": ["sub-1"]}), p / "a.tsv"),
        "save_figure": lambda p: save_figure(plt.figure(), p / "a.png"),
        "write_qc_tsv": lambda p: write_qc_tsv(p / "qc.tsv", {"participant_id": "sub-1", "ncc": 0.9}),
        "write_qc_png": lambda p: write_qc_png(p / "qc.png", data, data > 0, "sub-1", 4.0),
    }


@pytest.mark.parametrize("writer", sorted(_writers()))
def test_writers_leave_nothing_when_the_job_dies_before_the_rename(writer, tmp_path, monkeypatch):
    write = _writers()[writer]
    write(tmp_path / "ok")
    assert [p.name for p in (tmp_path / "ok").iterdir() if not p.name.startswith(".")]  # it writes something
    _fail_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "killed")
    assert list((tmp_path / "killed").iterdir()) == []


def test_save_volume_round_trips_affine_and_dtype(tmp_path):
    grid = Grid(4.0, (12, 16, 12))
    data = np.random.default_rng(0).random(grid.shape).astype(np.float32)
    path = save_volume(tmp_path / "a.nii.gz", data, grid.affine, description="test")
    img = load_volume(path, "sub-x")
    np.testing.assert_allclose(img.affine, grid.affine)
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), data)
    assert nib.load(path).header.get_sform(coded=True)[1] == 1


def test_grid_centre_is_on_the_mni_brain_centre():
    grid = Grid(2.0, (80, 112, 80), center_mm=(0.0, -16.5, 6.0))
    centre_voxel = (np.array(grid.shape) - 1) / 2
    np.testing.assert_allclose(grid.affine[:3, :3] @ centre_voxel + grid.affine[:3, 3], (0.0, -16.5, 6.0))


def test_load_volume_names_subject_and_file(tmp_path):
    with pytest.raises(SubjectError, match=r"sub-07.*missing\.nii\.gz.*does not exist"):
        load_volume(tmp_path / "missing.nii.gz", "sub-07")
