"""Settings and phantoms shared by the model tests; the end-to-end Snakemake run the workflow tests share."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# The suite asserts what holds on CPU, bit for bit (a resumed run equals an uninterrupted one), so a GPU
# node runs it on CPU too. MORPHGEN_TEST_GPU=1 leaves the GPU visible: the models then train and sample on
# it, tests/test_cuda.py checks CPU and GPU against each other, and the bit-exact tests are skipped.
GPU_TESTS = os.environ.get("MORPHGEN_TEST_GPU") == "1"
if not GPU_TESTS:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything asks torch for a device
# the template arrays that jobs cache between them (templates.cache_dir): shared by this session's runs only
os.environ.setdefault("MORPHGEN_CACHE_DIR", tempfile.mkdtemp(prefix="morphgen-cache-"))
cpu_exact = pytest.mark.skipif(GPU_TESTS, reason="bit-exact reproducibility is asserted on CPU only")

# A tiny VQ-VAE + PatchGAN, fast enough for unit tests on one CPU thread; tests override what they exercise.
TINY_AUTOENCODER = {
    "num_res_layers": 1,
    "num_res_channels": 4,
    "codebook_size": 16,
    "embedding_dim": 4,
    "commitment_cost": 0.25,
    "decay": 0.5,
    "epochs": 1,
    "batch_size": 3,
    "lr": 1e-3,
    "lr_decay": 0.999,
    "disc_lr": 5e-4,
    "disc_channels": 4,
    "disc_layers": 2,
    "l1_weight": 1.0,
    "fft_weight": 1.0,
    "adversarial_weight": 0.01,
    "adversarial_start_epoch": 0,
    "perceptual": {"weights": None},
}


def phantom(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A two-compartment ellipsoid with a random centre and size, intensities 0 / 0.6 / 0.9."""
    ii, jj, kk = np.indices(shape)
    centre = np.asarray(shape) / 2 + rng.uniform(-1, 1, 3)
    radii = np.asarray(shape) * 0.38 * rng.uniform(0.85, 1.1)
    d = sum(((ax - c) / r) ** 2 for ax, c, r in zip((ii, jj, kk), centre, radii, strict=True))
    return (np.where(d < 1, 0.6, 0.0) + np.where(d < 0.3, 0.3, 0.0)).astype(np.float32)


def run_snakemake(workdir: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    """The repository's Snakefile in ``workdir``, with this checkout's package on the path."""
    cmd = SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


# what a conditioned family's run takes from the end-to-end run: the cohort preprocessed and segmented
SHARED_UPSTREAM = (
    "demo_cohort",
    "qc",
    "split",
    "subpopulations",
    "preprocessed",
    "segmentation/real",
    "volumes/real",
)


def copy_upstream(first: Path, results: Path) -> None:
    """The end-to-end run's cohort, preprocessed and segmented, into ``results``, with their times, so that
    Snakemake sees them as up to date and a family's run starts at its autoencoder."""
    for part in SHARED_UPSTREAM:
        shutil.copytree(first / part, results / part)
    shutil.copy2(first / "volumes/real.tsv", results / "volumes/real.tsv")


def e2e_config_args(results: Path) -> list[str]:
    """Options for the project config plus the small end-to-end overlay (tests/data/config_e2e.yaml)."""
    return [
        "--configfile",
        str(REPO / "config.yaml"),
        str(REPO / "tests/data/config_e2e.yaml"),
        "--config",
        f"results={results}",
    ]


# Under pytest-xdist (``make test`` runs two workers): the modules sharing the session's end-to-end run go to
# one worker as one unit, or each worker would make its own run; the longest units are handed out first.
E2E_MODULES = (
    "tests/test_determinism.py",
    "tests/test_workflow.py",
    "tests/test_ldm_workflow.py",
    "tests/test_brainsynth_workflow.py",
)
LONGEST_FIRST = ("e2e", "tests/test_slurm.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class E2EScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "e2e" if module in E2E_MODULES else module

        def _assign_work_unit(self, node) -> None:
            for scope in reversed(LONGEST_FIRST):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return E2EScopeScheduling(config, log)


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory) -> tuple[Path, Path]:
    """One complete run of the DAG (``all``) on the small demo cohort: (working folder, results folder).

    Session-wide, so the workflow and determinism tests share it; tests must not change what it wrote.
    """
    work = tmp_path_factory.mktemp("e2e")
    results = work / "results"
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    run_snakemake(work, *e2e_config_args(results), "--cores", "2", "all")
    return work, results


@pytest.fixture
def one_thread():
    """Torch on one thread: tiny networks only pay for more threads in overhead (several times slower on
    two busy cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
