from morphgen import stages
from morphgen.nifti import atomic_directory
from morphgen.workflow import logged

with logged(snakemake):
    with atomic_directory(snakemake.output.maps) as maps:
        stages.reconstruction_vbm(
            list(snakemake.input.real),
            list(snakemake.input.reconstructions),
            snakemake.params.space,
            snakemake.params.vbm,
            snakemake.params.alpha,
            maps,
            snakemake.output.table,
            snakemake.output.figure,
        )
