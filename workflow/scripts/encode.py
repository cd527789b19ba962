from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.workflow import logged

with logged(snakemake):
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    family.encode(
        Path(snakemake.input.model),
        stages.image_map(list(snakemake.input.images)),
        Path(snakemake.output.tokens),
        augmented_copies=snakemake.params.latents.get("augmented_copies", 0),
    )
