# morphgen: raw T1 scans -> preprocessing -> generative model -> synthetic cohorts -> anatomy-based evaluation.
# This file only includes the rules; settings live in config.yaml, cluster specifics in profiles/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/pretraining.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/morphometry.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs,
    default_target: True
