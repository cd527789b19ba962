from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.check_inputs(
        snakemake.params.input, snakemake.params.subpopulations, snakemake.input.sheet, snakemake.output.qc
    )
