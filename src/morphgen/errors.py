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
