# Segmentation volumetry of real and synthetic images, with the back-end chosen in config['segmentation'].
# Each job segments one batch of evaluation.images_per_job images; a gathering rule joins their tables.


localrules:
    gather_real_volumes,
    gather_reconstruction_volumes,
    gather_synthetic_volumes,
    gather_conditioned_volumes,


rule segment_real:
    """GM/WM/CSF/ventricle volumes (ml, MNI space) of one batch of preprocessed real images."""
    input:
        images=batch_subjects(preprocessed),
        masks=batch_subjects(mask_of),
    output:
        volumes=f"{R}/volumes/real/batch-{{batch}}.tsv",
        labels=directory(f"{R}/segmentation/real/batch-{{batch}}"),
    params:
        segmentation=config["segmentation"],
    log:
        log_for("segment_real", "batch"),
    benchmark:
        benchmark_for("segment_real", "batch")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/segment.py"


rule gather_real_volumes:
    """One table of the real subjects' volumes, from its batches."""
    input:
        tables=batch_files(f"{R}/volumes/real/batch-{{batch}}.tsv"),
    output:
        table=f"{R}/volumes/real.tsv",
    log:
        log_for("gather_real_volumes"),
    benchmark:
        benchmark_for("gather_real_volumes")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/gather_tables.py"


rule segment_synthetic:
    """The same volumetry for one batch of the kept synthetic samples of a sub-population."""
    input:
        images=sample_batch,
        reference=INTENSITY_REFERENCE,
    output:
        volumes=f"{R}/volumes/synthetic/{{subpop}}/batch-{{batch}}.tsv",
        labels=directory(f"{R}/segmentation/synthetic/{{subpop}}/batch-{{batch}}"),
    params:
        segmentation=config["segmentation"],
    log:
        log_for("segment_synthetic", "subpop", "batch"),
    benchmark:
        benchmark_for("segment_synthetic", "subpop", "batch")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/segment.py"


rule gather_synthetic_volumes:
    """One table of a sub-population's sample volumes, from its batches."""
    input:
        tables=expand(
            f"{R}/volumes/synthetic/{{{{subpop}}}}/batch-{{batch}}.tsv", batch=list(SAMPLE_BATCHES)
        ),
    output:
        table=f"{R}/volumes/synthetic/{{subpop}}.tsv",
    log:
        log_for("gather_synthetic_volumes", "subpop"),
    benchmark:
        benchmark_for("gather_synthetic_volumes", "subpop")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/gather_tables.py"


rule segment_conditioned:
    """The same volumetry for one batch of a prior's requested samples: did they get what was asked?"""
    input:
        images=request_batch,
        reference=INTENSITY_REFERENCE,
    output:
        volumes=f"{R}/volumes/conditioned/{{prior}}/batch-{{batch}}.tsv",
        labels=directory(f"{R}/segmentation/conditioned/{{prior}}/batch-{{batch}}"),
    params:
        segmentation=config["segmentation"],
    log:
        log_for("segment_conditioned", "prior", "batch"),
    benchmark:
        benchmark_for("segment_conditioned", "prior", "batch")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/segment.py"


rule gather_conditioned_volumes:
    """One table of a prior's requested samples' volumes, from its batches."""
    input:
        tables=expand(
            f"{R}/volumes/conditioned/{{{{prior}}}}/batch-{{batch}}.tsv", batch=list(REQUEST_BATCHES)
        ),
    output:
        table=f"{R}/volumes/conditioned/{{prior}}.tsv",
    log:
        log_for("gather_conditioned_volumes", "prior"),
    benchmark:
        benchmark_for("gather_conditioned_volumes", "prior")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/gather_tables.py"


rule segment_reconstructions:
    """The same volumetry for one batch of the autoencoder's test reconstructions, in each subject's mask."""
    input:
        images=rules.reconstruction.output.images,
        masks=batch_subjects(mask_of, "test"),
        reference=INTENSITY_REFERENCE,
    output:
        volumes=f"{R}/volumes/reconstructions/batch-{{batch}}.tsv",
        labels=directory(f"{R}/segmentation/reconstructions/batch-{{batch}}"),
    params:
        segmentation=config["segmentation"],
        subjects=lambda wc: subject_batches("test")[wc.batch],
        paired=True,  # each reconstruction with its own subject's tissue intensities
    log:
        log_for("segment_reconstructions", "batch"),
    benchmark:
        benchmark_for("segment_reconstructions", "batch")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/segment.py"


rule gather_reconstruction_volumes:
    """One table of the reconstructions' volumes, from its batches."""
    input:
        tables=batch_files(f"{R}/volumes/reconstructions/batch-{{batch}}.tsv", "test"),
    output:
        table=f"{R}/volumes/reconstructions.tsv",
    log:
        log_for("gather_reconstruction_volumes"),
    benchmark:
        benchmark_for("gather_reconstruction_volumes")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/gather_tables.py"
