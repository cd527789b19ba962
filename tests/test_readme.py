"""Every shell command the README and docs/*.md show, run in a copy of the repository as a new user would
type it.

Snakemake commands are dry-run (``-n``): the plan must build from the config, the profiles and the sample
sheet exactly as written. ``make`` targets are expanded with ``make -n`` and the Snakemake lines of their
recipes dry-run in turn. ``morphgen`` subcommands and ``benchmarks/*.py`` scripts must exist and accept every
option the README gives them (their ``--help``). The GPU test command is collected (``--collect-only``).
A command of a kind not handled here fails the test, so the README cannot name a command nobody ran.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# the documentation a user reads: the README and the pages it links to
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# commands shown inline start with one of these; other code spans are names, keys or paths
COMMAND_START = re.compile(r"(snakemake|make|morphgen|python3?(\.\d+)?|(\w+=\S+ )*\.venv/bin/\w+)\s")
# run by another test: the report needs a finished run (tests/test_workflow.py builds it after the e2e run)
RUN_ELSEWHERE = {"snakemake --report report.html": ("tests/test_workflow.py", '"--report"')}
# the README's example paths of a user's data -> the tiny BIDS folder of the clone fixture
USER_PATHS: dict[str, str] = {}


def readme_commands(text: str) -> list[str]:
    """The shell commands of the README: every line of a ```bash block and every inline command span."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())  # a span may wrap across lines
        if COMMAND_START.match(span + " "):
            commands.extend(part.strip() for part in span.split("&&"))
    return list(dict.fromkeys(commands))


def documented_commands() -> list[str]:
    """The commands of every page of the documentation, each once."""
    return list(dict.fromkeys(c for page in DOCS for c in readme_commands(page.read_text())))


def test_readme_commands_are_found():
    """The parser sees the commands a newcomer reads first (so a broken parser cannot pass every case)."""
    commands = readme_commands(README.read_text())
    commands += documented_commands()
    assert "make demo" in commands and "make test" in commands
    assert any(c.startswith("snakemake --profile profiles/slurm") for c in commands)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's files as a fresh clone has them (tracked and not ignored): no outputs, no .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    root = tmp_path_factory.mktemp("clone")
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.split("\0")):
            source = REPO / name
            if source.is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, root / name)
    else:  # a source tree without git
        shutil.copytree(
            REPO,
            root,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git", ".venv", "results", ".snakemake", "__pycache__"),
        )
    # the README has the user point the paper configuration's EDIT line at their BIDS folder first
    bids = _tiny_bids(tmp_path_factory.mktemp("bids"))
    paper = root / "configs/paper/paper.yaml"
    assert "/path/to/bids" in paper.read_text(), "the paper config's input.bids_dir placeholder moved"
    paper.write_text(paper.read_text().replace("/path/to/bids", str(bids)))
    USER_PATHS["/data/bids"] = str(bids)
    return root


def _tiny_bids(root: Path, n: int = 12) -> Path:
    """A BIDS folder with the covariates the paper configuration's sub-populations use (enough for a plan)."""
    import nibabel as nib
    import numpy as np

    rows = ["participant_id\tage\tsex\tventricle_volume"]
    for i in range(1, n + 1):
        subject = f"sub-{i:02d}"
        (root / subject / "anat").mkdir(parents=True)
        image = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
        nib.save(image, root / subject / "anat" / f"{subject}_T1w.nii.gz")
        rows.append(f"{subject}\t{50 + i}\t{'MF'[i % 2]}\t{20 + i}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


def _run(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd / "src"), **(env or {}))
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _dry_run_snakemake(args: list[str], clone: Path, shown: str) -> None:
    if "--lint" in args:  # a check, not a run: run it
        proc = _run([sys.executable, "-m", "snakemake", *args], clone)
    else:
        proc = _run([sys.executable, "-m", "snakemake", "-n", *args], clone)
    assert proc.returncode == 0, f"`{shown}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    if "--lint" not in args:
        assert "This was a dry-run" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def _options(args: list[str]) -> list[str]:
    return [a.split("=")[0] for a in args if a.startswith("--")]


def _check_help(argv: list[str], args: list[str], clone: Path, shown: str) -> None:
    proc = _run([*argv, "--help"], clone)
    assert proc.returncode == 0, f"`{shown}`: --help failed:\n{proc.stderr[-3000:]}"
    for option in _options(args):
        assert option in proc.stdout, f"`{shown}`: {option} is not an option of {argv[-1]}:\n{proc.stdout}"


