from pathlib import Path

import pandas as pd

from morphgen.report.comparison import run_summary
from morphgen.tsv import write_tsv
from morphgen.workflow import logged

with logged(snakemake) as log:
    results = Path(snakemake.output.table).parent.parent  # <results>/tables/run_summary.tsv
    row = run_summary(results, snakemake.params.family)
    write_tsv(pd.DataFrame([row]), snakemake.output.table)
    log.info("summary of the %s run in %s", snakemake.params.family, results)
