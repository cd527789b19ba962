"""The pipeline through `snakemake --profile profiles/slurm` on a real single-node SLURM cluster.

A small DAG (simulated cohort, input checks, split, grouped preprocessing, autoencoder training on two GPUs)
is submitted with the project's own profile. Checked from SLURM's records (``scontrol show job``): the GPU
rule ran on the ``gpu`` partition with a request for two GPUs and trained in two torchrun processes, every
other job on ``cpu`` without one, and the preprocessing of all subjects ran as one grouped job. Once training
has finished its first epoch, its job gets SIGTERM from SLURM (``scancel --signal=TERM``, what
``--signal=TERM@300`` sends before the time limit): it must checkpoint and exit 75, and the profile's retry
must resubmit it and resume it to the end. Skipped where no cluster can start (no slurm-wlm, not root) unless
MORPHGEN_REQUIRE_SLURM is set, as CI does, where it fails instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
import torch

REPO = Path(__file__).resolve().parents[1]
GPU_RULES = {"train_autoencoder"}
# SLURM's NumCPUs of each job: its rule's `threads:` (workflow/rules/*.smk); the grouped preprocessing job the
# test's --cores; the training job one task per GPU of its threads each (set to 1 here: the node has 2 CPUs)
CPUS = {
    "demo_cohort": 2,
    "check_inputs": 1,
    "qc_table": 1,
    "split": 1,
    "preprocess": 2,
    "train_autoencoder": 2,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_cluster.missing()
    if why:
        if os.environ.get("MORPHGEN_REQUIRE_SLURM"):
            pytest.fail(f"MORPHGEN_REQUIRE_SLURM is set but {why}")
        pytest.skip(why)
    with slurm_cluster.local_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def _job_ids(output: str) -> dict[str, list[str]]:
    """Rule (or group) name -> SLURM job ids, from the executor's submission lines (it deletes the per-job
    logs of jobs that succeed)."""
    out: dict[str, list[str]] = {}
    for match in re.finditer(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(\w+?)/", output):
        job_id, folder = match.groups()
        # rule_<rule>, or group_<group>_<rules> for a grouped job
        name = folder.removeprefix("rule_") if folder.startswith("rule_") else folder.split("_")[1]
        out.setdefault(name, []).append(job_id)
    return out


def _running_job(rule: str, env: dict) -> str:
    """The SLURM job id of the running job of ``rule`` (the executor puts the rule in the job's comment)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True, env=env
    ).stdout
    ids = [line.split()[0] for line in out.splitlines() if rule in line]
    assert len(ids) == 1, out
    return ids[0]


def test_profile_sends_gpu_rules_to_the_gpu_partition(cluster, tmp_path):
    work, results = tmp_path / "work", tmp_path / "work" / "results"
    work.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--profile",
        str(REPO / "profiles/slurm"),
        "--configfile",
        str(REPO / "config.yaml"),
        str(REPO / "tests/data/config_slurm.yaml"),
        "--config",
        f"results={results}",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--latency-wait",
        "5",
        # the test node has 2 CPUs and 8 GB: a grouped job asks for no more
        "--cores",
        "2",
        "--resources",
        "mem_mb=6000",
        "--set-threads",
        "train_autoencoder=1",
        "--",
        str(results / "models/autoencoder/model.pt"),
    ]
    env = dict(cluster, PYTHONPATH=str(REPO / "src"))
    # SIGINT, not SIGTERM: snakemake under the SLURM executor ignores SIGTERM while jobs run
    proc = subprocess.Popen(
        ["timeout", "-s", "INT", "900", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=work,
    )
    # the training job has finished an epoch: signal it as SLURM does before its time limit
    checkpoint = results / "models/autoencoder/checkpoints/last.pt"
    while not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.fail(f"snakemake ended before training checkpointed:\n{proc.communicate()[0][-8000:]}")
    training = _running_job("train_autoencoder", cluster)
    subprocess.run(["scancel", "--signal=TERM", training], check=True, env=cluster)
    output = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, output[-8000:]
    assert (results / "models/autoencoder/model.pt").stat().st_size > 0

    jobs = _job_ids(output)
    assert GPU_RULES <= set(jobs) and {"demo_cohort", "split", "preprocess"} <= set(jobs), jobs
    assert len(jobs["preprocess"]) == 1  # all eight subjects in one grouped job
    # the signalled training job stopped with code 75, its resubmission resumed and completed
    assert jobs["train_autoencoder"][0] == training and len(jobs["train_autoencoder"]) == 2, jobs
    assert slurm_cluster.job_record(training, cluster).get("JobState") == "FAILED"
    # the executor keeps the SLURM log of a failed job (Snakemake empties the rule log for the rerun)
    slurm_log = (work / f".snakemake/slurm_logs/rule_train_autoencoder/{training}.log").read_text()
    assert "stopped: training stopped on SIGTERM" in slurm_log, slurm_log[-3000:]
    assert "exit status 75" in slurm_log, slurm_log[-3000:]
    log = (results / "logs/train_autoencoder/train_autoencoder.log").read_text()
    info = torch.load(results / "models/autoencoder/model.pt", weights_only=True)["info"]
    assert info["epochs"] == 4 and info["steps"] % 4 == 0
    assert info["processes"] == 2 and info["global_batch"] == 4  # two torchrun processes of batch 2
    for name, ids in jobs.items():
        for job_id in ids:
            record = slurm_cluster.job_record(job_id, cluster)
            assert job_id == training or record.get("JobState") == "COMPLETED", (name, record)
            # each job asked for its rule's threads (a profile default of cpus_per_task would override them)
            if name in CPUS:
                assert record.get("NumCPUs") == str(CPUS[name]), (name, record)
            # the profile keeps the SLURM logs of successful jobs too
            logs = list((work / ".snakemake/slurm_logs").glob(f"*{name}*/{job_id}.log"))
            assert logs, (name, job_id, sorted(p.name for p in (work / ".snakemake/slurm_logs").rglob("*")))
            gpu_request = "gpu" in record.get("TresPerNode", "") + record.get("TresPerJob", "")
            if name in GPU_RULES:
                assert record["Partition"] == "gpu" and gpu_request, (name, record)
                assert "gpu:2" in record.get("TresPerNode", "") + record.get("TresPerJob", ""), record
            else:
                assert record["Partition"] == "cpu" and not gpu_request, (name, record)
    # the GPU job saw the GPU it asked for, as the job's environment shows in the rule's log
    assert "SLURM job" in log and "partition gpu" in log and "CUDA_VISIBLE_DEVICES=0,1" in log, log[-2000:]
