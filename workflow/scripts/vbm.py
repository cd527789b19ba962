from morphgen import stages
from morphgen.nifti import atomic_directory
from morphgen.workflow import logged

with logged(snakemake):
    out = snakemake.output
    with atomic_directory(out.maps) as maps, atomic_directory(out.figures) as figures:
        stages.vbm(
            list(snakemake.input.members),
            list(snakemake.input.real),
            list(snakemake.input.synthetic),
            snakemake.params.subpopulations,
            snakemake.params.space,
            snakemake.params.vbm,
            maps,
            out.table,
            figures,
            volume_tsvs={
                "real": snakemake.input.real_volumes,
                "synthetic": list(snakemake.input.synthetic_volumes),
                "reconstruction": snakemake.input.reconstruction,
            },
            evaluation=snakemake.params.evaluation,
        )
