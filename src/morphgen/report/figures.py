"""The report's figures as PNG files (matplotlib's Agg canvas, no pyplot state, written atomically).

Colours are the Okabe-Ito colourblind-safe palette: real data blue, synthetic data orange.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from morphgen.nifti import load_volume
from morphgen.png import save_figure
from morphgen.report.pages import header
from morphgen.report.tables import (
    TISSUES,
    TRUTH_TISSUES,
    _members,
    _values,
    conditioning_pairs,
    grid_row_pairs,
    read_tsv,
    reconstruction_pairs,
    truth_pairs,
)
from morphgen.report.validity import AGREES, CARRIES, VALID

REAL_COLOUR = "#0072B2"  # Okabe-Ito blue
SYNTH_COLOUR = "#E69F00"  # Okabe-Ito orange
POINT_COLOUR = "#000000"
FAIL_COLOUR = "#D55E00"  # Okabe-Ito vermillion
PASS_COLOUR = "#009E73"  # Okabe-Ito bluish green
TISSUE_NAMES = {
    "gm": "grey matter",
    "wm": "white matter",
    "csf": "CSF",
    "ventricles": "ventricles",
    "brain": "brain",
}


# ---------------------------------------------------------------------------------------------- samples


def _load_ras(item: str | Path | np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 3D array in RAS+ voxel order and its voxel sizes (arrays are taken as RAS+ and isotropic)."""
    if isinstance(item, (str, Path)):
        img = nib.as_closest_canonical(load_volume(item))
        return img.get_fdata(dtype=np.float32), tuple(float(z) for z in img.header.get_zooms()[:3])
    arr = np.asarray(item, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {arr.shape}")
    return arr, (1.0, 1.0, 1.0)


def orthogonal_planes(
    volume: np.ndarray, convention: str = "radiological"
) -> dict[str, tuple[np.ndarray, tuple[str, str, str, str]]]:
    """Axial, coronal and sagittal centre slices of a RAS+ volume, for ``imshow(origin="upper")``.

    Returns per plane the 2D image (first row at the top) and its edge labels (left, right, top, bottom).
    Axial: anterior up; coronal and sagittal: superior up; sagittal: anterior on the left. ``radiological``
    puts the patient's right on the viewer's left (axial and coronal); ``neurological`` the opposite.
    """
    if convention not in ("radiological", "neurological"):
        raise ValueError(f"convention must be radiological or neurological, got {convention!r}")
    ci, cj, ck = (s // 2 for s in volume.shape)
    # arrays index [i=L->R, j=P->A, k=I->S]; transpose to [vertical, horizontal] and flip so up is A or S
    axial = volume[:, :, ck].T[::-1]  # rows A->P, columns L->R
    coronal = volume[:, cj, :].T[::-1]  # rows S->I, columns L->R
    sagittal = volume[ci, :, :].T[::-1, ::-1]  # rows S->I, columns A->P
    if convention == "radiological":
        axial, coronal = axial[:, ::-1], coronal[:, ::-1]
        lr = ("R", "L")
    else:
        lr = ("L", "R")
    return {
        "axial": (axial, (lr[0], lr[1], "A", "P")),
        "coronal": (coronal, (lr[0], lr[1], "S", "I")),
        "sagittal": (sagittal, ("A", "P", "S", "I")),
    }


def _patient_side(convention: str) -> str:
    """Which side of the patient a figure in this display convention shows on the viewer's left."""
    return "right on the viewer's left" if convention == "radiological" else "left on the viewer's left"


def kept_scores(scores: pd.DataFrame, samples: Sequence[str | Path]) -> list[float]:
    """The score of each kept sample file, in the order of ``samples`` (``scores.tsv`` lists the samples in
    the order they were drawn, the files are named by rank)."""
    kept = scores[scores["kept"].astype(bool)].set_index("file")
    names = [Path(p).name for p in samples]
    missing = [n for n in names if n not in kept.index]
    if missing:
        raise ValueError(f"scores.tsv has no kept row for {', '.join(missing)}")
    return [float(kept.loc[name, "score"]) for name in names]


def sample_grid(
    images: Sequence[str | Path | np.ndarray] | np.ndarray,
    out_png: str | Path,
    title: str,
    n_max: int = 16,
    *,
    ids: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
    convention: str = "radiological",
    per_row: int = 2,
) -> Path:
    """Axial, coronal and sagittal centre slices of up to ``n_max`` volumes, ``per_row`` volumes per row.

    ``images`` are NIfTI paths (reoriented to RAS+) or RAS+ arrays (a 4D array is a stack). Intensities are
    shown in grey on [0, 1] when the volume lies in [0, 1], otherwise on its 0.5-99.5 percentile range.
    ``ids`` and ``scores`` (e.g. the discriminator score) label each volume. The display convention is written
    on the figure and each panel carries its orientation letters.
    """
    items = list(images)[:n_max]
    if not items:
        raise ValueError("sample_grid: no images given")
    n = len(items)
    per_row = max(1, min(per_row, n))
    n_rows = -(-n // per_row)
    # three planes per sample, then a narrow spacer column so samples read as groups; two samples a row keep
    # the panels large once the report scales the figure to its pane
    fig = Figure(figsize=(per_row * (3 * 2.2 + 0.3), 2.6 * n_rows + 1.3))
    grid = fig.add_gridspec(
        n_rows,
        4 * per_row - 1,
        width_ratios=([1, 1, 1, 0.15] * per_row)[:-1],
        wspace=0.03,
        hspace=0.25,
        top=1 - 0.7 / fig.get_figheight(),
        bottom=0.6 / fig.get_figheight(),
        left=0.01,
        right=0.99,
    )
    for k, item in enumerate(items):
        volume, zooms = _load_ras(item)
        lo, hi = (0.0, 1.0) if volume.min() >= 0 and volume.max() <= 1 else np.percentile(volume, [0.5, 99.5])
        aspects = {
            "axial": zooms[1] / zooms[0],
            "coronal": zooms[2] / zooms[0],
            "sagittal": zooms[2] / zooms[1],
        }
        row, col0 = divmod(k, per_row)
        for p, (plane, (image, (left, right, top, bottom))) in enumerate(
            orthogonal_planes(volume, convention).items()
        ):
            ax = fig.add_subplot(grid[row, 4 * col0 + p])
            ax.imshow(
                image,
                cmap="gray",
                vmin=lo,
                vmax=hi,
                origin="upper",
                aspect=aspects[plane],
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            style = {"color": "yellow", "fontsize": 9, "transform": ax.transAxes}
            ax.text(0.02, 0.5, left, ha="left", va="center", **style)
            ax.text(0.98, 0.5, right, ha="right", va="center", **style)
            ax.text(0.5, 0.98, top, ha="center", va="top", **style)
            ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
            if p == 1:
                label = ids[k] if ids is not None else f"#{k + 1}"
                if scores is not None:
                    label = f"{label}  score {scores[k]:.3g}"
                ax.set_title(label, fontsize=11)
    fig.suptitle(title, fontsize=13)
    side = _patient_side(convention)
    footer = (
        f"Panels: axial, coronal, sagittal through the volume centre. {convention.capitalize()} convention "
        f"(patient's {side}); axial: anterior up; sagittal: anterior left."
    )
    fig.text(0.5, 0.01, textwrap.fill(footer, 100), ha="center", va="bottom", fontsize=10)
    return save_figure(fig, out_png)


def covariate_sweep(
    requests: pd.DataFrame | str | Path,
    image_dir: str | Path,
    out_png: str | Path,
    title: str,
    *,
    convention: str = "radiological",
) -> Path:
    """Seed 004's Fig. 2: one row per varied covariate (the grid rows of ``requests.tsv``), the others fixed;
    per sample its coronal and axial centre slices, titled with the asked value and its normalised value
    (0 and 1: the training range), in red when outside that range."""
    table = read_tsv(requests) if isinstance(requests, (str, Path)) else requests
    grid = table[table["vary"].fillna("").astype(str) != ""]
    if grid.empty:
        raise ValueError("covariate_sweep: requests.tsv has no grid rows (model.conditioning.requests.grid)")
    rows = list(dict.fromkeys(grid["vary"]))
    n_cols = int(grid.groupby("vary").size().max())
    fig = Figure(figsize=(max(n_cols * 2.6 + 0.8, 7.5), 1.9 * len(rows) + 1.1))
    spec = fig.add_gridspec(
        len(rows),
        2 * n_cols,
        wspace=0.02,
        hspace=0.35,
        top=1 - 0.6 / fig.get_figheight(),
        bottom=0.5 / fig.get_figheight(),
        left=0.6 / fig.get_figwidth(),
        right=0.995,
    )
    for r, name in enumerate(rows):
        for c, (_, row) in enumerate(grid[grid["vary"] == name].iterrows()):
            volume, zooms = _load_ras(Path(image_dir) / str(row["file"]))
            planes = orthogonal_planes(volume, convention)
            outside = name in str(row.get("outside_range", "") or "").split(",")
            aspects = (("coronal", zooms[2] / zooms[0]), ("axial", zooms[1] / zooms[0]))
            for p, (plane, aspect) in enumerate(aspects):
                ax = fig.add_subplot(spec[r, 2 * c + p])
                image = planes[plane][0]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if p == 0 and c == 0:
                    ax.set_ylabel(name, fontsize=11)
            label = f"{float(row[name]):.4g}  ({float(row[f'{name}_normalised']):.2f})"
            fig.text(
                (spec[r, 2 * c].get_position(fig).x0 + spec[r, 2 * c + 1].get_position(fig).x1) / 2,
                spec[r, 2 * c].get_position(fig).y1 + 0.01,
                label,
                ha="center",
                va="bottom",
                fontsize=9,
                color="#D55E00" if outside else "black",
            )
    fig.suptitle(title, fontsize=12)
    side = _patient_side(convention)
    fig.text(
        0.5,
        0.005,
        f"per sample: coronal, axial centre slices ({convention}: patient's {side})\nvalue asked "
        "(normalised: 0 and 1 are the training range; red: outside it, extrapolated); others at the median",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    return save_figure(fig, out_png)


# ---------------------------------------------------------------------------------------------- volumes


def _as_volumes(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    return table if isinstance(table, pd.DataFrame) else read_tsv(table)


def volume_distributions(
    real_volumes: pd.DataFrame | str | Path,
    synth_volumes: Mapping[str, pd.DataFrame | str | Path],
    subpop_members: Mapping[str, Sequence[str]],
    out_png: str | Path,
    *,
    tissues: Sequence[str] = TISSUES,
    title: str = "Tissue volumes: real vs synthetic",
    seed: int = 0,
) -> Path:
    """One panel per tissue: box plots with the individual values, real and synthetic side by side per
    sub-population. Tissues with no values anywhere are left out."""
    real = _as_volumes(real_volumes)
    synth = {name: _as_volumes(t) for name, t in synth_volumes.items()}
    names = list(subpop_members)
    real_sets = {name: _members(real, subpop_members[name], f"real volumes of {name}") for name in names}
    data = {
        tissue: [(_values(real_sets[name], tissue), _values(synth.get(name), tissue)) for name in names]
        for tissue in tissues
    }
    data = {t: d for t, d in data.items() if any(len(r) + len(s) for r, s in d)}
    if not data:
        raise ValueError("volume_distributions: no tissue has any volume to plot")
    n_panels = len(data)
    # panels side by side, not stacked: the report shows a figure at its pane's width and a tall one loses
    # its top (title and legend)
    per_row = min(3, n_panels)
    n_rows = -(-n_panels // per_row)
    fig = Figure(
        figsize=(per_row * max(3.6, 1.2 * len(names) + 1.4), 3.2 * n_rows + 0.9), layout="constrained"
    )
    rng = np.random.default_rng(seed)
    axes = [fig.add_subplot(n_rows, per_row, k + 1) for k in range(n_panels)]
    for ax, (tissue, pairs) in zip(axes, data.items(), strict=True):
        for g, (r, s) in enumerate(pairs):
            for offset, values, colour in ((-0.2, r, REAL_COLOUR), (0.2, s, SYNTH_COLOUR)):
                if len(values) == 0:
                    continue
                pos = g + offset
                ax.boxplot(
                    [values],
                    positions=[pos],
                    widths=0.32,
                    patch_artist=True,
                    showfliers=False,
                    boxprops={"facecolor": colour, "alpha": 0.45, "edgecolor": colour},
                    medianprops={"color": colour, "linewidth": 2},
                    whiskerprops={"color": colour},
                    capprops={"color": colour},
                )
                jitter = rng.uniform(-0.08, 0.08, size=len(values))
                ax.scatter(pos + jitter, values, s=9, color=POINT_COLOUR, alpha=0.7, zorder=3, linewidths=0)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(
            [f"{n}\n(real {len(r)}, synth {len(s)})" for n, (r, s) in zip(names, pairs, strict=True)],
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("volume (ml)")
        ax.set_title(TISSUE_NAMES.get(tissue, tissue), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [_patch(REAL_COLOUR, "real"), _patch(SYNTH_COLOUR, "synthetic")]
    fig.legend(handles=handles, loc="outside upper right", fontsize=9, ncols=2)
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, out_png)


def _patch(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor=colour, alpha=0.6, label=label)


# ----------------------------------------------------------------------------------------------- losses


# panels of a training table: (title, y label, [(column, legend label)]); a validation column ("val_<name>")
# is drawn dashed in the panel of its training column. Columns in no panel get one of their own.
LOSS_PANELS = (
    ("Total loss", "loss", [("total", "training")]),
    ("L1 reconstruction", "mean absolute error", [("l1", "training")]),
    ("Spectral (FFT) loss", "loss", [("spectral", "training")]),
    ("Perceptual loss", "loss", [("perceptual", "training")]),
    ("Quantisation (commitment) loss", "loss", [("quantisation", "training")]),
    ("KL divergence", "nats", [("kl", "training")]),
    (
        "Adversarial (least squares)",
        "loss",
        [("generator_adversarial", "generator"), ("discriminator", "discriminator")],
    ),
    ("Codebook", "codes", [("codes_used", "used"), ("codes_restarted", "restarted")]),
    ("Gradient norm", "L2 norm", [("grad_norm", "before clipping")]),
    ("Learning rate", "learning rate", [("lr", "generator")]),
    ("Time per epoch", "seconds", [("seconds", "epoch")]),
    ("Prior: cross-entropy", "nats per token", [("train_loss", "training (dropout on)")]),
)


def _loss_panels(columns: list[str]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The panels that have data among ``columns``, then one per column no panel names."""
    panels, named = [], set()
    for title, ylabel, lines in LOSS_PANELS:
        present = [(c, label) for c, label in lines if c in columns]
        for c, _ in lines:
            named.update((c, f"val_{c}"))
        validation = [(f"val_{c}", "validation") for c, _ in lines if f"val_{c}" in columns]
        if present or validation:
            panels.append((title, ylabel, present + validation))
    if "val_nll_per_token" in columns:  # the prior's held-out score sits with its training loss
        named.add("val_nll_per_token")
        for k, (title, ylabel, lines) in enumerate(panels):
            if title.startswith("Prior"):
                panels[k] = (title, ylabel, lines + [("val_nll_per_token", "held out (NLL)")])
    for c in columns:
        if c not in named:
            panels.append((header(c), "value", [(c, header(c))]))
    return panels


def loss_curves(tsv_path: str | Path, out_png: str | Path, title: str) -> Path:
    """A training table (``loss.tsv``) as labelled panels against the optimiser step (else the epoch).

    Related columns share a panel (generator and discriminator; a term and its validation value, dashed).
    A panel uses a log y-axis when its values are positive and span more than a decade. Empty columns are
    left out.
    """
    df = pd.read_csv(tsv_path, sep="\t", na_values=["n/a"])
    numeric = df.select_dtypes(include="number")
    x_col = next((c for c in ("step", "epoch") if c in numeric.columns), None)
    x = numeric[x_col].to_numpy() if x_col else np.arange(len(df))
    columns = [c for c in numeric.columns if c not in ("step", "epoch") and numeric[c].notna().any()]
    if not columns:
        raise ValueError(f"{tsv_path}: no numeric loss column to plot (columns: {list(df.columns)})")
    panels = _loss_panels(columns)
    per_row = min(3, len(panels))
    n_rows = -(-len(panels) // per_row)
    fig = Figure(figsize=(4.4 * per_row, 3.1 * n_rows + 0.8), layout="constrained")
    palette = (REAL_COLOUR, SYNTH_COLOUR, "#009E73")
    for k, (panel_title, ylabel, lines) in enumerate(panels):
        ax = fig.add_subplot(n_rows, per_row, k + 1)
        values = []
        for n, (col, label) in enumerate(lines):
            y = numeric[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(y)
            validation = col.startswith("val_")
            ax.plot(
                x[ok],
                y[ok],
                color=palette[0 if validation else n % len(palette)],
                linestyle="--" if validation else "-",
                linewidth=1.2,
                marker="." if ok.sum() < 30 else None,
                label=label,
            )
            values.append(y[ok])
        v = np.concatenate(values) if values else np.array([])
        if v.size and np.all(v > 0) and v.max() > 10 * v.min():
            ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel({"step": "optimiser step", "epoch": "epoch"}.get(x_col, "row"), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        if len(lines) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, out_png)


def prior_loss_curves(tsv_paths: Mapping[str, str | Path], out_png: str | Path, title: str) -> Path:
    """The priors' curves in one figure: a panel per loss column, one line per sub-population."""
    tables = {name: pd.read_csv(p, sep="\t", na_values=["n/a"]) for name, p in tsv_paths.items()}
    columns = list(
        dict.fromkeys(
            c
            for t in tables.values()
            for c in t.select_dtypes(include="number")
            if c not in ("step", "epoch")
        )
    )
    if not columns:
        raise ValueError(f"no numeric loss column in {list(tsv_paths.values())}")
    fig = Figure(figsize=(4.6 * len(columns), 3.6), layout="constrained")
    palette = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
    for k, col in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), k + 1)
        for n, (name, table) in enumerate(tables.items()):
            if col not in table.columns:
                continue
            x = table["epoch"].to_numpy() if "epoch" in table.columns else np.arange(len(table))
            ax.plot(x, table[col].to_numpy(dtype=np.float64), color=palette[n % len(palette)], label=name)
        panel_title, ylabel = PRIOR_LOSS_LABELS.get(col, (header(col), "loss"))
        ax.set_title(panel_title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8, title="prior")
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, out_png)


PRIOR_LOSS_LABELS = {
    "train_loss": ("Training loss", "cross-entropy (nats per token)"),
    "val_nll_per_token": ("Held-out negative log-likelihood", "nats per token"),
    "val_loss": ("Held-out loss", "loss"),
    "train_mse": ("Training denoising error", "mean squared error"),
    "val_mse": ("Held-out denoising error", "mean squared error"),
}


# ------------------------------------------------------------------------------------------ truth check


def truth_scatter(
    participants: pd.DataFrame | str | Path,
    measured: pd.DataFrame | str | Path,
    out_png: str | Path,
    *,
    tissues: Sequence[str] = TRUTH_TISSUES,
    verdicts: Mapping[str, str] | None = None,
    title: str = "Simulated cohort: measured vs true volumes",
) -> Path:
    """Measured against true volume per tissue, with the identity line, Pearson r in each panel title and,
    with ``verdicts`` (tissue -> the truth table's verdict), whether the tissue agrees with the truth."""
    pairs = truth_pairs(_as_volumes(participants), _as_volumes(measured), tissues)
    if not pairs:
        raise ValueError("truth_scatter: no tissue has both true_<tissue>_mni_ml and <tissue>_ml columns")
    return agreement_scatter(
        pairs, out_png, title, ("true volume (ml)", "measured volume (ml)"), verdicts=verdicts, good=AGREES
    )


def reconstruction_scatter(
    real: pd.DataFrame | str | Path,
    reconstructed: pd.DataFrame | str | Path,
    out_png: str | Path,
    *,
    tissues: Sequence[str] = TISSUES,
    verdicts: Mapping[str, str] | None = None,
    title: str = "Autoencoder: volumes of reconstructions vs the real images",
) -> Path:
    """Volume measured on each reconstruction against the same subject's real image, per tissue; with
    ``verdicts`` (tissue -> the reconstruction table's verdict), whether the autoencoder carries it."""
    pairs = reconstruction_pairs(_as_volumes(real), _as_volumes(reconstructed), tissues)
    if not pairs:
        raise ValueError("reconstruction_scatter: the two volume tables share no <tissue>_ml column")
    return agreement_scatter(
        pairs, out_png, title, ("real image (ml)", "reconstruction (ml)"), verdicts=verdicts, good=CARRIES
    )


def conditioning_scatter(
    sources: Mapping[str, tuple[pd.DataFrame | str | Path, pd.DataFrame | str | Path]],
    columns: Mapping[str, str],
    out_png: str | Path,
    *,
    title: str = "Conditioned samples: measured vs requested volumes",
) -> Path:
    """Per source of conditioned samples (a row of panels) and measured covariate, the volume segmentation
    found against the one the sample was asked for; for a grid, one more row with each grid row alone (only
    the asked covariate changes along it). ``sources``: name -> (requested, measured)."""
    pairs, per_row = {}, 1
    for source, (requested, measured) in sources.items():
        requested, measured = _as_volumes(requested), _as_volumes(measured)
        found = conditioning_pairs(requested, measured, columns)
        pairs.update({f"{name}: {source}": pair for name, pair in found.items()})
        per_row = max(per_row, len(found))
        rows = grid_row_pairs(requested, measured, columns)
        pairs.update({f"{name}: {source}, grid row": pair for name, pair in rows.items()})
    if not pairs:
        raise ValueError(
            f"conditioning_scatter: no covariate among {list(columns)} is requested and measured"
        )
    return agreement_scatter(pairs, out_png, title, ("requested (ml)", "measured (ml)"), per_row)


def agreement_scatter(
    pairs: dict[str, tuple[Sequence[float], Sequence[float]]],
    out_png: str | Path,
    title: str,
    axis_labels: tuple[str, str],
    per_row: int = 3,
    *,
    verdicts: Mapping[str, str] | None = None,
    good: str = "",
    panel_axes: Mapping[str, tuple[str, str]] | None = None,
    notes: Mapping[str, str] | None = None,
    point_names: Mapping[str, Sequence[str]] | None = None,
    n_named: int = 3,
) -> Path:
    """One panel per tissue: measured (y) against reference (x) with the identity line; r and n in titles.

    With ``verdicts`` (tissue -> verdict), each panel says its verdict: in green when it is ``good``, in red
    (and the panel's title too) when a check failed, so a disagreeing tissue cannot pass unnoticed.
    ``panel_axes`` overrides ``axis_labels`` per panel, ``notes`` adds a line under a panel's title (what a
    positive value means), and ``point_names`` names each point so the ``n_named`` farthest from the
    identity line are labelled.
    """
    per_row = min(per_row, len(pairs))
    n_rows = -(-len(pairs) // per_row)
    fig = Figure(figsize=(3.8 * per_row, 3.6 * n_rows + 0.6), layout="constrained")
    for k, (tissue, (reference, measured)) in enumerate(pairs.items()):
        ax = fig.add_subplot(n_rows, per_row, k + 1)
        t = pd.to_numeric(pd.Series(reference), errors="coerce").to_numpy(dtype=np.float64)
        m = pd.to_numeric(pd.Series(measured), errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(t) & np.isfinite(m)
        t, m = t[ok], m[ok]
        ax.scatter(t, m, s=14, color=REAL_COLOUR, alpha=0.8, linewidths=0)
        names = (point_names or {}).get(tissue)
        if names is not None and len(t):
            named = np.asarray(names, dtype=object)[ok]
            for i in np.argsort(-np.abs(m - t))[:n_named]:
                ax.annotate(
                    str(named[i]), (t[i], m[i]), xytext=(3, 3), textcoords="offset points", fontsize=7
                )
        if len(t):
            lo, hi = float(min(t.min(), m.min())), float(max(t.max(), m.max()))
            pad = 0.05 * (hi - lo) if hi > lo else 1.0
            ax.plot(
                [lo - pad, hi + pad],
                [lo - pad, hi + pad],
                color=SYNTH_COLOUR,
                linestyle="--",
                linewidth=1,
                label="identity",
            )
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        r = np.corrcoef(t, m)[0, 1] if len(t) >= 2 and np.ptp(t) > 0 and np.ptp(m) > 0 else float("nan")
        verdict = (verdicts or {}).get(tissue)
        bad = verdict is not None and verdict != good
        ax.set_title(
            f"{TISSUE_NAMES.get(tissue, tissue)}  (r = {r:.3f}, n = {len(t)})",
            fontsize=10,
            color=FAIL_COLOUR if bad else "black",
        )
        if (notes or {}).get(tissue):
            note = f"{notes[tissue]}\ndashed: synthetic = real"
            ax.text(0.03, 0.97, note, transform=ax.transAxes, ha="left", va="top", fontsize=7.5)
        if verdict is not None:
            ax.text(
                0.97,
                0.03,
                textwrap.fill(verdict, 34),
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=8,
                color=FAIL_COLOUR if bad else PASS_COLOUR,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
            )
        xlabel, ylabel = (panel_axes or {}).get(tissue, axis_labels)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
        if k == 0 and not (notes or {}).get(tissue):  # a note says what the dashed line is
            ax.legend(fontsize=8, loc="upper left")
    # a title wider than a figure of one or two panels is cut at both ends: wrap it to the figure
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 8)), fontsize=12)
    return save_figure(fig, out_png)


def _short_contrast(name: str) -> str:
    """``age-old vs age-young`` -> ``old vs young``, so panel titles fit."""
    return " vs ".join(part.split("-", 1)[-1] for part in name.split(" vs "))


def effects_scatter(
    effects: pd.DataFrame | str | Path, out_png: str | Path, agreement: pd.DataFrame | None = None
) -> Path:
    """Seed 002's Fig. 3: per group contrast (and age), each region's synthetic effect against its real one.

    ``effects`` is :func:`morphgen.report.regions.region_effects`' table; panels without a finite pair of
    effects (e.g. the age r of samples that carry no age) are left out.
    """
    table = _as_volumes(effects)
    validity = {}
    if agreement is not None and "validity" in agreement.columns:
        validity = {(r["comparison"], r["name"]): str(r["validity"]) for r in agreement.to_dict("records")}
    pairs, axes, notes, names, verdicts = {}, {}, {}, {}, {}
    for (effect, name), group in table.groupby(["effect", "name"], sort=False):
        real = pd.to_numeric(group["real"], errors="coerce")
        synth = pd.to_numeric(group["synthetic"], errors="coerce")
        if not (real.notna() & synth.notna()).any():
            continue
        if effect == "cohen_d":
            label = f"{_short_contrast(name)}, d"
            first, second = (part.split("-", 1)[-1] for part in name.split(" vs "))
            axes[label] = ("real effect (Cohen's d)", "synthetic effect (Cohen's d)")
            notes[label] = f"d > 0: region larger in {first} than in {second}"
        else:
            label = f"{name}, r with volume"
            axes[label] = (f"real: r of volume with {name}", f"synthetic: r of volume with {name}")
            notes[label] = f"r > 0: region larger with higher {name}"
        pairs[label] = (real.to_numpy(), synth.to_numpy())
        names[label] = list(group["region"].astype(str))
        verdict = validity.get((effect, name))
        if verdict:  # the reasons are long: the figure says whether, effect_agreement.tsv says why
            verdicts[label] = (
                verdict if verdict == VALID else f"{verdict.split(':')[0]} (why: effect_agreement)"
            )
    if not pairs:
        pairs = {"no synthetic effect measured": ([], [])}
    return agreement_scatter(
        pairs,
        out_png,
        "Regional effects, synthetic vs real: one point per region, the 3 farthest from agreement named",
        ("real", "synthetic"),
        panel_axes=axes,
        notes=notes,
        point_names=names,
        verdicts=verdicts,
        good=VALID,
    )
