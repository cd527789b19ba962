# The paper's tables and figures, from the intermediate outputs above.


rule table1_fidelity:
    """Table 1: bMMD², FID, pairwise MS-SSIM and 4-G-R-SSIM, real-vs-real baseline and synthetic."""
    input:
        members=MEMBER_LISTS,
        real=preprocessed_images(),
        synthetic=all_samples,
    output:
        table=f"{R}/tables/table1_fidelity.tsv",
    params:
        evaluation=evaluation_settings("mmd_batch_size", "msssim_pairs", "msssim_kernel", "fid", "four_g_r_ssim"),
        subpops=SUBPOPS,
    log:
        log_for("table1_fidelity"),
    benchmark:
        benchmark_for("table1_fidelity")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/table1_fidelity.py"


rule memorisation:
    """Is a kept sample a copy of a training image? Nearest training image, against test-to-train distances."""
    input:
        subjects=f"{R}/split/subjects.tsv",
        real=preprocessed_images(),
        synthetic=all_samples,
    output:
        table=f"{R}/tables/memorisation.tsv",
        summary=f"{R}/tables/memorisation_summary.tsv",
    params:
        subpops=SUBPOPS,
        memorisation=config["evaluation"].get("memorisation", {}),
    log:
        log_for("memorisation"),
    benchmark:
        benchmark_for("memorisation")
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/memorisation.py"


rule table2_volumes:
    """Table 2: tissue volumes real vs synthetic, two-sided t-tests, Bonferroni; effects and figure."""
    input:
        members=MEMBER_LISTS,
        real=rules.gather_real_volumes.output.table,
        synthetic=SYNTH_VOLUMES,
        reconstruction=f"{R}/tables/reconstruction_volumes.tsv",
    output:
        table=f"{R}/tables/table2_volumes.tsv",
        effects=f"{R}/tables/subgroup_effects.tsv",
        figure=report(
            f"{R}/figures/volumes.png",
            caption="../report/volumes_figure.rst",
            category="Figures",
            subcategory="Tissue volumes",
        ),
    params:
        evaluation=evaluation_settings("alpha", "validity"),
        subpops=SUBPOPS,
        subpopulations=config["subpopulations"],
    log:
        log_for("table2_volumes"),
    benchmark:
        benchmark_for("table2_volumes")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/table2_volumes.py"


rule volumetry_truth:
    """Simulated demo only: measured volumes of the real images against the known truth."""
    input:
        sheet=f"{R}/demo_cohort/participants.tsv",
        measured=rules.gather_real_volumes.output.table,
        regions=rules.gather_real_regions.output.table,
    output:
        table=f"{R}/tables/volumetry_truth.tsv",
        figure=report(
            f"{R}/figures/volumetry_truth.png",
            caption="../report/truth.rst",
            category="Figures",
            subcategory="Demo truth",
        ),
    params:
        evaluation=evaluation_settings("validity"),
    log:
        log_for("volumetry_truth"),
    benchmark:
        benchmark_for("volumetry_truth")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/volumetry_truth.py"


rule reconstruction_volumes:
    """Does the autoencoder keep each subject's anatomy? Volumes of reconstructions vs the real images."""
    input:
        real=rules.gather_real_volumes.output.table,
        reconstructed=rules.gather_reconstruction_volumes.output.table,
    output:
        table=f"{R}/tables/reconstruction_volumes.tsv",
        figure=report(
            f"{R}/figures/reconstruction_volumes.png",
            caption="../report/reconstruction_volumes.rst",
            category="Figures",
            subcategory="Autoencoder",
        ),
    params:
        evaluation=evaluation_settings("validity"),
    log:
        log_for("reconstruction_volumes"),
    benchmark:
        benchmark_for("reconstruction_volumes")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/reconstruction_volumes.py"


rule reconstruction_dice:
    """Are the reconstructions' tissues where the real ones are? Dice per tissue of each test subject's
    label map and its reconstruction's."""
    input:
        real=batch_files(f"{R}/segmentation/real/batch-{{batch}}"),
        reconstructed=batch_files(f"{R}/segmentation/reconstructions/batch-{{batch}}", "test"),
    output:
        table=f"{R}/tables/reconstruction_dice.tsv",
    log:
        log_for("reconstruction_dice"),
    benchmark:
        benchmark_for("reconstruction_dice")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/reconstruction_dice.py"


