# Every image registered to the MNI template once (SyN); regional volumes, VBM and the regional effects.


localrules:
    gather_real_regions,
    gather_synthetic_regions,


rule normalise_real:
    """One batch of real images to the MNI template: Jacobian and modulated grey-matter maps, regional volumes."""
    input:
        images=batch_subjects(preprocessed),
        segmentation=rules.segment_real.output.labels,
        volumes=rules.segment_real.output.volumes,
    output:
        maps=directory(f"{R}/normalised/real/batch-{{batch}}"),
        regions=f"{R}/volumes/regions/real/batch-{{batch}}.tsv",
    params:
        space=config["space"],
        evaluation=evaluation_settings("regions", "vbm.registration"),
        segmentation=config["segmentation"],
    log:
        log_for("normalise_real", "batch"),
    benchmark:
        benchmark_for("normalise_real", "batch")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/normalise.py"


rule gather_real_regions:
    """One table of the real subjects' regional volumes, from its batches."""
    input:
        tables=batch_files(f"{R}/volumes/regions/real/batch-{{batch}}.tsv"),
    output:
        table=f"{R}/volumes/regions/real.tsv",
    log:
        log_for("gather_real_regions"),
    benchmark:
        benchmark_for("gather_real_regions")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/gather_tables.py"


rule normalise_synthetic:
    """The same for one batch of the kept samples of a sub-population."""
    input:
        images=sample_batch,
        segmentation=rules.segment_synthetic.output.labels,
        volumes=rules.segment_synthetic.output.volumes,
    output:
        maps=directory(f"{R}/normalised/synthetic/{{subpop}}/batch-{{batch}}"),
        regions=f"{R}/volumes/regions/synthetic/{{subpop}}/batch-{{batch}}.tsv",
    params:
        space=config["space"],
        evaluation=evaluation_settings("regions", "vbm.registration"),
        segmentation=config["segmentation"],
    log:
        log_for("normalise_synthetic", "subpop", "batch"),
    benchmark:
        benchmark_for("normalise_synthetic", "subpop", "batch")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/normalise.py"


rule normalise_reconstructions:
    """The same for one batch of the autoencoder's test reconstructions."""
    input:
        images=rules.reconstruction.output.images,
        segmentation=rules.segment_reconstructions.output.labels,
        volumes=rules.segment_reconstructions.output.volumes,
    output:
        maps=directory(f"{R}/normalised/reconstructions/batch-{{batch}}"),
        regions=f"{R}/volumes/regions/reconstructions/batch-{{batch}}.tsv",
    params:
        space=config["space"],
        evaluation=evaluation_settings("regions", "vbm.registration"),
        segmentation=config["segmentation"],
        subjects=lambda wc: subject_batches("test")[wc.batch],
    log:
        log_for("normalise_reconstructions", "batch"),
    benchmark:
        benchmark_for("normalise_reconstructions", "batch")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        ENV
    script:
        "../scripts/normalise.py"


rule gather_synthetic_regions:
    """One table of a sub-population's sample regional volumes, from its batches."""
    input:
        tables=expand(
            f"{R}/volumes/regions/synthetic/{{{{subpop}}}}/batch-{{batch}}.tsv",
            batch=list(SAMPLE_BATCHES),
        ),
    output:
        table=f"{R}/volumes/regions/synthetic/{{subpop}}.tsv",
    log:
        log_for("gather_synthetic_regions", "subpop"),
    benchmark:
        benchmark_for("gather_synthetic_regions", "subpop")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/gather_tables.py"


rule region_effects:
    """Regional volumes real vs synthetic (Cohen's d), group, age and sex effects per region, their agreement;
    a conditioned family's samples take the age and sex they were given from scores.tsv."""
    input:
        subjects=f"{R}/split/subjects.tsv",
        members=MEMBER_LISTS,
        real=rules.gather_real_regions.output.table,
        synthetic=expand(f"{R}/volumes/regions/synthetic/{{subpop}}.tsv", subpop=SUBPOPS),
        reconstruction=f"{R}/tables/reconstruction_volumes.tsv",
        scores=expand(f"{R}/samples/{{subpop}}/scores.tsv", subpop=SUBPOPS) if CONDITIONING else [],
    output:
        volumes=f"{R}/tables/region_volumes.tsv",
        effects=f"{R}/tables/region_effects.tsv",
        agreement=f"{R}/tables/effect_agreement.tsv",
        figure=report(
            f"{R}/figures/region_effects.png",
            caption="../report/region_effects_figure.rst",
            category="Figures",
            subcategory="Regional anatomy",
        ),
    params:
        subpopulations=config["subpopulations"],
        alpha=config["evaluation"]["alpha"],
        evaluation=evaluation_settings("validity"),
    log:
        log_for("region_effects"),
    benchmark:
        benchmark_for("region_effects")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/region_effects.py"


rule vbm:
    """Grey-matter VBM of each group contrast, real and synthetic t-maps, and their voxel-wise correlation."""
    input:
        members=MEMBER_LISTS,
        real=batch_files(f"{R}/normalised/real/batch-{{batch}}"),
        synthetic=expand(
            f"{R}/normalised/synthetic/{{subpop}}/batch-{{batch}}", subpop=SUBPOPS, batch=list(SAMPLE_BATCHES)
        ),
        real_volumes=f"{R}/volumes/real.tsv",
        synthetic_volumes=SYNTH_VOLUMES,
        reconstruction=f"{R}/tables/reconstruction_volumes.tsv",
    output:
        maps=directory(f"{R}/vbm"),
        table=f"{R}/tables/vbm.tsv",
        figures=report(
            directory(f"{R}/figures/vbm"),
            patterns=["{contrast}.png"],
            caption="../report/vbm_figure.rst",
            category="Figures",
            subcategory="VBM",
        ),
    params:
        subpopulations=config["subpopulations"],
        space=config["space"],
        vbm=config["evaluation"].get("vbm", {}),
        evaluation=evaluation_settings("validity"),
    log:
        log_for("vbm"),
    benchmark:
        benchmark_for("vbm")
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/vbm.py"


rule reconstruction_vbm:
    """Grey-matter VBM of each test subject's reconstruction against its original (paired): near empty when
    the autoencoder keeps the anatomy."""
    input:
        real=batch_files(f"{R}/normalised/real/batch-{{batch}}"),
        reconstructions=batch_files(f"{R}/normalised/reconstructions/batch-{{batch}}", "test"),
    output:
        maps=directory(f"{R}/vbm_reconstruction"),
        table=f"{R}/tables/reconstruction_vbm.tsv",
        figure=report(
            f"{R}/figures/reconstruction_vbm.png",
            caption="../report/reconstruction_vbm_figure.rst",
            category="Figures",
            subcategory="VBM",
        ),
    params:
        space=config["space"],
        vbm=config["evaluation"].get("vbm", {}),
        alpha=config["evaluation"]["alpha"],
    log:
        log_for("reconstruction_vbm"),
    benchmark:
        benchmark_for("reconstruction_vbm")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/reconstruction_vbm.py"
