from pathlib import Path

from morphgen.models import get_family
from morphgen.models.covariates import read_requests
from morphgen.space import Grid
from morphgen.workflow import logged

with logged(snakemake):
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    family.generate_conditioned(
        Path(snakemake.input.autoencoder),
        Path(snakemake.input.prior),
        requests=read_requests(snakemake.input.requests[0]) if snakemake.input.requests else None,
        grid=snakemake.params.grid,
        out_dir=Path(snakemake.output.table).parent,
        affine=Grid.from_config(snakemake.params.space).affine,
    )
