"""Errors that name what went wrong, for whom, and where."""

from __future__ import annotations

from pathlib import Path


class MorphgenError(Exception):
    """Base class for every error morphgen raises on purpose."""


class ConfigError(MorphgenError):
    """The configuration or the subject sheet is inconsistent."""


class SubjectError(MorphgenError):
    """A subject's input cannot be used. Carries the subject id, the file and the problem."""

    def __init__(self, subject: str | None, path: str | Path | None, problem: str):
        self.subject = subject
        self.path = None if path is None else str(path)
        self.problem = problem
        who = f"subject {subject!r}" if subject else "input"
        where = f" ({self.path})" if self.path else ""
        super().__init__(f"{who}{where}: {problem}")


class ChecksumError(MorphgenError):
    """A weights file does not match the sha256 given in the configuration."""


def paired_subjects(reconstructions: dict, originals: dict, what: str) -> list[str]:
    """The reconstructed subjects, sorted, once each has an original ``what`` (subject -> file, both);
    names the first reconstruction without one."""
    missing = sorted(set(reconstructions) - set(originals))
    if missing:
        more = f" ({len(missing)} such)" if len(missing) > 1 else ""
        raise SubjectError(
            missing[0], reconstructions[missing[0]], f"reconstructed, but it has no original {what}{more}"
        )
    return sorted(reconstructions)
