from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.nifti import atomic_directory
from morphgen.workflow import logged

with logged(snakemake):
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    # a folder output: filled beside its final name, then renamed, so a killed job leaves no partial one
    with atomic_directory(snakemake.output.tokens) as tokens:
        family.encode(
            Path(snakemake.input.model),
            stages.image_map(list(snakemake.input.images)),
            tokens,
            augmented_copies=snakemake.params.latents.get("augmented_copies", 0),
        )
