from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.models.preemption import stop_on_signals
from morphgen.tsv import read_tsv
from morphgen.workflow import logged

with logged(snakemake):
    out_dir = Path(snakemake.output.model).parent
    members = read_tsv(snakemake.input.members)
    tokens = Path(snakemake.input.tokens)
    train = [tokens / f"{s}.npy" for s in members.loc[members["split"] == "train", "participant_id"]]
    val = [tokens / f"{s}.npy" for s in members.loc[members["split"] == "test", "participant_id"]]
    stages.clear_stale_checkpoints(out_dir, dict(snakemake.params.items()))
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    with stop_on_signals():  # SIGTERM: checkpoint, exit 75, the rerun resumes
        family.fit_prior(train, val, out_dir)
    stages.finish_training(out_dir)