rule reconstruction_fidelity:
    """Seed 003's reconstruction table: MS-SSIM and log bMMD² of the test reconstructions against their
    originals, beside the log bMMD² between two halves of the originals."""
    input:
        originals=preprocessed_images("test"),
        reconstructions=rules.reconstruction.output.images,
        per_subject=rules.reconstruction.output.table,
    output:
        table=f"{R}/tables/reconstruction_fidelity.tsv",
    params:
        evaluation=evaluation_settings("mmd_batch_size"),
        seed=config["split"]["seed"],
    log:
        log_for("reconstruction_fidelity"),
    benchmark:
        benchmark_for("reconstruction_fidelity")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/reconstruction_fidelity.py"


rule sample_grid:
    """Three planes of each kept sample of a sub-population, with its discriminator score."""
    input:
        samples=rules.generate.output.samples,
        scores=rules.generate.output.scores,
    output:
        figure=report(
            f"{R}/figures/samples_{{subpop}}.png",
            caption="../report/samples.rst",
            category="Figures",
            subcategory="Samples",
            labels={"sub-population": "{subpop}"},
        ),
    log:
        log_for("sample_grid", "subpop"),
    benchmark:
        benchmark_for("sample_grid", "subpop")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/sample_grid.py"


rule loss_figure:
    """Training curves of the autoencoder and of the priors."""
    input:
        losses=rules.train_autoencoder.output.losses,
        priors=expand(f"{R}/models/prior/{{prior}}/loss.tsv", prior=PRIORS),
    output:
        figure=report(
            f"{R}/figures/loss_autoencoder.png",
            caption="../report/loss.rst",
            category="Figures",
            subcategory="Autoencoder",
        ),
        prior_figure=report(
            f"{R}/figures/loss_prior.png",
            caption="../report/loss_prior.rst",
            category="Figures",
            subcategory="Priors",
        ),
    log:
        log_for("loss_figure"),
    benchmark:
        benchmark_for("loss_figure")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/loss_figure.py"


rule conditioning_check:
    """Seed 004 §3.2: did conditioned samples get the volumes they were asked for? Pearson r between asked
    and segmented ventricular and brain volume, for the generated and the requested samples."""
    input:
        scores=expand(f"{R}/samples/{{subpop}}/scores.tsv", subpop=SUBPOPS),
        synthetic=SYNTH_VOLUMES,
        requests=expand(f"{R}/conditioned/{{prior}}/requests.tsv", prior=PRIORS) if REQUEST_IDS else [],
        conditioned=expand(f"{R}/volumes/conditioned/{{prior}}.tsv", prior=PRIORS) if REQUEST_IDS else [],
    output:
        table=f"{R}/tables/conditioning.tsv",
        figure=report(
            f"{R}/figures/conditioning.png",
            caption="../report/conditioning_figure.rst",
            category="Figures",
            subcategory="Conditioning",
        ),
    params:
        subpops=SUBPOPS,
        priors=PRIORS,
        conditioning=CONDITIONING,
    log:
        log_for("conditioning_check"),
    benchmark:
        benchmark_for("conditioning_check")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/conditioning_check.py"


rule conditioning_effects:
    """How the samples' ventricular and brain volumes follow each numeric covariate they were given (seed
    002's age effect, seed 004's Fig. 4), against the same slope in the real subjects."""
    input:
        scores=expand(f"{R}/samples/{{subpop}}/scores.tsv", subpop=SUBPOPS),
        synthetic=SYNTH_VOLUMES,
        requests=expand(f"{R}/conditioned/{{prior}}/requests.tsv", prior=PRIORS) if REQUEST_IDS else [],
        conditioned=expand(f"{R}/volumes/conditioned/{{prior}}.tsv", prior=PRIORS) if REQUEST_IDS else [],
        subjects=f"{R}/split/subjects.tsv",
        real=f"{R}/volumes/real.tsv",
    output:
        table=f"{R}/tables/conditioning_effects.tsv",
    params:
        subpops=SUBPOPS,
        priors=PRIORS,
        conditioning=CONDITIONING,
    log:
        log_for("conditioning_effects"),
    benchmark:
        benchmark_for("conditioning_effects")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/conditioning_effects.py"


