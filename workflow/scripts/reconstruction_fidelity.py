from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake) as log:
    table = stages.reconstruction_fidelity(
        list(snakemake.input.originals),
        snakemake.input.reconstructions,
        snakemake.input.per_subject,
        snakemake.params.evaluation,
        snakemake.params.seed,
        snakemake.output.table,
    )
    log.info("reconstructions against their originals:\n%s", table.T.to_string())
