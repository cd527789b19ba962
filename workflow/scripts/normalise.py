from morphgen import stages
from morphgen.nifti import atomic_directory
from morphgen.workflow import logged

with logged(snakemake):
    with atomic_directory(snakemake.output.maps) as maps:
        stages.normalise(
            snakemake.input.images,
            snakemake.input.segmentation,
            snakemake.input.volumes,
            snakemake.params.space,
            snakemake.params.evaluation,
            snakemake.params.segmentation,
            maps,
            snakemake.output.regions,
            subjects=snakemake.params.get("subjects"),
        )
