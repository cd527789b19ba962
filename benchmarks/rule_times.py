"""Summarise Snakemake's per-job benchmark files into one row per rule (for BENCHMARKS.md).

usage: python benchmarks/rule_times.py results/benchmarks [wall_seconds]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def rule_times(bench_dir: Path) -> pd.DataFrame:
    rows = []
    for rule_dir in sorted(p for p in bench_dir.iterdir() if p.is_dir()):
        tables = [pd.read_csv(f, sep="\t") for f in sorted(rule_dir.glob("*.tsv"))]
        if not tables:
            continue
        t = pd.concat(tables)
        rows.append(
            {
                "rule": rule_dir.name,
                "jobs": len(tables),
                "cpu_time_s_sum": round(float(t["s"].sum()), 1),
                "job_s_max": round(float(t["s"].max()), 1),
                "max_rss_mb": round(float(pd.to_numeric(t["max_rss"], errors="coerce").max()), 0),
            }
        )
    return pd.DataFrame(rows).sort_values("cpu_time_s_sum", ascending=False)


def main() -> None:
    table = rule_times(Path(sys.argv[1]))
    print("| rule | jobs | job time summed (s) | longest job (s) | peak RSS (MB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in table.itertuples():
        print(f"| {r.rule} | {r.jobs} | {r.cpu_time_s_sum} | {r.job_s_max} | {r.max_rss_mb:.0f} |")
    total = table.cpu_time_s_sum.sum()
    print(f"| **all** | {table.jobs.sum()} | {total:.1f} | | {table.max_rss_mb.max():.0f} |")


if __name__ == "__main__":
    main()
