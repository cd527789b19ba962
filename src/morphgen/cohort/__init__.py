"""Subjects in: the simulated demo cohort, subject sheets (BIDS or TSV/CSV) and input checks."""

from morphgen.cohort.demo import make_demo_cohort
from morphgen.cohort.sheet import demo_bids_dir, read_subjects, required_covariates
from morphgen.cohort.validate import check_subjects

__all__ = ["check_subjects", "demo_bids_dir", "make_demo_cohort", "read_subjects", "required_covariates"]
