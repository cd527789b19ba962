from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.models.engine.preemption import stop_on_signals
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake):
    out_dir = Path(snakemake.output.model).parent
    members = read_tsv(snakemake.input.members)
    tokens = Path(snakemake.input.tokens)
    train = [tokens / f"{s}.npy" for s in members.loc[members["split"] == "train", "participant_id"]]
    val = [tokens / f"{s}.npy" for s in members.loc[members["split"] == "test", "participant_id"]]
    covariates = None
    if "volumes" in snakemake.input.keys():  # a conditioned prior: each subject's covariates
        covariates = stages.covariates(
            snakemake.input.subjects, snakemake.input.volumes, snakemake.params.conditioning
        )
    extra = {}
    if "autoencoder" in snakemake.input.keys():  # a prior that reads the autoencoder (catalogue)
        extra["model_path"] = Path(snakemake.input.autoencoder)
    stages.clear_stale_checkpoints(out_dir, dict(snakemake.params.items()))
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    with stop_on_signals():  # SIGTERM: checkpoint, exit 75, the rerun resumes
        family.fit_prior(train, val, out_dir, covariates=covariates, **extra)
    stages.finish_training(out_dir)
