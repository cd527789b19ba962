from pathlib import Path

from morphgen import stages
from morphgen.models import get_family
from morphgen.weights import sha256sum
from morphgen.workflow import logged

with logged(snakemake):
    out_dir = Path(snakemake.output.model).parent
    pretrained = [Path(p) for p in snakemake.input.pretrained]
    stamp = dict(snakemake.params.items())
    if pretrained:  # a new pre-trained model must not resume the old fine-tuning
        stamp["pretrained_sha256"] = sha256sum(pretrained[0])
    stages.clear_stale_checkpoints(out_dir, stamp)
    family = get_family(snakemake.params.family)(snakemake.config["model"])
    train = [Path(p) for p in snakemake.input.train]
    val = [Path(p) for p in snakemake.input.val]
    if pretrained:
        finetune = {k: v for k, v in snakemake.params.finetune.items() if k != "validation_fraction"}
        family.finetune_autoencoder(pretrained[0], train, val, out_dir, finetune)
    else:
        family.fit_autoencoder(train, val, out_dir)
    stages.finish_training(out_dir)
