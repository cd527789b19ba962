"""When is a synthetic effect a finding? Gates from the autoencoder's reconstructions and the samples' spread.

A Cohen's d, a p-value or a t-map between synthetic groups means something only when (1) the autoencoder
carries each subject's anatomy through its codes, so the samples can differ as subjects do, and (2) the
samples of each sub-population have not collapsed onto a few images. Otherwise a 0.1 ml difference between
near-identical samples prints as d = -5. The tables keep their numbers and add a ``validity`` column:
``valid``, or ``not a finding: <why>``.

Thresholds (``evaluation.validity``):

* ``reconstruction_r`` (0.9), ``reconstruction_slope`` ([0.7, 1.3]) and ``reconstruction_bias_percent`` (10):
  a tissue is carried when the reconstructions' volumes correlate with the real ones at least that well, the
  slope of reconstructed on real lies in the range, and the mean bias is within the bound;
* ``diversity_ratio`` (0.5): a sub-population has collapsed when, in any tissue, the sd of its samples'
  volumes is below this share of the sd of its real subjects'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from morphgen.errors import ConfigError
from morphgen.tsv import id_column

DEFAULT_THRESHOLDS = {
    "reconstruction_r": 0.9,
    "reconstruction_slope": (0.7, 1.3),
    "reconstruction_bias_percent": 10.0,
    "diversity_ratio": 0.5,
}
VALID = "valid"


def thresholds_of(evaluation: Mapping | None) -> dict:
    """The defaults updated with ``evaluation.validity``; a bad value raises ConfigError naming its key."""
    given = dict((evaluation or {}).get("validity") or {})
    unknown = sorted(set(given) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ConfigError(
            f"evaluation.validity: unknown keys {unknown} (known: {sorted(DEFAULT_THRESHOLDS)})"
        )
    out = {**DEFAULT_THRESHOLDS, **given}
    slope = out["reconstruction_slope"]
    if not (isinstance(slope, Sequence) and len(slope) == 2 and float(slope[0]) < float(slope[1])):
        raise ConfigError(f"evaluation.validity.reconstruction_slope: give [low, high], got {slope!r}")
    out["reconstruction_slope"] = (float(slope[0]), float(slope[1]))
    for key in ("reconstruction_r", "reconstruction_bias_percent", "diversity_ratio"):
        if not isinstance(out[key], int | float) or out[key] < 0:
            raise ConfigError(f"evaluation.validity.{key}: a number >= 0, got {out[key]!r}")
        out[key] = float(out[key])
    return out


CARRIES = "carries"
AGREES = "agrees with the truth"


def reconstruction_verdict(row: Mapping, thresholds: Mapping) -> str:
    """``carries`` or ``does not carry: <the checks that failed>`` for one row of the reconstruction table."""
    return agreement_verdict(row, thresholds, CARRIES, "does not carry")


def truth_verdict(row: Mapping, thresholds: Mapping) -> str:
    """For one tissue of the demo's truth table, whether the measured volumes follow the simulated truth as
    the reconstruction check asks of an autoencoder (same thresholds): ``agrees with the truth`` or
    ``disagrees: <the checks that failed>``."""
    return agreement_verdict(row, thresholds, AGREES, "disagrees")


def agreement_verdict(row: Mapping, thresholds: Mapping, agrees: str, disagrees: str) -> str:
    """``agrees`` when r, slope and bias of a volume-agreement row are within ``thresholds``, otherwise
    ``<disagrees>: <the checks that failed>``."""
    low, high = thresholds["reconstruction_slope"]
    r, slope, bias = (float(row.get(k, np.nan)) for k in ("pearson_r", "slope", "bias_percent"))
    failed = []
    if not np.isfinite(r) or r < thresholds["reconstruction_r"]:
        failed.append(f"r {r:.2f} < {thresholds['reconstruction_r']:g}")
    if not np.isfinite(slope) or not low <= slope <= high:
        failed.append(f"slope {slope:.2f} outside {low:g}-{high:g}")
    if not np.isfinite(bias) or abs(bias) > thresholds["reconstruction_bias_percent"]:
        failed.append(f"bias {bias:+.0f}% beyond ±{thresholds['reconstruction_bias_percent']:g}%")
    return agrees if not failed else f"{disagrees}: " + ", ".join(failed)


def add_verdicts(reconstruction: pd.DataFrame, thresholds: Mapping) -> pd.DataFrame:
    """The reconstruction table with its ``verdict`` column."""
    verdicts = [reconstruction_verdict(row, thresholds) for row in reconstruction.to_dict("records")]
    return reconstruction.assign(verdict=verdicts)


def sd_ratio(real: np.ndarray, synthetic: np.ndarray) -> float:
    """sd of the synthetic values over sd of the real ones (NaN when either has fewer than 2 values)."""
    real, synthetic = np.asarray(real, dtype=np.float64), np.asarray(synthetic, dtype=np.float64)
    real, synthetic = real[np.isfinite(real)], synthetic[np.isfinite(synthetic)]
    if len(real) < 2 or len(synthetic) < 2 or np.std(real, ddof=1) == 0:
        return float("nan")
    return float(np.std(synthetic, ddof=1) / np.std(real, ddof=1))


@dataclass
class Validity:
    """What the autoencoder carries and which sub-populations' samples have collapsed."""

    thresholds: dict
    verdicts: dict[str, str] = field(default_factory=dict)  # tissue -> reconstruction verdict
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)  # subpop -> tissue -> sd ratio

    def autoencoder_reasons(self, tissues: Iterable[str] | None = None) -> list[str]:
        chosen = list(self.verdicts) if tissues is None else [t for t in tissues if t in self.verdicts]
        bad = [t for t in chosen if self.verdicts[t] != "carries"]
        return [f"the autoencoder does not carry {', '.join(bad)}"] if bad else []

    def collapse_reasons(self, subpops: Iterable[str], tissues: Iterable[str] | None = None) -> list[str]:
        limit = self.thresholds["diversity_ratio"]
        reasons = []
        for subpop in subpops:
            ratios = self.ratios.get(subpop, {})
            chosen = ratios if tissues is None else {t: ratios[t] for t in tissues if t in ratios}
            low = {t: v for t, v in chosen.items() if np.isfinite(v) and v < limit}
            if low:
                worst = min(low, key=low.get)
                reasons.append(
                    f"{subpop} samples collapsed ({worst} sd {low[worst]:.2g} of real < {limit:g})"
                )
        return reasons

    def of(
        self,
        subpops: Iterable[str],
        tissues: Iterable[str] | None = None,
        carried: Iterable[str] | None | str = "same",
    ) -> str:
        """``valid`` or ``not a finding: ...`` for an effect between ``subpops`` in ``tissues`` (None: all).

        ``carried``: the tissues the autoencoder must carry for it ("same": ``tissues``; None: all it was
        checked on, for regions and maps that no single tissue stands for).
        """
        tissues = None if tissues is None else list(tissues)
        must_carry = tissues if carried == "same" else carried
        reasons = self.autoencoder_reasons(must_carry) + self.collapse_reasons(subpops, tissues)
        return VALID if not reasons else "not a finding: " + "; ".join(reasons)


