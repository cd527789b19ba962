"""A real single-node SLURM cluster on loopback for tests: munge, slurmctld and slurmd (Debian's slurm-wlm).

Two partitions, ``cpu`` (default) and ``gpu``; the node declares two GPUs as GRES on /dev/null and /dev/zero
(there is no GPU), so a job on ``gpu`` that asks for two gets ``CUDA_VISIBLE_DEVICES=0,1``. Its 16 GB of
memory are declared, not enforced (no cgroups): what a two-GPU training job asks for. Needs root: slurmd
only reads /etc/slurm/slurm.conf inside its job steps, so the configuration is linked there while the
cluster runs.
No accounting daemon: jobs are followed with ``squeue``/``scontrol`` (``MinJobAge`` keeps finished jobs
visible for 10 minutes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
ETC = Path("/etc/slurm")


def missing() -> str | None:
    """Why no cluster can start here (None when one can)."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"SLURM binaries missing ({', '.join(absent)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _node_line(host: str) -> str:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(f.split("=", 1) for f in out.split()[0:10] if "=" in f)
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    hw = " ".join(f"{k}={fields[k]}" for k in keep if k in fields)
    return f"NodeName={host} NodeAddr=127.0.0.1 {hw} RealMemory=16000 Gres=gpu:2 State=UNKNOWN"


def _write_config(root: Path, host: str) -> None:
    sock = root / "munge.socket"
    (root / "slurm.conf").write_text(
        f"""ClusterName=morphgentest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/d
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
MailProg=/bin/true
ReturnToService=2
{_node_line(host)}
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} Default=NO MaxTime=INFINITE State=UP
"""
    )
    # one file per GPU (a gpu GRES without File= is dropped and the node drains)
    gpus = "".join(f"NodeName={host} Name=gpu File={f}\n" for f in ("/dev/null", "/dev/zero"))
    (root / "gres.conf").write_text("AutoDetect=off\n" + gpus)


def _stop(pid_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


@contextlib.contextmanager
def local_slurm(root: Path, timeout: float = 60.0) -> Iterator[dict]:
    """Start the cluster under ``root``; yield its environment; stop every daemon by its pid file."""
    conf = ETC / "slurm.conf"
    if conf.exists() and not conf.is_symlink():
        raise RuntimeError(f"{conf} exists and is not ours: refusing to replace it")
    if conf.is_symlink():  # a cluster of a run that was killed before it could stop its daemons
        old = conf.resolve().parent
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            _stop(old / pid_file)
    host = socket.gethostname().split(".")[0]
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("ctld", "d"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    _write_config(root, host)
    ETC.mkdir(parents=True, exist_ok=True)
    links = []
    for name in ("slurm.conf", "gres.conf"):
        link = ETC / name
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(root / name)
        links.append(link)
    env = dict(os.environ, SLURM_CONF=str(ETC / "slurm.conf"))
    try:
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={root / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={root / 'munged.pid'}",
                f"--log-file={root / 'munged.log'}",
                f"--seed-file={root / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(["slurmctld", "-i"], check=True, capture_output=True, env=env)
        subprocess.run(["slurmd"], check=True, capture_output=True, env=env)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            sinfo = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
            state = sinfo.stdout
            if state.strip() and set(state.split()) <= {"idle", "mix", "alloc"}:
                break
            time.sleep(0.5)
        else:
            logs = "".join(
                p.read_text()[-2000:] for p in (root / "slurmctld.log", root / "slurmd.log") if p.exists()
            )
            raise RuntimeError(f"the SLURM node did not become idle (sinfo: {state!r})\n{logs}")
        yield env
    finally:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            _stop(root / pid_file)
        for link in links:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()


def job_record(job_id: str, env: dict) -> dict[str, str]:
    """``scontrol show job`` of a job as key -> value (finished jobs stay for MinJobAge)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, env=env
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)
