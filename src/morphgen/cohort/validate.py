"""Check every subject's image and covariates before anything runs; fail or exclude, naming each problem."""

from __future__ import annotations

import math

import pandas as pd
from tqdm import tqdm

from morphgen.errors import ConfigError, SubjectError
from morphgen.nifti import load_volume

ON_ERROR = ("fail", "exclude")


def check_subjects(
    subjects: pd.DataFrame, covariates: dict[str, str], on_error: str, progress: bool = True
) -> pd.DataFrame:
    """Check each subject's T1w file and required covariates.

    ``covariates`` maps a covariate name to 'continuous' (must be a finite number) or 'categorical' (must be
    present). Every subject is checked and every problem collected. Returns participant_id, path, status
    ('ok' | 'excluded') and reason ('' when ok). With ``on_error='fail'`` any problem raises
    :class:`SubjectError` whose message lists each bad subject with its file and problem. A covariate that is
    not a column of the sheet at all raises :class:`ConfigError`.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"input.on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    absent = [name for name in covariates if name not in subjects.columns]
    if absent:
        raise ConfigError(
            f"the subject sheet has no column for the covariate(s) {', '.join(absent)} that subpopulations "
            f"need; its columns are: {', '.join(map(str, subjects.columns))}"
        )
    rows = []
    for _, subject in tqdm(
        subjects.iterrows(), total=len(subjects), desc="checking inputs", disable=not progress
    ):
        sid, path = str(subject["participant_id"]), str(subject["path"]) if pd.notna(subject["path"]) else ""
        problems = _covariate_problems(subject, covariates)
        image_problem = _image_problem(sid, path)
        if image_problem:
            problems.insert(0, image_problem)
        rows.append(
            {
                "participant_id": sid,
                "path": path,
                "status": "excluded" if problems else "ok",
                "reason": "; ".join(problems),
            }
        )
    result = pd.DataFrame(rows, columns=["participant_id", "path", "status", "reason"])
    bad = result[result["status"] == "excluded"]
    if on_error == "fail" and not bad.empty:
        if len(bad) == 1:
            row = bad.iloc[0]
            raise SubjectError(row["participant_id"], row["path"] or None, row["reason"])
        lines = [
            f"  subject {r.participant_id!r} ({r.path or 'no file'}): {r.reason}" for r in bad.itertuples()
        ]
        raise SubjectError(
            None,
            None,
            f"{len(bad)} of {len(result)} subjects cannot be used "
            "(input.on_error: exclude would drop them):\n" + "\n".join(lines),
        )
    return result


def _image_problem(subject: str, path: str) -> str:
    if not path:
        return "no T1w image (no path in the sheet, or no [ses-*/]anat/*_T1w.nii[.gz] in its BIDS folder)"
    try:
        load_volume(path, subject=subject)
    except SubjectError as exc:
        return exc.problem
    return ""


def _covariate_problems(subject: pd.Series, covariates: dict[str, str]) -> list[str]:
    problems = []
    for name, kind in covariates.items():
        value = subject[name]
        if _is_missing(value):
            problems.append(f"covariate {name!r} is missing")
        elif kind == "continuous" and not _is_finite_number(value):
            problems.append(f"covariate {name!r} is not a number ({value!r})")
    return problems


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("", "n/a", "na", "nan")
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
