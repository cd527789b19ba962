from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.models.engine.preemption import stop_on_signals
from morphgen.space import Grid
from morphgen.workflow import logged

with logged(snakemake):
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    covariates = None
    if "members" in snakemake.input.keys():  # a conditioned prior: the sub-population's training subjects
        covariates = stages.training_covariates(
            snakemake.input.subjects,
            snakemake.input.volumes,
            snakemake.input.members,
            snakemake.params.conditioning,
        )
    with stop_on_signals():  # SIGTERM: save the samples drawn so far, exit 75, the rerun resumes
        family.generate(
            Path(snakemake.input.autoencoder),
            Path(snakemake.input.prior),
            n_generate=snakemake.params.n_generate,
            n_keep=snakemake.params.n_keep,
            out_dir=Path(snakemake.output.scores).parent,
            affine=Grid.from_config(snakemake.params.space).affine,
            covariates=covariates,
        )
