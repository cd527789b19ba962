from pathlib import Path

from morphgen import stages
from morphgen.models.registry import run_training
from morphgen.workflow import logged

with logged(snakemake):
    out_dir = Path(snakemake.output.model).parent
    pretrained = [Path(p) for p in snakemake.input.pretrained]
    stamp = dict(snakemake.params.items())
    if pretrained:  # a new pre-trained model must not resume the old fine-tuning
        stamp["pretrained_sha256"] = stages.pretrained_digest(pretrained[0], snakemake.params.shipped_sha256)
    stages.clear_stale_checkpoints(out_dir, stamp)
    job = {
        "train_images": [str(p) for p in snakemake.input.train],
        "val_images": [str(p) for p in snakemake.input.val],
        "out_dir": str(out_dir),
    }
    if pretrained:
        selection = ("validation_fraction", "where")  # which subjects: already in the rule's inputs
        finetune = {k: v for k, v in snakemake.params.finetune.items() if k not in selection}
        job.update(pretrained=str(pretrained[0]), settings=finetune)
    method = "finetune_autoencoder" if pretrained else "fit_autoencoder"
    run_training(snakemake.config["model"], method, job, out_dir / "checkpoints" / "job.json")
    stages.finish_training(out_dir)
