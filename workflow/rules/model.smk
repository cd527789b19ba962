# The generative model, through the family named in config['model']['family']: autoencoder, latent codes,
# a prior per sub-population, sampling with discriminator filtering. Every family writes the same files.


rule train_autoencoder:
    """Train the autoencoder (VQ-VAE for the default family) on the training split, or fine-tune the
    pre-trained one with early stopping when pretraining is enabled; resumes after a stop."""
    input:
        train=autoencoder_images("train"),
        val=autoencoder_images("val"),
        pretrained=[PRETRAINED_MODEL] if PRETRAIN else [],
    output:
        model=f"{R}/models/autoencoder/model.pt",
        losses=f"{R}/models/autoencoder/loss.tsv",
    params:
        model=MODEL["autoencoder"],
        family=MODEL["family"],
        seed=MODEL["seed"],
        finetune=PRETRAINING.get("finetune") if PRETRAIN else None,
        shipped_sha256=SHIPPED_AUTOENCODER["sha256"] if SHIPPED_AUTOENCODER else None,
        distributed=MODEL.get("distributed", {}),
    log:
        log_for("train_autoencoder"),
    benchmark:
        benchmark_for("train_autoencoder")
    threads: 2
    resources:
        mem_mb=8000 * TRAINING_GPUS,
        runtime=24 * 60,
        gpu=TRAINING_GPUS,
    conda:
        ENV
    script:
        "../scripts/train_autoencoder.py"


rule encode:
    """Token arrays per subject (plus augmented copies) from the trained autoencoder, RAS+ raster order."""
    input:
        model=rules.train_autoencoder.output.model,
        images=preprocessed_images(),
    output:
        tokens=directory(f"{R}/latents/tokens"),
    params:
        latents=MODEL["latents"],
        family=MODEL["family"],
    log:
        log_for("encode"),
    benchmark:
        benchmark_for("encode")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=6 * 60,
        gpu=1,
    conda:
        ENV
    script:
        "../scripts/encode.py"


rule reconstruction:
    """Reconstruct the test split; MAE, PSNR and MS-SSIM per subject."""
    input:
        model=rules.train_autoencoder.output.model,
        images=preprocessed_images("test"),
    output:
        table=f"{R}/models/autoencoder/reconstruction.tsv",
        images=directory(f"{R}/models/autoencoder/reconstructions"),
    params:
        family=MODEL["family"],
    log:
        log_for("reconstruction"),
    benchmark:
        benchmark_for("reconstruction")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        ENV
    script:
        "../scripts/reconstruction.py"


rule train_prior:
    """Train a prior on its training subjects' latents: one per sub-population, or one for the cohort that a
    conditioned family's sub-populations share; its held-out score."""
    input:
        unpack(conditioning_inputs),
        unpack(prior_autoencoder),
        tokens=rules.encode.output.tokens,
        members=prior_members,
    output:
        model=f"{R}/models/prior/{{prior}}/model.pt",
        heldout=f"{R}/models/prior/{{prior}}/heldout.tsv",
        losses=f"{R}/models/prior/{{prior}}/loss.tsv",
    params:
        prior=PRIOR_SETTINGS,
        conditioning=CONDITIONING,
        family=MODEL["family"],
        seed=MODEL["seed"],
    log:
        log_for("train_prior", "prior"),
    benchmark:
        benchmark_for("train_prior", "prior")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=1,
    conda:
        ENV
    script:
        "../scripts/train_prior.py"


rule generate:
    """Sample the sub-population's prior, decode, keep the top fraction by discriminator score; a conditioned
    prior is given the covariates of the sub-population's training subjects."""
    input:
        unpack(generation_conditions),
        autoencoder=rules.train_autoencoder.output.model,
        prior=prior_of_subpopulation,
    output:
        samples=expand(f"{R}/samples/{{{{subpop}}}}/{{sample}}.nii.gz", sample=SAMPLE_IDS),
        scores=f"{R}/samples/{{subpop}}/scores.tsv",
        # a family's maps of each sample (M3AE: its volume relative to the template)
        maps=expand(
            f"{R}/samples/{{{{subpop}}}}/{{map}}/{{sample}}.nii.gz",
            map=FAMILY.sample_maps,
            sample=SAMPLE_IDS,
        ),
    params:
        sampling={k: v for k, v in SAMPLING.items() if k != "checkpoint_minutes"},  # not a result
        n_keep=N_KEEP,
        n_generate=N_GENERATE,
        space=config["space"],
        family=MODEL["family"],
        seed=MODEL["seed"],
        conditioning=CONDITIONING,
    log:
        log_for("generate", "subpop"),
    benchmark:
        benchmark_for("generate", "subpop")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=1,
    conda:
        ENV
    script:
        "../scripts/generate.py"


rule sample_conditioned:
    """One sample per requested row of covariates (model.conditioning.requests: a table and a grid) from each
    conditioned prior; the covariates asked, normalised and flagged in requests.tsv."""
    input:
        autoencoder=rules.train_autoencoder.output.model,
        prior=rules.train_prior.output.model,
        requests=[REQUEST_TABLE] if REQUEST_TABLE else [],
    output:
        samples=expand(f"{R}/conditioned/{{{{prior}}}}/{{sample}}.nii.gz", sample=REQUEST_IDS),
        table=f"{R}/conditioned/{{prior}}/requests.tsv",
    params:
        grid=REQUEST_GRID,
        sampling={k: v for k, v in SAMPLING.items() if k != "checkpoint_minutes"},
        space=config["space"],
        family=MODEL["family"],
        seed=MODEL["seed"],
    log:
        log_for("sample_conditioned", "prior"),
    benchmark:
        benchmark_for("sample_conditioned", "prior")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=6 * 60,
        gpu=1,
    conda:
        ENV
    script:
        "../scripts/sample_conditioned.py"
