from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.workflow import logged

with logged(snakemake):
    out_dir = Path(snakemake.output.model).parent
    stages.clear_stale_checkpoints(out_dir, dict(snakemake.params.items()))
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    family.fit_autoencoder(
        [Path(p) for p in snakemake.input.train], [Path(p) for p in snakemake.input.val], out_dir
    )
    stages.finish_training(out_dir)
