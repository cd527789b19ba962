from morphgen.report.comparison import comparison_sources, family_comparison, missing_runs
from morphgen.tsv import write_tsv
from morphgen.workflow import logged

with logged(snakemake) as log:
    sources = comparison_sources(snakemake.input.own, snakemake.params.others)
    for folder in missing_runs(sources):
        log.warning("evaluation.compare_runs: %s has no tables/run_summary.tsv (not run yet?)", folder)
    table = family_comparison(sources)
    write_tsv(table, snakemake.output.table)
    log.info("%d runs side by side: %s", len(table), ", ".join(table["family"].astype(str)))