rule brain_age:
    """A 3D CNN regressor of age trained on the real training images: the real test images' MAE, the age it
    reads in samples against the age they were given (seed 004 Fig. 3), and its test MAE when the kept samples
    join its training images (seed 002's augmentation test)."""
    input:
        subjects=f"{R}/split/subjects.tsv",
        real=preprocessed_images(),
        scores=expand(f"{R}/samples/{{subpop}}/scores.tsv", subpop=SUBPOPS),
        samples=all_samples,
        requests=expand(f"{R}/conditioned/{{prior}}/requests.tsv", prior=PRIORS) if REQUEST_IDS else [],
        conditioned=expand(f"{R}/conditioned/{{prior}}/{{sample}}.nii.gz", prior=PRIORS, sample=REQUEST_IDS),
    output:
        table=f"{R}/tables/brain_age.tsv",
    params:
        brain_age=config["evaluation"].get("brain_age", {}),
        seed=MODEL["seed"],
    log:
        log_for("brain_age"),
    benchmark:
        benchmark_for("brain_age")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/brain_age.py"


rule conditioning_grid:
    """Seed 004's Fig. 2: a prior's grid samples, one row per varied covariate."""
    input:
        table=rules.sample_conditioned.output.table,
        samples=rules.sample_conditioned.output.samples,
    output:
        figure=report(
            f"{R}/figures/conditioning_grid_{{prior}}.png",
            caption="../report/conditioning_grid.rst",
            category="Figures",
            subcategory="Conditioning",
            labels={"prior": "{prior}"},
        ),
    log:
        log_for("conditioning_grid", "prior"),
    benchmark:
        benchmark_for("conditioning_grid", "prior")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/conditioning_grid.py"


rule paper:
    """Every table and figure of the paper; `make paper` redoes them all from the intermediate outputs."""
    input:
        all_outputs,


rule table_pages:
    """Every table of the run as a page of the report: rounded, with units (a TSV can only be downloaded)."""
    input:
        **{page: tsv for page, (tsv, *_) in REPORT_PAGES.items()},
    output:
        **{
            page: report(
                f"{R}/report/{page}.html",
                caption=f"../report/{caption}.rst",
                category="Tables",
                subcategory=subcategory,
            )
            for page, (_, caption, subcategory, _) in REPORT_PAGES.items()
        },
    params:
        titles={page: entry[3] for page, entry in REPORT_PAGES.items()},
    log:
        log_for("table_pages"),
    benchmark:
        benchmark_for("table_pages")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/table_pages.py"


rule run_summary:
    """This run's row of the family comparison: what its own tables say of the anatomy, the image metrics
    and the time of its model rules."""
    input:
        reconstruction=rules.reconstruction_volumes.output.table,
        dice=rules.reconstruction_dice.output.table,
        fidelity_reconstruction=rules.reconstruction_fidelity.output.table,
        vbm_reconstruction=rules.reconstruction_vbm.output.table,
        effects=rules.table2_volumes.output.effects,
        fidelity=rules.table1_fidelity.output.table,
        memorisation=rules.memorisation.output.summary,
    output:
        table=f"{R}/tables/run_summary.tsv",
    params:
        family=MODEL["family"],
    log:
        log_for("run_summary"),
    benchmark:
        benchmark_for("run_summary")
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/run_summary.py"


rule family_comparison:
    """Every family run on this cohort side by side: this run and those of evaluation.compare_runs."""
    input:
        own=rules.run_summary.output.table,
    output:
        table=f"{R}/tables/families.tsv",
    params:
        others=config["evaluation"].get("compare_runs") or [],
    log:
        log_for("family_comparison"),
    benchmark:
        benchmark_for("family_comparison")
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/family_comparison.py"
