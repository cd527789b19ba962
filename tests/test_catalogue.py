"""The workflow asks the family (morphgen.models.catalogue) whether it is conditioned, where its prior's
settings are and whether its prior is for the cohort; the catalogue agrees with the families' classes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, run_snakemake

from morphgen.errors import ConfigError
from morphgen.models.catalogue import FAMILIES, check_family_config, family_schema, family_spec

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def test_the_catalogue_is_known_without_importing_torch():
    code = "import sys, morphgen.models.catalogue; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_catalogue_agrees_with_the_family_class(name):
    from morphgen.models import available_families, get_family

    cls = get_family(name)
    assert cls.name == name and cls.conditioned == FAMILIES[name].conditioned
    assert name in available_families()


def test_an_unknown_family_names_the_key_and_the_known_ones():
    known = ", ".join(sorted(FAMILIES))
    with pytest.raises(ConfigError, match=rf"model.family: unknown model family 'gan'; available: {known}$"):
        family_spec("gan")


def test_a_leftover_conditioning_section_is_refused_for_an_unconditioned_family():
    model = {**CONFIG["model"], "conditioning": {"covariates": {"age": "age"}}}
    with pytest.raises(ConfigError, match="model.conditioning is set, but model family 'vqvae_transformer'"):
        check_family_config(model)
    assert check_family_config(CONFIG["model"]).name == "vqvae_transformer"


def test_a_conditioned_family_needs_its_sections_and_shares_its_prior_unless_asked():
    ldm = yaml.safe_load((REPO / "configs/demo/ldm.yaml").read_text())["model"]
    model = {**CONFIG["model"], **ldm}
    spec = check_family_config(model)
    assert spec.conditioned and spec.prior_section == "diffusion" and spec.shares_prior(model)
    split = {**model, "diffusion": {**model["diffusion"], "per_subpopulation": True}}
    assert not spec.shares_prior(split)
    with pytest.raises(ConfigError, match="model.conditioning is missing"):
        check_family_config({k: v for k, v in model.items() if k != "conditioning"})
    with pytest.raises(ConfigError, match="model.diffusion is missing"):
        check_family_config({k: v for k, v in model.items() if k != "diffusion"})
    assert not family_spec("vqvae_transformer").shares_prior(model)


def test_snakemake_refuses_a_leftover_conditioning_before_any_job(tmp_path):
    proc = run_snakemake(
        tmp_path,
        "-n",
        "--configfile",
        str(REPO / "config.yaml"),
        "--config",
        "model={family: vqvae_transformer, conditioning: {covariates: {age: age}}}",
        "--",
        "all",
        check=False,
    )
    assert proc.returncode != 0
    assert "model.conditioning is set, but model family 'vqvae_transformer'" in proc.stdout + proc.stderr


def test_snakemake_refuses_a_misspelt_key_of_the_family_before_any_job(tmp_path):
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("model:\n  family: ldm\n  autoencoder:\n    kl_wieght: 1.0\n")
    ldm = REPO / "configs/demo/ldm.yaml"
    args = ["-n", "--configfile", str(REPO / "config.yaml"), str(ldm), str(overlay)]
    proc = run_snakemake(tmp_path, *args, "--", "all", check=False)
    assert proc.returncode != 0
    assert "model.autoencoder.kl_wieght: model family 'ldm' does not read it" in proc.stdout + proc.stderr


def test_the_configuration_reference_lists_the_catalogues_families():
    """A family is added by its catalogue line alone: the schema leaves model.family to the catalogue."""
    from morphgen.config_reference import config_reference

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert "enum" not in schema["properties"]["model"]["properties"]["family"]
    reference = config_reference(REPO / "workflow/schemas/config.schema.yaml", REPO / "config.yaml")
    row = next(line for line in reference.splitlines() if line.startswith("| `model.family` |"))
    assert row.split(" | ")[2] == r" \| ".join(f"`{name}`" for name in sorted(FAMILIES))


def test_the_configuration_reference_describes_every_key_of_every_family():
    """Each family's own keys are a row of its section of the reference, with what the key does: a key added
    to a family's schema.yaml without a description (and not commented in config.yaml) fails here."""
    from morphgen.config_reference import config_reference
    from morphgen.models.catalogue import family_schema

    reference = config_reference(REPO / "workflow/schemas/config.schema.yaml", REPO / "config.yaml")
    families = reference.split("\n## Model families\n", 1)[1]
    trainer_keys = yaml.safe_load((REPO / "src/morphgen/models/autoencoders/trainer.schema.yaml").read_text())
    for name in FAMILIES:
        section = families.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        lines = [line for line in section.splitlines() if line.startswith("| `")]
        rows = {line.split(" | ")[0].strip("| `"): line for line in lines}
        for part, schema in family_schema(name).items():
            for key in schema["properties"]:
                path = f"model.{part}.{key}"
                if part == "autoencoder" and key in trainer_keys:  # listed once for all families
                    assert path not in rows and f"`{key}`" in families.split("\n### ", 1)[0]
                    continue
                assert path in rows, f"{name}: {path} is not in the reference"
                cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", rows[path])[1:-1]]
                assert len(cells) == 3 and cells[2], f"{name}: {path} has no description"


