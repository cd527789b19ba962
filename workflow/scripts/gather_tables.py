from morphgen.tsv import concat_tsvs
from morphgen.workflow import logged

with logged(snakemake):
    concat_tsvs(list(snakemake.input.tables), snakemake.output.table)