def run_readme_command(command: str, clone: Path) -> None:
    """Run ``command`` as the README shows it, dry where a real run is too long; fail if it does not work."""
    if command in RUN_ELSEWHERE:
        test_file, needle = RUN_ELSEWHERE[command]
        assert needle in (REPO / test_file).read_text(), f"{test_file} no longer runs `{command}`"
        return
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"\w+=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    program, args = words[0], words[1:]
    if program.startswith(".venv/bin/"):
        program = program.removeprefix(".venv/bin/")
    if program == "snakemake":
        for name in args:  # a config the README has the user write first: write it as the README says
            if name.endswith(".yaml") and not (clone / name).exists() and _writer_of(name):
                run_readme_command(_writer_of(name), clone)
        _dry_run_snakemake(args, clone, command)
    elif program == "make":
        proc = _run(["make", "-n", *args], clone)
        assert proc.returncode == 0, f"`{command}`: {proc.stderr[-3000:]}"
        # the recipe's Snakemake calls: dry-run the plain ones (a line with a shell substitution is not one)
        for line in re.sub(r"\\\n\s*", " ", proc.stdout).splitlines():  # continued lines joined
            recipe = shlex.split(line) if line.startswith(".venv/bin/snakemake ") and "$" not in line else []
            if recipe and "-n" not in recipe:
                _dry_run_snakemake(recipe[1:], clone, f"{command} -> {line}")
    elif program == "morphgen" and args[0] == "init-config" and {"--bids", "--sheet"} & set(args):
        # quick: run it on the tiny BIDS folder
        args = [USER_PATHS.get(a, a) for a in args]
        if "-o" in args:
            (clone / args[args.index("-o") + 1]).unlink(missing_ok=True)
        proc = _run([str(BIN / "morphgen"), *args], clone)
        assert proc.returncode == 0, f"`{command}`:\n{proc.stderr[-3000:]}"
    elif program == "morphgen":
        _check_help([str(BIN / "morphgen"), args[0]], args[1:], clone, command)
    elif re.fullmatch(r"python3?(\.\d+)?", program) and args and args[0].startswith("benchmarks/"):
        assert (clone / args[0]).is_file(), f"`{command}`: no {args[0]}"
        _check_help([sys.executable, args[0]], args[1:], clone, command)
    elif re.fullmatch(r"python3?(\.\d+)?", program) and args[:2] == ["-m", "venv"]:
        pass  # the manual install: what `make install` does, which every CI run does from a clean clone
    elif program == "pip" and args[:1] == ["install"]:
        pass  # as above
    elif program == "pytest":
        tests = [a for a in args if a.startswith("tests/")]
        assert tests and all((clone / t).is_file() for t in tests), command
        proc = _run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
            clone,
            env,
        )
        assert proc.returncode == 0, f"`{command}`:\n{proc.stdout[-3000:]}"
    else:
        pytest.fail(f"the docs show `{command}`, which no test runs: teach tests/test_readme.py to run it")


def _writer_of(name: str) -> str | None:
    """The README command that writes config file ``name`` (``morphgen init-config ... -o name``)."""
    for command in documented_commands():
        words = shlex.split(command)
        if (
            words[:2] == ["morphgen", "init-config"]
            and "-o" in words
            and words[words.index("-o") + 1] == name
        ):
            return command
    return None


def test_the_own_data_section_is_followed_word_for_word(clone):
    """The starting config the docs have a user write works with their next commands as written."""
    page = (REPO / "docs/own-data.md").read_text()
    assert "docs/own-data.md" in README.read_text()  # the README sends a user there
    commands = readme_commands(page.split("\n## ", 1)[0])
    assert commands[0].startswith("morphgen init-config") and "-o my-study.yaml" in commands[0]
    for command in commands:
        run_readme_command(command, clone)
    written = (clone / "my-study.yaml").read_text()
    assert USER_PATHS["/data/bids"] in written and "ventricle_volume" in written


@pytest.mark.parametrize("command", documented_commands())
def test_readme_command_runs(command, clone):
    run_readme_command(command, clone)


def test_a_snakemake_target_after_config_files_fails_as_the_user_would_see_it(clone):
    """The check catches `--configfile a.yaml b.yaml all` (Snakemake reads `all` as a config file)."""
    with pytest.raises(AssertionError, match="No such file or directory: .all."):
        run_readme_command("snakemake --cores 2 --configfile config.yaml configs/demo/ldm.yaml all", clone)
    run_readme_command("snakemake --cores 2 --configfile config.yaml configs/demo/ldm.yaml -- all", clone)


def test_the_configuration_reference_is_what_the_schema_gives():
    """docs/configuration.md is generated (``morphgen config-reference``); it must not drift from the code."""
    from morphgen.config_reference import config_reference

    expected = config_reference(REPO / "workflow/schemas/config.schema.yaml", REPO / "config.yaml")
    assert (REPO / "docs/configuration.md").read_text() == expected, (
        "docs/configuration.md is stale: run `morphgen config-reference -o docs/configuration.md`"
    )
    for key in ("qc.gate", "input.on_error", "subpopulations.<name>.covariate", "model.autoencoder.lr"):
        assert f"| `{key}` |" in expected, key


def test_every_doc_page_is_linked_from_the_readme():
    text = README.read_text()
    for page in DOCS[1:]:
        assert f"docs/{page.name}" in text, f"{page.name} is not linked from the README"