def _sources(*names: str) -> tuple[dict, list[dict]]:
    from snakemake.utils import update_config

    config, sources = {}, []
    for name in names:
        source = yaml.safe_load((REPO / name).read_text()) or {}
        sources.append(source)
        update_config(config, source)
    return config, sources


@pytest.mark.parametrize(
    "names",
    [
        ("config.yaml",),
        ("config.yaml", "configs/demo/ldm.yaml"),
        ("config.yaml", "configs/demo/m3ae.yaml"),
        ("config.yaml", "configs/demo/m3ae.yaml", "configs/demo/beta_vae.yaml"),
        ("config.yaml", "configs/demo/multilevel.yaml"),
        ("config.yaml", "configs/demo/multilevel.yaml", "configs/demo/multilevel_finetune.yaml"),
        ("config.yaml", "configs/demo/finetune.yaml"),
        ("config.yaml", "configs/demo/pretrained.yaml"),
        ("config.yaml", "configs/demo/pretrained.yaml", "configs/demo/pretrain.yaml"),
        ("config.yaml", "configs/paper/paper.yaml", "configs/paper/gpu-40gb.yaml"),
        ("config.yaml", "configs/paper/m3ae.yaml"),
        ("config.yaml", "configs/demo/brainsynth.yaml"),
        ("config.yaml", "configs/paper/brainsynth.yaml"),
        (
            "config.yaml",
            "tests/data/config_e2e.yaml",
            "configs/demo/ldm.yaml",
            "tests/data/config_ldm_tiny.yaml",
        ),
    ],
)
def test_every_shipped_configuration_fits_its_familys_schema(names):
    from morphgen.models.catalogue import check_family_sections

    config, sources = _sources(*names)
    checked = check_family_sections(config["model"], sources)
    family = checked["family"]
    for section, schema in family_schema(family).items():
        assert set(checked.get(section, {})) <= set(schema["properties"]), section


def test_keys_of_the_default_family_are_dropped_where_another_family_inherits_them():
    from morphgen.models.catalogue import check_family_sections

    config, sources = _sources("config.yaml", "configs/demo/ldm.yaml")
    checked = check_family_sections(config["model"], sources)
    assert "codebook_size" in config["model"]["autoencoder"] and "codebook_size" not in checked["autoencoder"]
    assert checked["autoencoder"]["lr"] == config["model"]["autoencoder"]["lr"]  # the trainer's: inherited
    assert checked["autoencoder"]["kl_weight"] == 1.0e-6


def test_a_key_the_family_does_not_read_is_refused_where_its_file_writes_it():
    from morphgen.models.catalogue import check_family_sections

    config, sources = _sources("config.yaml", "configs/demo/ldm.yaml")
    typo = {"model": {"family": "ldm", "autoencoder": {"kl_wieght": 1.0}}}
    with pytest.raises(ConfigError, match=r"model.autoencoder.kl_wieght: .* \(no model family reads it\)"):
        check_family_sections({**config["model"], "autoencoder": {"kl_wieght": 1.0}}, [*sources, typo])
    other = {"model": {"family": "ldm", "autoencoder": {"codebook_size": 64}}}
    model = {**config["model"], "autoencoder": {**config["model"]["autoencoder"], "codebook_size": 64}}
    with pytest.raises(ConfigError, match=r"model.autoencoder.codebook_size: .*a key of .*vqvae_transformer"):
        check_family_sections(model, [*sources, other])
    with pytest.raises(ConfigError, match=r"model.diffusion.prediction: 'noise' is not one of"):
        check_family_sections({**config["model"], "diffusion": {"prediction": "noise"}}, sources)
