from morphgen.tsv import concat_tsvs
from morphgen.workflow import logged

with logged(snakemake) as log:
    joined = concat_tsvs(list(snakemake.input.tables), snakemake.output.table)
    log.info(
        "%d rows from %d tables into %s", len(joined), len(snakemake.input.tables), snakemake.output.table
    )
