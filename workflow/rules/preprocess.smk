# Per-subject preprocessing to the working grid in MNI space, and the QC table with its gate.
# Preprocessing needs only the input checks, so it runs for any number of subjects: the split and the
# sub-populations are made from the QC table, for the stages that need them.


rule preprocess:
    """Target: every subject that passed the input checks preprocessed, and the QC table."""
    input:
        f"{R}/qc/preprocessing.tsv",
        f"{R}/preprocessed/dataset_description.json",


rule derivatives_description:
    """dataset_description.json of the preprocessed cohort: results/preprocessed is a BIDS-derivatives dataset."""
    output:
        description=f"{R}/preprocessed/dataset_description.json",
    params:
        source=subject_sheet(),
        space=config["space"],
        preprocessing=config["preprocessing"],
    log:
        log_for("derivatives_description"),
    benchmark:
        benchmark_for("derivatives_description")
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/derivatives_description.py"


rule preprocess_subject:
    """RAS+, N4, skull stripping, affine to MNI152, resampling to the grid, intensities to [0, 1]; QC PNG."""
    input:
        t1=raw_t1,
    output:
        image=PREPROCESSED["image"],
        mask=PREPROCESSED["mask"],
        qc_png=PREPROCESSED["qc_png"],
        qc_tsv=PREPROCESSED["qc_tsv"],
    params:
        preprocessing=config["preprocessing"],
        space=config["space"],
        on_error=config["input"]["on_error"],
    log:
        log_for("preprocess_subject", "subject"),
    benchmark:
        benchmark_for("preprocess_subject", "subject")
    group:
        "preprocess"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        ENV
    script:
        "../scripts/preprocess.py"


rule qc_table:
    """One row per subject: input checks and preprocessing QC together; the QC gate (qc.*) excludes or flags."""
    input:
        inputs=f"{R}/qc/inputs.tsv",
        rows=lambda wc: [PREPROCESSED["qc_tsv"].format(subject=s) for s in checked_ids()],
    output:
        table=f"{R}/qc/preprocessing.tsv",
    params:
        qc=config.get("qc"),
    log:
        log_for("qc_table"),
    benchmark:
        benchmark_for("qc_table")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/qc_table.py"
