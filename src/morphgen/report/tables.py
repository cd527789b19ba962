"""The paper's tables as DataFrames, optionally written as TSV (atomically, NaN written as ``n/a``).

- :func:`table1_fidelity` — Table 1: bMMD², FID (2D per axis, over slice positions, 3D; only with configured
  feature-network weights, otherwise the columns say so), and pairwise MS-SSIM and 4-G-R-SSIM per
  sub-population, real-vs-real baseline and synthetic.
- :func:`table2_volumes` — Table 2: tissue volumes, real vs synthetic, two-sided t-tests with Bonferroni.
- :func:`subgroup_effects` — Cohen's d between paired sub-populations (old vs young, AD vs CN).
- :func:`truth_check` — measured vs known volumes of the simulated demo cohort.
- :func:`reconstruction_check` — volumes of the autoencoder's reconstructions vs those of the real images.
- :func:`reconstruction_dice` — tissue Dice between each real image's label map and its reconstruction's.
- :func:`reconstruction_fidelity` — MS-SSIM and log bMMD² of the reconstructions against their originals.

Volume tables have an id column (``participant_id``, or ``sample_id`` / ``sample`` / ``id`` for synthetic
samples) and ``<tissue>_ml`` columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from morphgen.errors import SubjectError, paired_subjects
from morphgen.metrics.fid import DEFAULT_FRACTIONS, FeatureExtractor, fid_columns, unmeasured_fid_columns
from morphgen.metrics.fidelity import (
    as_image_stack,
    bmmd2,
    paired_bmmd2,
    pairwise_msssim,
    real_baseline_bmmd2,
    snr,
    split_halves,
    stack_volumes,
)
from morphgen.metrics.gradient_ssim import pairwise_four_g_r_ssim
from morphgen.metrics.stats import bonferroni_threshold, compare_groups
from morphgen.models.covariates import VARY
from morphgen.nifti import load_volume
from morphgen.report.validity import DEFAULT_THRESHOLDS, add_verdicts, truth_verdict
from morphgen.tsv import ID_COLUMNS, NA_REP, id_column, read_tsv, write_tsv  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

TISSUES = ("gm", "wm", "csf", "ventricles")
TRUTH_TISSUES = ("gm", "wm", "csf", "ventricles", "brain", "hippocampus")


# ---------------------------------------------------------------------------------------------------- I/O


def read_members(path: str | Path, split: str | None = None) -> list[str]:
    """Participant ids of a sub-population TSV (participant_id, split columns), optionally of one split."""
    df = read_tsv(path)
    if "participant_id" not in df.columns:
        raise ValueError(f"{path}: no participant_id column (columns: {list(df.columns)})")
    if split is not None:
        if "split" not in df.columns:
            raise ValueError(f"{path}: no split column to select split {split!r}")
        df = df[df["split"].astype(str) == split]
    return df["participant_id"].tolist()


def _members(volumes: pd.DataFrame, ids: Iterable[str], what: str) -> pd.DataFrame:
    col = id_column(volumes, what)
    ids = [str(i) for i in ids]
    subset = volumes[volumes[col].astype(str).isin(ids)]
    missing = len(set(ids)) - subset[col].nunique()
    if missing:
        log.warning("%s: %d of %d members have no volumes (excluded upstream?)", what, missing, len(set(ids)))
    return subset


def _values(df: pd.DataFrame | None, tissue: str) -> np.ndarray:
    col = f"{tissue}_ml"
    if df is None or col not in df.columns:
        return np.empty(0)
    arr = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    return arr[np.isfinite(arr)]


def mean_sd_text(mean: float, sd: float, decimals: int = 1) -> str:
    """``"595.3 ± 32.1"``, as the paper prints volumes; ``n/a`` for a missing mean."""
    if not np.isfinite(mean):
        return NA_REP
    sd_text = f"{sd:.{decimals}f}" if np.isfinite(sd) else NA_REP
    return f"{mean:.{decimals}f} ± {sd_text}"


# ----------------------------------------------------------------------------------------------- Table 1


def table1_fidelity(
    real: Mapping[str, np.ndarray],
    synth: Mapping[str, np.ndarray],
    batch_size: int,
    n_pairs: int,
    kernel_size: int,
    seed: int,
    *,
    n_batches: int = 100,
    estimator: str = "biased",
    extractor_2d: FeatureExtractor | None = None,
    extractor_3d: FeatureExtractor | None = None,
    fid_positions: Sequence[float] | None = DEFAULT_FRACTIONS,
    four_g_r: bool = True,
    out_tsv: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Table 1: per sub-population a ``real`` row and a ``synthetic`` row.

    Real rows: bMMD² and FID between two disjoint random halves of the real images, MS-SSIM and 4-G-R-SSIM
    over pairs of real images (the paper's baseline). Synthetic rows: bMMD² and FID of real vs synthetic,
    MS-SSIM and 4-G-R-SSIM over pairs of synthetic images (diversity: lower is more diverse). Both similarity
    indices see the same pairs. FID columns (:func:`~morphgen.metrics.fid.fid_columns`) hold
    "no weights configured" when the feature network is not configured, NaN with fewer than two images a
    side.
    Both rows of a sub-population use the same MMD batch size, ``min(batch_size, n_real // 2, n_synthetic)``,
    because the biased estimator's floor depends on it; the size used is in column ``mmd_batch_size`` and the
    number of MS-SSIM pairs in ``msssim_pairs``. Metrics that cannot be computed (too few images) are NaN.

    Columns: source, subpopulation, n, bmmd2_mean, bmmd2_sd, fid_axial, fid_coronal, fid_sagittal,
    fid_slices, fid_3d, msssim_mean, msssim_sd, gr4ssim_mean, gr4ssim_sd, snr_mean, snr_sd (mean over sd
    inside the brain, :func:`~morphgen.metrics.fidelity.snr`), mmd_batch_size, msssim_pairs. See
    :mod:`morphgen.metrics.fidelity` for the estimator and kernel.
    """
    rows = []
    names = list(dict.fromkeys([*real.keys(), *synth.keys()]))
    for offset, name in enumerate(names):
        sub_seed = seed + 1000 * offset  # distinct, reproducible draws per sub-population
        x = as_image_stack(real[name], f"real {name}") if name in real else None
        y = as_image_stack(synth[name], f"synthetic {name}") if name in synth else None
        n_real = 0 if x is None else len(x)
        n_synth = 0 if y is None else len(y)
        b = min(batch_size, n_real // 2, n_synth)
        min_b = 2 if estimator == "unbiased" else 1
        if b < batch_size:
            log.warning(
                "%s: MMD batch size %d reduced to %d (real %d, synthetic %d images)",
                name,
                batch_size,
                b,
                n_real,
                n_synth,
            )
        nan2 = (float("nan"), float("nan"))
        mmd_real, mmd_synth = nan2, nan2
        if b >= min_b:
            mmd_real = real_baseline_bmmd2(
                x, b, sub_seed, n_batches=n_batches, estimator=estimator, progress=progress
            )
            mmd_synth = bmmd2(
                x, y, b, sub_seed + 2, n_batches=n_batches, estimator=estimator, progress=progress
            )
        fid_pairs = {"real": None, "synthetic": None}
        if n_real >= 4:
            half_a, half_b = split_halves(n_real, sub_seed + 4)
            fid_pairs["real"] = (x[half_a], x[half_b])
        if n_real >= 2 and n_synth >= 2:
            fid_pairs["synthetic"] = (x, y)
        for source, images, mmd, n in (("real", x, mmd_real, n_real), ("synthetic", y, mmd_synth, n_synth)):
            ssim, gr4 = nan2, nan2
            if n >= 2:
                ssim = pairwise_msssim(images, n_pairs, sub_seed + 3, kernel_size, progress=progress)
                if four_g_r:
                    gr4 = pairwise_four_g_r_ssim(images, n_pairs, sub_seed + 3, progress=progress)
            if fid_pairs[source] is not None:
                fids = fid_columns(*fid_pairs[source], extractor_2d, extractor_3d, fid_positions)
            else:
                fids = unmeasured_fid_columns(extractor_2d, extractor_3d)
            rows.append(
                {
                    "source": source,
                    "subpopulation": name,
                    "n": n,
                    "bmmd2_mean": mmd[0],
                    "bmmd2_sd": mmd[1],
                    **fids,
                    "msssim_mean": ssim[0],
                    "msssim_sd": ssim[1],
                    "gr4ssim_mean": gr4[0],
                    "gr4ssim_sd": gr4[1],
                    **dict(zip(("snr_mean", "snr_sd"), snr(images) if n else nan2, strict=True)),
                    "mmd_batch_size": b if b >= min_b else 0,
                    "msssim_pairs": min(n_pairs, n * (n - 1) // 2),
                }
            )
    df = pd.DataFrame(rows)
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


# ----------------------------------------------------------------------------------------------- Table 2


def table2_volumes(
    real_volumes: pd.DataFrame,
    synth_volumes: Mapping[str, pd.DataFrame],
    subpop_members: Mapping[str, Sequence[str]],
    alpha: float,
    *,
    tissues: Sequence[str] = TISSUES,
    equal_var: bool = False,
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Table 2: tissue volumes (ml) of real vs synthetic images per sub-population with two-sided t-tests.

    For every sub-population in ``subpop_members`` and every tissue with values on both sides (tissues whose
    column is missing or all NaN are skipped), compares synthetic against real: t and Cohen's d are
    synthetic minus real (positive = synthetic larger). ``equal_var=False`` is Welch's test, True Student's.
    The Bonferroni threshold is ``alpha / number of rows``; ``significant`` is ``p < threshold``.

    Columns: subpopulation, tissue, n_real, real_mean, real_sd, n_synthetic, synthetic_mean, synthetic_sd,
    real, synthetic ("mean ± sd" text), t, p, cohen_d, test, bonferroni_threshold, significant.
    """
    rows = []
    for name, ids in subpop_members.items():
        real_sub = _members(real_volumes, ids, f"real volumes of {name}")
        synth_sub = synth_volumes.get(name)
        if synth_sub is None:
            log.warning("%s: no synthetic volumes; left out of Table 2", name)
        for tissue in tissues:
            r, s = _values(real_sub, tissue), _values(synth_sub, tissue)
            if len(r) == 0 or len(s) == 0:
                continue
            c = compare_groups(s, r, equal_var=equal_var)
            rows.append(
                {
                    "subpopulation": name,
                    "tissue": tissue,
                    "n_real": c["n_b"],
                    "real_mean": c["mean_b"],
                    "real_sd": c["sd_b"],
                    "n_synthetic": c["n_a"],
                    "synthetic_mean": c["mean_a"],
                    "synthetic_sd": c["sd_a"],
                    "real": mean_sd_text(c["mean_b"], c["sd_b"]),
                    "synthetic": mean_sd_text(c["mean_a"], c["sd_a"]),
                    "t": c["t"],
                    "p": c["p"],
                    "cohen_d": c["cohen_d"],
                    "test": c["test"],
                }
            )
    df = pd.DataFrame(
        rows,
        columns=[
            "subpopulation",
            "tissue",
            "n_real",
            "real_mean",
            "real_sd",
            "n_synthetic",
            "synthetic_mean",
            "synthetic_sd",
            "real",
            "synthetic",
            "t",
            "p",
            "cohen_d",
            "test",
        ],
    )
    threshold = bonferroni_threshold(alpha, len(df)) if len(df) else float("nan")
    df["bonferroni_threshold"] = threshold
    df["significant"] = (df["p"] < threshold).astype(bool)
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


# ------------------------------------------------------------------------------------------ sub-groups


def default_contrasts(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs ``(second, first)`` of sub-populations sharing a prefix before ``-``, in the order given.

    With the configuration's order (``age-young, age-old``; ``diagnosis-cn, diagnosis-ad``) this gives
    old vs young and AD vs CN. Prefixes with other than exactly two sub-populations are skipped.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split("-", 1)[0], []).append(name)
    return [(members[1], members[0]) for members in groups.values() if len(members) == 2]


def subgroup_effects(
    real_volumes: pd.DataFrame,
    synth_volumes: Mapping[str, pd.DataFrame],
    subpop_members: Mapping[str, Sequence[str]],
    contrasts: Sequence[tuple[str, str]] | None = None,
    *,
    tissues: Sequence[str] = TISSUES,
    equal_var: bool = False,
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Does the designed group effect survive in the samples? Cohen's d of ``a`` minus ``b`` per tissue.

    ``contrasts`` lists pairs ``(a, b)`` of sub-population names, e.g. ``("age-old", "age-young")``; by
    default :func:`default_contrasts` of ``subpop_members``. Real groups are the members' real volumes,
    synthetic groups the samples of each sub-population's prior. Columns: contrast, a, b, tissue, real_d,
    real_p, synthetic_d, synthetic_p, same_sign (both d finite and of the same sign), n_real_a, n_real_b,
    n_synthetic_a, n_synthetic_b.
    """
    if contrasts is None:
        contrasts = default_contrasts(subpop_members.keys())
    rows = []
    for a, b in contrasts:
        for name in (a, b):
            if name not in subpop_members:
                raise ValueError(f"contrast {a} vs {b}: unknown sub-population {name!r}")
        real_a = _members(real_volumes, subpop_members[a], f"real volumes of {a}")
        real_b = _members(real_volumes, subpop_members[b], f"real volumes of {b}")
        for tissue in tissues:
            ra, rb = _values(real_a, tissue), _values(real_b, tissue)
            sa, sb = _values(synth_volumes.get(a), tissue), _values(synth_volumes.get(b), tissue)
            if len(ra) + len(rb) + len(sa) + len(sb) == 0:
                continue
            real = compare_groups(ra, rb, equal_var=equal_var)
            synth = compare_groups(sa, sb, equal_var=equal_var)
            rd, sd = real["cohen_d"], synth["cohen_d"]
            rows.append(
                {
                    "contrast": f"{a} vs {b}",
                    "a": a,
                    "b": b,
                    "tissue": tissue,
                    "real_d": rd,
                    "real_p": real["p"],
                    "synthetic_d": sd,
                    "synthetic_p": synth["p"],
                    "same_sign": bool(np.isfinite(rd) and np.isfinite(sd) and np.sign(rd) == np.sign(sd)),
                    "n_real_a": real["n_a"],
                    "n_real_b": real["n_b"],
                    "n_synthetic_a": synth["n_a"],
                    "n_synthetic_b": synth["n_b"],
                }
            )
    df = pd.DataFrame(rows)
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


# ------------------------------------------------------------------------------------------ truth check


def truth_check(
    participants: pd.DataFrame,
    measured: pd.DataFrame,
    *,
    tissues: Sequence[str] = TRUTH_TISSUES,
    thresholds: Mapping | None = None,
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Measured volumes against the simulated cohort's known truth (``true_<tissue>_mni_ml`` columns).

    Matches rows on participant id. Columns: tissue, n, pearson_r, slope, mape_percent, bias_percent,
    true_mean_ml, measured_mean_ml (see :func:`volume_agreement`) and verdict (``agrees with the truth`` or
    the checks that failed; ``thresholds``: evaluation.validity, as for the reconstructions).
    """
    df = volume_agreement(truth_pairs(participants, measured, tissues), names=("true", "measured"))
    thresholds = thresholds or DEFAULT_THRESHOLDS
    df = df.assign(verdict=[truth_verdict(row, thresholds) for row in df.to_dict("records")])
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


def reconstruction_check(
    real: pd.DataFrame,
    reconstructed: pd.DataFrame,
    *,
    tissues: Sequence[str] = TISSUES,
    thresholds: Mapping | None = None,
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Volumes measured on the autoencoder's reconstructions against those of the same real images.

    The autoencoder has to carry each subject's anatomy through its codes before a prior can learn it; a
    high MS-SSIM alone does not show that (a decoder that draws the mean brain scores well on it). Columns:
    tissue, n, pearson_r, slope, mape_percent, bias_percent, real_mean_ml, reconstructed_mean_ml, verdict
    (``carries`` or what failed, :mod:`morphgen.report.validity`; ``thresholds``: evaluation.validity).
    """
    pairs = reconstruction_pairs(real, reconstructed, tissues)
    df = add_verdicts(
        volume_agreement(pairs, names=("real", "reconstructed")), thresholds or DEFAULT_THRESHOLDS
    )
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


def reconstruction_dice(
    real_labels: Mapping[str, str | Path], reconstructed_labels: Mapping[str, str | Path]
) -> pd.DataFrame:
    """Tissue overlap of each reconstructed subject with its real image (subject -> label map file, both):
    one row per subject with ``dice_<tissue>``, then the rows ``mean`` and ``min``. A reconstruction can have
    the right volumes in the wrong place; Dice shows where (seed 003: 0.84-0.94 for WM, GM and CSF)."""
    from morphgen.metrics.overlap import dice_rows  # MONAI: imported when this table is made

    pairs = {}
    for subject in paired_subjects(reconstructed_labels, real_labels, "label map"):
        real = load_volume(real_labels[subject], subject=subject)
        other = load_volume(reconstructed_labels[subject], subject=subject)
        if real.shape != other.shape or not np.allclose(real.affine, other.affine, atol=1e-3):
            raise SubjectError(
                subject,
                reconstructed_labels[subject],
                f"the label map is not on the grid of the real one, {real_labels[subject]}",
            )
        pairs[subject] = (np.asarray(real.dataobj), np.asarray(other.dataobj))
    df = pd.DataFrame(dice_rows(pairs))
    columns = [c for c in df.columns if c.startswith("dice_")]
    summary = [
        {"subject": "mean", **df[columns].mean().to_dict()},
        {"subject": "min", **df[columns].min().to_dict()},
    ]
    return pd.concat([df, pd.DataFrame(summary)], ignore_index=True)


def reconstruction_fidelity(
    originals: Mapping[str, str | Path],
    reconstructions: Mapping[str, str | Path],
    per_subject: pd.DataFrame,
    batch_size: int,
    seed: int,
    *,
    n_batches: int = 100,
    progress: bool = True,
) -> pd.DataFrame:
    """Seed 003's reconstruction table, one row: MS-SSIM (of ``per_subject``, the family's
    ``reconstruction.tsv``), and the natural log of the bMMD² of reconstructions against their originals
    (:func:`paired_bmmd2`) beside that of two halves of the originals, which differ by their subjects.

    ``originals`` and ``reconstructions`` map subject -> image file; every reconstructed subject needs an
    original. Batches hold ``batch_size`` subjects, fewer when there are not that many.
    """
    subjects = paired_subjects(reconstructions, originals, "image")
    if len(subjects) < 2:
        raise ValueError(f"reconstruction fidelity needs at least 2 reconstructions, got {len(subjects)}")
    x = stack_volumes([originals[s] for s in subjects], subjects)
    y = stack_volumes([reconstructions[s] for s in subjects], subjects)
    if x.shape != y.shape:
        raise ValueError(f"reconstructions {y.shape[1:]} are not on the originals' grid {x.shape[1:]}")
    batch = min(int(batch_size), len(subjects))
    mean, sd = paired_bmmd2(x, y, batch, seed, n_batches=n_batches, progress=progress)
    half = len(subjects) // 2
    real_mean, _ = real_baseline_bmmd2(x, min(batch, half), seed, n_batches=n_batches, progress=progress)
    rows = per_subject[per_subject["subject"].astype(str) != "mean"]
    rows = rows[rows["subject"].astype(str).isin(subjects)]

    def log_of(value: float) -> float:
        return float(np.log(value)) if value > 0 else float("-inf")

    return pd.DataFrame(
        [
            {
                "n_subjects": len(subjects),
                "mae_mean": float(rows["mae"].mean()),
                "psnr_mean": float(rows["psnr"].mean()),
                "msssim_mean": float(rows["msssim"].mean()),
                "msssim_min": float(rows["msssim"].min()),
                "log_bmmd2": log_of(mean),
                "bmmd2_mean": mean,
                "bmmd2_sd": sd,
                "real_log_bmmd2": log_of(real_mean),
                "batch_size": batch,
            }
        ]
    )


def truth_pairs(participants: pd.DataFrame, measured: pd.DataFrame, tissues: Sequence[str]) -> dict:
    """Tissue -> (true, measured) volumes of the subjects in both tables, for tissues present in both."""
    merged = merge_truth(participants, measured)
    return {
        t: (merged[f"true_{t}_mni_ml"], merged[f"{t}_ml"])
        for t in tissues
        if f"true_{t}_mni_ml" in merged.columns and f"{t}_ml" in merged.columns
    }


def reconstruction_pairs(real: pd.DataFrame, reconstructed: pd.DataFrame, tissues: Sequence[str]) -> dict:
    """Tissue -> (real, reconstructed) volumes of the subjects in both tables, for tissues present in both."""
    merged = merge_volumes(real, reconstructed, ("real", "reconstructed"))
    return {
        t: (merged[f"{t}_ml_real"], merged[f"{t}_ml_reconstructed"])
        for t in tissues
        if f"{t}_ml_real" in merged.columns and f"{t}_ml_reconstructed" in merged.columns
    }


def conditioning_pairs(
    requested: pd.DataFrame, measured: pd.DataFrame, columns: Mapping[str, str], in_range: bool = False
) -> dict:
    """Covariate -> (requested, measured) per conditioned sample, for covariates that segmentation measures.

    ``requested`` has an id column, one column per covariate and ``outside_range`` (what the sampler was
    asked for); ``measured`` is the samples' volumes table; ``columns`` maps a covariate to its volume column
    (``ventricles -> ventricles_ml``). With ``in_range``, samples asked for values outside the training range
    are left out.
    """
    a_col, b_col = id_column(requested, "requested covariates"), id_column(measured, "measured volumes")
    left = requested.assign(_id=requested[a_col].astype(str))
    if in_range and "outside_range" in left.columns:
        left = left[left["outside_range"].fillna("").astype(str).eq("")]
    wanted = {name: column for name, column in columns.items() if name in left.columns and column in measured}
    right = pd.DataFrame({f"measured {name}": measured[column] for name, column in wanted.items()})
    right["_id"] = measured[b_col].astype(str).to_numpy()
    merged = left.merge(right, on="_id", how="inner")
    return {name: (merged[name], merged[f"measured {name}"]) for name in wanted}


def grid_row_pairs(requested: pd.DataFrame, measured: pd.DataFrame, columns: Mapping[str, str]) -> dict:
    """:func:`conditioning_pairs` of each measured covariate over the grid row that varies it alone (the
    requests' ``vary`` column); empty for requests without a grid."""
    if VARY not in requested.columns:
        return {}
    out = {}
    for name, column in columns.items():
        row = requested[requested[VARY].astype(str) == name]
        out.update(conditioning_pairs(row, measured, {name: column}))
    return {name: pair for name, pair in out.items() if len(pair[0])}


def conditioning_check(
    requested: pd.DataFrame,
    measured: pd.DataFrame,
    columns: Mapping[str, str],
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Did the samples get the volumes they were asked for? (seed 004 §3.2: r = 0.972 for the ventricles.)

    Per measured covariate, over all conditioned samples and over those asked for values inside the training
    range: n, Pearson r between requested and measured, mean absolute and signed percentage differences.
    When ``requested`` is a grid (its ``vary`` column), also over the grid row that varies that covariate
    alone (``samples``: ``grid row``): one noise and the other covariates fixed, so only the asked value
    changes the sample, as in seed 004's Fig. 2.
    Columns: covariate, samples (``all`` / ``in range`` / ``grid row``), n, pearson_r, mape_percent,
    bias_percent, requested_mean_ml, measured_mean_ml.
    """
    tables = []
    for label, in_range in (("all", False), ("in range", True)):
        pairs = conditioning_pairs(requested, measured, columns, in_range=in_range)
        table = volume_agreement(pairs, names=("requested", "measured"))
        tables.append(table.rename(columns={"tissue": "covariate"}).assign(samples=label))
    rows = grid_row_pairs(requested, measured, columns)
    if rows:
        table = volume_agreement(rows, names=("requested", "measured"))
        tables.append(table.rename(columns={"tissue": "covariate"}).assign(samples="grid row"))
    df = pd.concat(tables, ignore_index=True)
    if df.empty:
        raise ValueError(
            f"conditioning check: no covariate among {list(columns)} is both requested and measured"
        )
    df = df[["covariate", "samples", *[c for c in df.columns if c not in ("covariate", "samples")]]]
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


def generated_conditions(scores: pd.DataFrame) -> pd.DataFrame:
    """The kept samples of a conditioned generation (``scores.tsv``) with the covariates each was conditioned
    on, by ``sample_id`` (the file's name, as in the samples' volume table)."""
    kept = scores[scores["kept"].astype(bool)]
    return kept.assign(sample_id=kept["file"].astype(str).str.replace(r"\.nii(\.gz)?$", "", regex=True))


def pooled(
    groups: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requested, measured) per sub-population as one pair of tables; ids become ``<sub-population>/<id>``
    so that they stay unique."""

    def _join(index: int, what: str) -> pd.DataFrame:
        parts = []
        for subpop, pair in groups.items():
            col = id_column(pair[index], what)
            parts.append(pair[index].assign(**{col: subpop + "/" + pair[index][col].astype(str)}))
        return pd.concat(parts, ignore_index=True, sort=False)

    return _join(0, "requested covariates"), _join(1, "measured volumes")


def conditioning_summary(
    sources: Mapping[str, Mapping[str, tuple[pd.DataFrame, pd.DataFrame]]],
    columns: Mapping[str, str],
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """:func:`conditioning_check` per source of conditioned samples and per sub-population, then pooled.

    ``sources`` maps a source (``generated``: the samples of ``generate``, each conditioned on a training
    subject's covariates; ``requested``: those of ``sample_conditioned``) to sub-population -> (requested,
    measured). Columns: source, subpopulation (``all`` when pooled), then those of :func:`conditioning_check`.
    """
    tables = []
    for source, groups in sources.items():
        groups = dict(groups)
        if len(groups) > 1:
            groups["all"] = pooled(groups)
        for subpop, (requested, measured) in groups.items():
            check = conditioning_check(requested, measured, columns)
            tables.append(check.assign(source=source, subpopulation=subpop))
    if not tables:
        raise ValueError("conditioning summary: no conditioned samples given")
    df = pd.concat(tables, ignore_index=True)
    df = df[["source", "subpopulation", *[c for c in df.columns if c not in ("source", "subpopulation")]]]
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


EFFECT_VOLUMES = ("ventricles", "brain")  # measured volumes whose dependence on a covariate is reported


def _line(x: np.ndarray, y: np.ndarray) -> tuple[int, float, float]:
    """n, Pearson r and least-squares slope of y on x over the finite pairs (nan where undefined)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    r = slope = float("nan")
    if len(x) >= 2 and np.ptp(x) > 0:
        slope = float(np.polyfit(x, y, 1)[0])
        if np.ptp(y) > 0:
            r = float(stats.pearsonr(x, y).statistic)
    return len(x), r, slope


def covariate_effects(
    sources: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
    real: pd.DataFrame,
    covariates: Sequence[str],
    volumes: Sequence[str] = EFFECT_VOLUMES,
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """How each measured volume follows each numeric covariate a model is conditioned on, in its samples and
    in the real subjects: seed 002's age effect, which its samples carry only through the GLM, and seed 004's
    Fig. 4, whatever the covariate segmentation cannot measure (age).

    ``sources``: source -> (requested, measured), the covariates each sample was given (an id column and one
    column per covariate; a grid's ``vary`` column) and the samples' volumes (``<volume>_ml``). For a grid,
    only the row that varies the covariate alone counts (one R-code or one noise along it). ``real``: one row
    per real subject with the covariates by name and the volumes. Rows: source, covariate, volume, n,
    pearson_r, slope (ml per unit of the covariate), real_n, real_pearson_r, real_slope, and slope_ratio
    (synthetic over real: 1 when the samples keep the effect at its size, 0 when they lose it).
    """
    rows = []
    for source, (requested, measured) in sources.items():
        a_col, b_col = id_column(requested, "requested covariates"), id_column(measured, "measured volumes")
        merged = requested.assign(_id=requested[a_col].astype(str)).merge(
            measured.assign(_id=measured[b_col].astype(str)),
            on="_id",
            how="inner",
            suffixes=("", "_measured"),
        )
        for name in covariates:
            if name not in merged.columns or not pd.api.types.is_numeric_dtype(real.get(name)):
                continue  # a text covariate (sex) has no slope
            part = merged
            if VARY in part.columns and part[VARY].fillna("").astype(str).ne("").any():
                part = part[part[VARY].astype(str) == name]
            for volume in volumes:
                column = f"{volume}_ml"
                if column not in part.columns or column not in real.columns:
                    continue
                n, r, slope = _line(
                    pd.to_numeric(part[name], errors="coerce").to_numpy(float),
                    pd.to_numeric(part[column], errors="coerce").to_numpy(float),
                )
                real_n, real_r, real_slope = _line(
                    pd.to_numeric(real[name], errors="coerce").to_numpy(float),
                    pd.to_numeric(real[column], errors="coerce").to_numpy(float),
                )
                if n == 0:
                    continue
                ratio = slope / real_slope if np.isfinite(real_slope) and real_slope != 0 else float("nan")
                rows.append(
                    {
                        "source": source,
                        "covariate": name,
                        "volume": volume,
                        "n": n,
                        "pearson_r": r,
                        "slope": slope,
                        "real_n": real_n,
                        "real_pearson_r": real_r,
                        "real_slope": real_slope,
                        "slope_ratio": ratio,
                    }
                )
    columns = [
        "source",
        "covariate",
        "volume",
        "n",
        "pearson_r",
        "slope",
        "real_n",
        "real_pearson_r",
        "real_slope",
        "slope_ratio",
    ]
    df = pd.DataFrame(rows, columns=columns)
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


def volume_agreement(
    pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], names: tuple[str, str]
) -> pd.DataFrame:
    """Per tissue, volumes measured one way (``names[1]``) against a reference (``names[0]``).

    ``pairs`` maps tissue -> (reference, measured), aligned by subject; rows with a missing value or a zero
    reference are dropped. Columns: tissue, n, Pearson r, slope of measured on reference (least squares:
    1 when the measurement follows the reference ml for ml, 0 when it ignores it), mean absolute % error
    ``100 * mean(|measured - reference| / reference)``, signed bias ``100 * mean((measured - reference) /
    reference)``, and the two means (``<name>_mean_ml``).
    """
    rows = []
    for tissue, (reference, measured) in pairs.items():
        t = pd.to_numeric(pd.Series(reference), errors="coerce").to_numpy(dtype=np.float64)
        m = pd.to_numeric(pd.Series(measured), errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(t) & np.isfinite(m) & (t != 0)
        t, m = t[ok], m[ok]
        if len(t) == 0:
            continue
        r, slope = float("nan"), float("nan")
        if len(t) >= 2 and np.ptp(t) > 0 and np.ptp(m) > 0:
            r = float(stats.pearsonr(m, t).statistic)
        if len(t) >= 2 and np.ptp(t) > 0:
            slope = float(np.polyfit(t, m, 1)[0])  # 0 when every measurement is the same
        rel = (m - t) / np.abs(t)
        rows.append(
            {
                "tissue": tissue,
                "n": len(t),
                "pearson_r": r,
                "slope": slope,
                "mape_percent": float(100 * np.mean(np.abs(rel))),
                "bias_percent": float(100 * np.mean(rel)),
                f"{names[0]}_mean_ml": float(t.mean()),
                f"{names[1]}_mean_ml": float(m.mean()),
            }
        )
    columns = ["tissue", "n", "pearson_r", "slope", "mape_percent", "bias_percent"]
    return pd.DataFrame(rows, columns=columns + [f"{names[0]}_mean_ml", f"{names[1]}_mean_ml"])


def merge_volumes(first: pd.DataFrame, second: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Inner join of two volume tables on id; ``<tissue>_ml`` columns get ``_<name>`` suffixes."""
    a_col, b_col = id_column(first, f"{names[0]} volumes"), id_column(second, f"{names[1]} volumes")
    left = first.assign(_id=first[a_col].astype(str))
    right = second.assign(_id=second[b_col].astype(str))
    left, right = (df[[c for c in df.columns if c == "_id" or c.endswith("_ml")]] for df in (left, right))
    merged = left.merge(right, on="_id", how="inner", suffixes=(f"_{names[0]}", f"_{names[1]}"))
    if merged.empty:
        raise ValueError(
            f"no ids shared by the {names[0]} volumes ({len(first)} rows) and the {names[1]} volumes "
            f"({len(second)} rows)"
        )
    return merged


def with_regions(
    measured: pd.DataFrame, regions: pd.DataFrame, names: Sequence[str] = ("hippocampus",)
) -> pd.DataFrame:
    """``measured`` tissue volumes with the ``<name>_ml`` columns of the regional volume table added (by id),
    so that a truth check covers regions the simulation knows (the demo's hippocampi)."""
    m_col, r_col = id_column(measured, "measured volumes"), id_column(regions, "regional volumes")
    columns = [f"{n}_ml" for n in names if f"{n}_ml" in regions.columns and f"{n}_ml" not in measured.columns]
    right = regions[[r_col, *columns]].assign(_rid=regions[r_col].astype(str)).drop(columns=r_col)
    left = measured.assign(_rid=measured[m_col].astype(str))
    return left.merge(right, on="_rid", how="left").drop(columns="_rid")


def merge_truth(participants: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Inner join of the participants sheet (with truth columns) and measured volumes on participant id."""
    p_col, m_col = id_column(participants, "participants"), id_column(measured, "measured volumes")
    left = participants.assign(_id=participants[p_col].astype(str))
    right = measured.assign(_id=measured[m_col].astype(str))
    right = right[[c for c in right.columns if c == "_id" or c.endswith("_ml") and not c.startswith("true_")]]
    merged = left.merge(right, on="_id", how="inner", suffixes=("_sheet", ""))
    if merged.empty:
        raise ValueError(
            f"no participant ids shared by the participants sheet ({len(participants)} rows) and the "
            f"measured volumes ({len(measured)} rows)"
        )
    return merged
