"""The paper configuration and its GPU tiers: valid, buildable at 1,400 tokens, and within their memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from morphgen.models.autoencoders.vqvae import network_config
from morphgen.models.memory import estimate_autoencoder_training, estimate_prior_training, largest_batch

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def merged(*names: str) -> dict:
    """Later files override earlier ones key by key, as ``snakemake --configfile a b`` does."""
    config: dict = {}
    for name in names:
        update_config(config, yaml.safe_load((ROOT / name).read_text()))
    return config


def test_paper_configuration_is_valid_and_has_the_papers_shapes():
    config = merged("config.yaml", "configs/paper/paper.yaml")
    validate(config, str(SCHEMA))
    ae, prior = config["model"]["autoencoder"], config["model"]["prior"]
    net = network_config(ae, tuple(config["space"]["shape"]))
    assert net["latent_shape"] == [10, 14, 10]  # 1,400 tokens
    assert (net["codebook_size"], net["embedding_dim"], net["commitment_cost"], net["decay"]) == (
        2048,
        32,
        0.25,
        0.5,
    )
    assert (prior["layers"], prior["d_model"], prior["heads"], prior["local_heads"]) == (24, 256, 16, 8)
    assert prior["local_window"] == 420 and prior["rezero"] and prior["attention"] == "favor"
    assert config["model"]["sampling"]["oversample"] == 100


@pytest.mark.parametrize("gib", [24, 40, 80])
def test_each_gpu_tier_fits_its_memory_by_the_estimate(gib):
    config = merged("config.yaml", "configs/paper/paper.yaml", f"configs/paper/gpu-{gib}gb.yaml")
    validate(config, str(SCHEMA))
    ae, prior = config["model"]["autoencoder"], config["model"]["prior"]
    shape = tuple(config["space"]["shape"])
    ae_est = estimate_autoencoder_training(ae, shape, ae["precision"], ae["activation_checkpointing"])
    assert 1 <= ae["batch_size"] <= largest_batch(ae_est, gib)
    prior_est = estimate_prior_training(prior, 1400, ae["codebook_size"], prior["precision"])
    assert 1 <= prior["batch_size"] <= largest_batch(prior_est, gib)


def test_every_rule_that_asks_for_a_gpu_goes_to_the_gpu_partition():
    import re

    rules = {}
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule |checkpoint )", smk.read_text()):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if name:
                rules[name.group(1)] = re.search(r"\n\s+gpu=", block) is not None
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())["set-resources"]
    gpu_rules = sorted(r for r, gpu in rules.items() if gpu)
    assert {"train_autoencoder", "generate", "sample_conditioned"} <= set(gpu_rules)
    assert [r for r in gpu_rules if profile.get(r, {}).get("slurm_partition") != "gpu"] == []


def test_the_m3ae_paper_configuration_has_the_papers_network():
    """Seed 001, appendix B: 80 x 96 x 80 down to 5 x 6 x 5 with 128 channels (19,200 features), z of 512."""
    from morphgen.models.catalogue import check_family_config
    from morphgen.models.families.m3ae.codec import MetamorphicCodec

    config = merged("config.yaml", "configs/paper/m3ae.yaml")
    validate(config, str(SCHEMA))
    check_family_config(config["model"])
    codec = MetamorphicCodec(config["model"]["autoencoder"])
    model = codec.build(codec.network_config(tuple(config["space"]["shape"])))
    assert model.encoder.fc.in_features == 19_200 and model.encoder.fc.out_features == 2 * 512
    assert model.velocity.fc.in_features == 256 and model.intensity.fc.out_features == 19_200
    assert codec.level_weights(4)["intensity"] == [0.6, 1.2, 1.2, 2.4] and codec.beta == 6.0
    assert config["model"]["sampling"]["oversample"] == 1
