# Two entry points: `make demo` (install, then run the pipeline on the simulated demo cohort)
# and `make test` (install, then lint and run the test suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# the rules that write tables and figures from intermediate outputs: `make paper` redoes exactly these
PAPER_RULES := table1_fidelity table2_volumes volumetry_truth reconstruction_volumes reconstruction_dice \
	reconstruction_fidelity reconstruction_vbm \
	region_effects vbm memorisation sample_grid loss_figure conditioning_check conditioning_effects brain_age conditioning_grid run_summary \
	family_comparison table_pages

.PHONY: install demo demo-pretrain test lint paper clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so nothing else can pull another build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip check
	touch $@

# a configuration on top of config.yaml: `make demo CONFIG=configs/demo/ldm.yaml` runs the latent diffusion family
CONFIG ?=
CONFIG_ARGS := $(if $(CONFIG),--configfile config.yaml $(CONFIG))

demo: install
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) $(CONFIG_ARGS) -- all

# the demo's shipped autoencoder (configs/demo/pretrained.yaml): pre-trained on a second simulated cohort for
# hours on 2 cores, then copied to models/demo/ if its sha256 is the configured one (else it names the new one)
PRETRAINED := results/demo-pretrain/models/autoencoder_pretrained/model.pt

demo-pretrain: install
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --configfile config.yaml \
		configs/demo/pretrained.yaml configs/demo/pretrain.yaml -- $(PRETRAINED)
	$(BIN)/morphgen ship-autoencoder $(PRETRAINED) --config configs/demo/pretrained.yaml

# only the rules of this configuration's DAG: Snakemake makes a forced rule without wildcards a target, and
# some rules belong to one kind of run only (volumetry_truth: the demo; conditioning_check: a conditioned family)
SNAKEMAKE := $(BIN)/snakemake --profile profiles/local --cores $(CORES) $(CONFIG_ARGS)

paper: install
	forced=$$($(SNAKEMAKE) -n --forceall --quiet rules -- paper | \
		awk -v want="$(PAPER_RULES)" 'BEGIN { split(want, w, " "); for (i in w) ok[w[i]] = 1 } ($$1 in ok) { print $$1 }'); \
	$(SNAKEMAKE) --forcerun $$forced -- paper

lint: install
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/pytest -q -ra -n 2

clean:
	rm -rf results .snakemake
