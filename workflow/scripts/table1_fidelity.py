from pathlib import Path

from morphgen import stages
from morphgen.report.tables import table1_fidelity
from morphgen.workflow import logged

with logged(snakemake):
    ev = snakemake.params.evaluation
    real, synthetic = stages.fidelity_inputs(
        snakemake.params.subpops,
        list(snakemake.input.members),
        list(snakemake.input.real),
        list(snakemake.input.synthetic),
    )
    table1_fidelity(
        real,
        synthetic,
        batch_size=ev["mmd_batch_size"],
        n_pairs=ev["msssim_pairs"],
        kernel_size=ev["msssim_kernel"],
        seed=0,
        out_tsv=Path(snakemake.output.table),
    )
