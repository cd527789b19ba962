"""Latent diffusion: conditioning reaches the samples, samplers are reproducible and take their steps."""

import pytest
import torch

from morphgen.errors import ConfigError
from morphgen.models.families.ldm.diffusion import (
    FORMER_PROCESS,
    SEED_PROCESS,
    build_unet,
    condition_dropout,
    diffusion_loss,
    estimate,
    guidance_input,
    make_scheduler,
    noise_process,
    sample_latents,
    sampling_covariates,
    unet_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "channels": [8, 16],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": [0, 8],
    "norm_num_groups": 4,
}
SHAPE = (1, 4, 4, 4)  # latent channels, then a 4^3 grid


def _unet(n_covariates=1):
    torch.manual_seed(0)
    return build_unet(unet_config(TINY, latent_channels=1, n_covariates=n_covariates))


V_PROCESS = {"schedule": "scaled_linear_beta", "prediction": "v_prediction"}


class Exact(torch.nn.Module):
    """The estimate (noise or velocity, as ``process`` says) of a perfect model of latents equal to 2c - 1,
    c read from the covariate channel."""

    def __init__(self, process=SEED_PROCESS):
        super().__init__()
        self.alphas_cumprod = make_scheduler("ddpm", process=process).alphas_cumprod
        self.velocity = process["prediction"] == "v_prediction"
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, as the samplers expect of a network

    def clean(self, x, context):
        """The latent this model knows for the covariates in ``x``'s channels (and ``context``)."""
        channel = x[:, 1:2]
        assert torch.equal(channel[:, :, :1, :1, :1].flatten(), context.flatten())  # one covariate, both ways
        return 2 * channel - 1

    def forward(self, x, timesteps, context):
        latents, clean = x[:, :1], self.clean(x, context)
        a = self.alphas_cumprod[timesteps][:, None, None, None, None]
        noise = (latents - a.sqrt() * clean) / (1 - a).sqrt()
        return a.sqrt() * noise - (1 - a).sqrt() * clean if self.velocity else noise


class ExactGuided(Exact):
    """:class:`Exact` for a model trained for guidance: covariates (c, given); latents 2c - 1 where given, 0
    (the cohort's mean) where withheld."""

    def clean(self, x, context):
        channel, given = x[:, 1:2], x[:, 2:3]
        return (2 * channel - 1) * given


@pytest.mark.parametrize("process", [SEED_PROCESS, V_PROCESS])
def test_guidance_moves_the_sample_scale_times_from_the_unconditioned_one(process):
    asked = torch.tensor([[0.0], [0.25], [1.0]])
    given, free = guidance_input(asked), guidance_input(torch.zeros_like(asked), False)
    assert torch.equal(free, torch.zeros(3, 2)) and torch.equal(given[:, 1], torch.ones(3))
    pair = sampling_covariates(asked, trained_for_guidance=True)
    assert torch.equal(pair[0], given) and torch.equal(pair[1], free)
    assert sampling_covariates(asked, trained_for_guidance=False) == (asked, None)
    expected = (2 * asked - 1)[:, :, None, None, None].expand(-1, *SHAPE)
    for scale in (0.0, 1.0, 3.0):  # 0: unconditioned; 1: conditioned; 3: three times as far from the mean
        latents = sample_latents(
            ExactGuided(process),
            make_scheduler("ddim", 20, process),
            given,
            SHAPE,
            torch.Generator().manual_seed(0),
            False,
            unconditioned=free,
            guidance_scale=scale,
        )
        torch.testing.assert_close(latents, scale * expected, atol=1e-4, rtol=0)


def test_guidance_takes_one_network_call_a_step_and_scale_one_none_extra():
    unet = _unet(n_covariates=3)
    with torch.no_grad():  # MONAI starts the output layer at zero: give every weight a value
        for p in unet.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    calls = []
    unet.register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    cov = guidance_input(torch.tensor([[0.2, 1.0], [0.7, 0.0]]))
    free = guidance_input(torch.zeros(2, 2), False)

    def sample(scale):
        generator = torch.Generator().manual_seed(5)
        return sample_latents(
            unet, make_scheduler("ddim", 4), cov, SHAPE, generator, False, None, free, scale
        )

    guided = sample(2.0)
    assert calls == [4] * 4  # conditioned and unconditioned estimates in one batch
    calls.clear()
    plain = sample(1.0)
    assert calls == [2] * 4
    assert torch.equal(
        plain,
        sample_latents(unet, make_scheduler("ddim", 4), cov, SHAPE, torch.Generator().manual_seed(5), False),
    )
    assert not torch.allclose(guided, plain)
    with pytest.raises(ValueError, match="unconditioned covariates"):  # not silently unguided
        sample_latents(unet, make_scheduler("ddim", 4), cov, SHAPE, None, False, None, None, 2.0)


@pytest.mark.parametrize("process", [SEED_PROCESS, FORMER_PROCESS, V_PROCESS])
@pytest.mark.parametrize("sampler, steps", [("ddim", 50), ("ddim", 7), ("ddpm", 1000)])
def test_samplers_reach_the_latent_the_covariate_asks_for(sampler, steps, process):
    asked = torch.tensor([[0.0], [0.25], [1.0], [1.5]])  # 1.5: outside the range, as when extrapolating
    scheduler = make_scheduler(sampler, steps, process)
    latents = sample_latents(Exact(process), scheduler, asked, SHAPE, torch.Generator().manual_seed(0), False)
    expected = (2 * asked - 1)[:, :, None, None, None].expand(-1, *SHAPE)
    torch.testing.assert_close(latents, expected, atol=1e-4, rtol=0)


