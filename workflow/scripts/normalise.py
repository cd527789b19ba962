from morphgen import stages
from morphgen.workflow import logged

with logged(snakemake):
    stages.normalise(
        snakemake.input.images,
        snakemake.input.segmentation,
        snakemake.input.volumes,
        snakemake.params.space,
        snakemake.params.evaluation,
        snakemake.params.segmentation,
        snakemake.output.maps,
        snakemake.output.regions,
    )
