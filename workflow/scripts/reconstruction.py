from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.nifti import atomic_directory
from morphgen.workflow import logged

with logged(snakemake):
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    with atomic_directory(snakemake.output.images) as images:
        family.evaluate_reconstruction(
            Path(snakemake.input.model),
            stages.image_map(list(snakemake.input.images)),
            Path(snakemake.output.table),
            images,
        )