def test_the_loss_compares_the_estimate_with_the_process_target():
    c = torch.tensor([[0.1], [0.9]])
    latents = (2 * c - 1)[:, :, None, None, None].expand(-1, *SHAPE).contiguous()
    t = torch.tensor([50, 900])
    for process in (SEED_PROCESS, V_PROCESS):  # the perfect model's loss is zero for its own target only
        scheduler = make_scheduler("ddpm", process=process)
        own = diffusion_loss(Exact(process), scheduler, latents, c, torch.Generator().manual_seed(3), t)
        other = V_PROCESS if process is SEED_PROCESS else SEED_PROCESS
        wrong = diffusion_loss(Exact(other), scheduler, latents, c, torch.Generator().manual_seed(3), t)
        assert float(own) < 1e-10 < 0.01 < float(wrong)


def test_the_noise_process_defaults_to_seed_004s_and_refuses_others():
    assert noise_process({}) == SEED_PROCESS == {"schedule": "scaled_linear_beta", "prediction": "epsilon"}
    assert noise_process({"prediction": "v_prediction"})["prediction"] == "v_prediction"
    betas = make_scheduler("ddpm").betas  # linear in sqrt(beta), from 0.0015 to 0.0205
    assert betas[0] == pytest.approx(0.0015) and betas[-1] == pytest.approx(0.0205)
    assert betas[500] == pytest.approx((0.0015**0.5 + (0.0205**0.5 - 0.0015**0.5) * 500 / 999) ** 2, rel=1e-5)
    with pytest.raises(ConfigError, match="model.diffusion.prediction"):
        noise_process({"prediction": "sample"})
    with pytest.raises(ConfigError, match="model.diffusion.schedule"):
        noise_process({"schedule": "cosine"})


def test_a_training_step_lowers_the_loss_on_its_batch():
    unet, scheduler = _unet(), make_scheduler("ddpm")
    c = torch.rand(4, 1, generator=torch.Generator().manual_seed(1))
    latents = (2 * c - 1)[:, :, None, None, None].expand(-1, *SHAPE).contiguous()
    t = torch.tensor([100, 300, 500, 700])

    def loss():
        return diffusion_loss(unet, scheduler, latents, c, torch.Generator().manual_seed(2), t)

    before = loss()
    optimiser = torch.optim.SGD(unet.parameters(), lr=0.05)
    before.backward()
    optimiser.step()
    assert loss() < before


def test_same_generator_same_latents_and_ddim_takes_its_steps():
    unet = _unet(n_covariates=2)
    calls = []
    unet.register_forward_hook(lambda *args: calls.append(1))
    cov = torch.tensor([[0.2, 1.0], [0.7, 0.0]])
    run = [
        sample_latents(unet, make_scheduler("ddim", 10), cov, SHAPE, torch.Generator().manual_seed(5), False)
        for _ in range(2)
    ]
    assert torch.equal(run[0], run[1]) and len(calls) == 20
    other = sample_latents(
        unet, make_scheduler("ddim", 10), cov, SHAPE, torch.Generator().manual_seed(6), False
    )
    assert not torch.allclose(run[0], other)
    calls.clear()
    ddpm = sample_latents(unet, make_scheduler("ddpm", 25), cov[:1], SHAPE, torch.Generator().manual_seed(5))
    assert len(calls) == 25 and ddpm.shape == (1, *SHAPE)
    assert len(make_scheduler("ddpm").timesteps) == 1000  # all of them unless fewer are asked for


def test_the_covariates_are_both_channels_and_context():
    unet = _unet(n_covariates=2)
    with torch.no_grad():  # MONAI starts the output layer at zero: give every weight a value
        for p in unet.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    x, t = torch.randn(2, *SHAPE), torch.tensor([10, 500])
    cov, other = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = estimate(unet, x, t, cov)
    assert a.shape == x.shape and not torch.allclose(a, estimate(unet, x, t, other))

    def channels(c):
        return torch.cat([x, c[:, :, None, None, None].expand(-1, -1, *SHAPE[1:])], dim=1)

    with torch.no_grad():  # each path on its own changes the estimate
        assert torch.allclose(a, unet(channels(cov), timesteps=t, context=cov[:, None, :]))
        assert not torch.allclose(a, unet(channels(other), timesteps=t, context=cov[:, None, :]))
        assert not torch.allclose(a, unet(channels(cov), timesteps=t, context=other[:, None, :]))
    net = unet_config(TINY, latent_channels=3, n_covariates=4)
    assert net["in_channels"] == 7 and net["out_channels"] == 3 and net["cross_attention_dim"] == 4


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="attention_levels"):
        unet_config({**TINY, "attention_levels": [True]}, 1, 1)
    with pytest.raises(ConfigError, match="covariate"):
        unet_config(TINY, 1, 0)
    with pytest.raises(ConfigError, match="ddpm or ddim"):
        make_scheduler("euler")
    with pytest.raises(ConfigError, match="between 1 and 1000"):
        make_scheduler("ddim", 0)
    assert condition_dropout({}) == 0.0 and condition_dropout({"condition_dropout": 0.2}) == 0.2
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="model.diffusion.condition_dropout"):
            condition_dropout({"condition_dropout": bad})
