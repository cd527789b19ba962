from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.qc_table(
        snakemake.input.inputs, list(snakemake.input.rows), snakemake.params.qc, snakemake.output.table
    )