def contrast_subpops(name: str, all_subpops: Sequence[str]) -> list[str]:
    """The sub-populations of a contrast named ``a vs b``; all of them for any other name (age)."""
    parts = str(name).split(" vs ")
    return parts if len(parts) == 2 else list(all_subpops)


def annotate_table2(table: pd.DataFrame, validity: Validity) -> pd.DataFrame:
    """Table 2 with ``sd_ratio`` (synthetic sd over real sd) and ``validity`` per row."""
    ratio = table["synthetic_sd"] / table["real_sd"].where(table["real_sd"] > 0)
    rows = zip(table["subpopulation"], table["tissue"], strict=True)
    return table.assign(sd_ratio=ratio, validity=[validity.of([s], [t]) for s, t in rows])


def annotate_effects(effects: pd.DataFrame, validity: Validity) -> pd.DataFrame:
    """The sub-group effects table (contrast of a vs b per tissue) with ``validity``."""
    rows = zip(effects["a"], effects["b"], effects["tissue"], strict=True)
    return effects.assign(validity=[validity.of([a, b], [t]) for a, b, t in rows])


def annotate_region_effects(
    effects: pd.DataFrame, validity: Validity, subpops: Sequence[str]
) -> pd.DataFrame:
    """Regional effects (``effect``, ``name``, ``region``) with ``validity``: the region's spread in the
    sub-populations compared, and the autoencoder over every tissue it was checked on."""
    rows = zip(effects["name"], effects["region"], strict=True)
    return effects.assign(
        validity=[validity.of(contrast_subpops(n, subpops), [r], carried=None) for n, r in rows]
    )


def annotate_agreement(agreement: pd.DataFrame, validity: Validity, subpops: Sequence[str]) -> pd.DataFrame:
    """The effect-agreement table with ``validity``: over all regions of the sub-populations it compares."""
    out = []
    for comparison, name in zip(agreement["comparison"], agreement["name"], strict=True):
        chosen = [name] if comparison == "real_vs_synthetic_d" else contrast_subpops(name, subpops)
        out.append(validity.of(chosen, None, carried=None))
    return agreement.assign(validity=out)


def assess(
    reconstruction: pd.DataFrame | None,
    real: pd.DataFrame,
    synthetic: Mapping[str, pd.DataFrame],
    members: Mapping[str, Sequence[str]],
    thresholds: Mapping,
    tissues: Sequence[str],
) -> Validity:
    """The :class:`Validity` of a run: its reconstruction table, real volumes and each sub-population's."""
    verdicts = {}
    if reconstruction is not None and len(reconstruction):
        table = reconstruction if "verdict" in reconstruction else add_verdicts(reconstruction, thresholds)
        verdicts = dict(zip(table["tissue"].astype(str), table["verdict"].astype(str), strict=True))
    ratios: dict[str, dict[str, float]] = {}
    real_ids = real[id_column(real, "real volumes")].astype(str)
    for subpop, ids in members.items():
        samples = synthetic.get(subpop)
        if samples is None:
            continue
        real_sub = real[real_ids.isin([str(i) for i in ids])]
        ratios[subpop] = {
            t: sd_ratio(real_sub[f"{t}_ml"], samples[f"{t}_ml"])
            for t in tissues
            if f"{t}_ml" in real_sub and f"{t}_ml" in samples
        }
    return Validity(dict(thresholds), verdicts, ratios)


__all__ = [
    "AGREES",
    "CARRIES",
    "DEFAULT_THRESHOLDS",
    "VALID",
    "Validity",
    "add_verdicts",
    "assess",
    "sd_ratio",
    "thresholds_of",
    "truth_verdict",
]
