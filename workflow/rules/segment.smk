# Segmentation volumetry of real and synthetic images, with the back-end chosen in config['segmentation'].


rule segment_real:
    """GM/WM/CSF/ventricle volumes (ml, MNI space) of every preprocessed real image."""
    input:
        images=preprocessed_images(),
        masks=preprocessed_masks(),
    output:
        volumes=f"{R}/volumes/real.tsv",
        labels=directory(f"{R}/segmentation/real"),
    params:
        segmentation=config["segmentation"],
    log:
        log_for("segment_real"),
    benchmark:
        benchmark_for("segment_real")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/segment.py"


rule segment_synthetic:
    """The same volumetry for the kept synthetic samples of one sub-population."""
    input:
        images=rules.generate.output.samples,
    output:
        volumes=f"{R}/volumes/synthetic/{{subpop}}.tsv",
        labels=directory(f"{R}/segmentation/synthetic/{{subpop}}"),
    params:
        segmentation=config["segmentation"],
    log:
        log_for("segment_synthetic", "subpop"),
    benchmark:
        benchmark_for("segment_synthetic", "subpop")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/segment.py"


rule segment_reconstructions:
    """The same volumetry for the autoencoder's reconstructions of the test split, in each subject's mask."""
    input:
        images=rules.reconstruction.output.images,
        masks=preprocessed_masks("test"),
    output:
        volumes=f"{R}/volumes/reconstructions.tsv",
        labels=directory(f"{R}/segmentation/reconstructions"),
    params:
        segmentation=config["segmentation"],
    log:
        log_for("segment_reconstructions"),
    benchmark:
        benchmark_for("segment_reconstructions")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/segment.py"
