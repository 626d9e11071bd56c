"""Published training setups, selected with ``--preset NAME`` and recorded in ``RUN/config.json``.

A preset is a dict of :class:`~constrained_vae.run.settings.RunConfig` settings. It sits between
the settings given and the dataset defaults: a setting given explicitly (``--steps 1000``)
overrides the preset's, and the preset overrides the dataset default
(:meth:`RunConfig.resolved`). Presets do not set the objective or its budget (β, ε):
they are the model, the optimiser and the schedule. Units as everywhere: nats per sample.

``locatello2019`` — disentanglement_lib's β-VAE, the setup of Locatello et al. (2019),
"Challenging common assumptions in the unsupervised learning of disentangled representations" (ICML),
``disentanglement_lib/config/unsupervised_study_v1/model_configs/shared.gin``:
``model.batch_size = 64``, ``encoder.num_latent = 10``, ``model.training_steps = 300000``,
``vae/AdamOptimizer`` with ``learning_rate = 0.0001``, ``beta1 = 0.9``, ``beta2 = 0.999``,
``epsilon = 1e-08`` (torch's Adam defaults for the last three), ``encoder_fn = @conv_encoder``,
``decoder_fn = @deconv_decoder`` (model ``dlib-conv``, a transcription of
``disentanglement_lib/methods/shared/architectures.py``: 4×4 stride-2 convolutions of 32 and 32
channels, then 2×2 stride-2 ones of 64 and 64 where the β-VAE paper's table, and this project's
``conv`` model, have 4×4; FC 256; a 4×4 transposed mirror; TensorFlow's Glorot-uniform
initialisation), ``reconstruction_loss = @bernoulli_loss``. Runs recorded with ``model: conv``
under this preset keep it: ``config.json`` records the model. That study
trains every one of its datasets with these settings; of them, this project reads dSprites, its
colour, noise and scream variants, and 3D Shapes.

``higgins2017`` — the β-VAE paper's own 2D-shapes (dSprites) setup: Higgins et al. (2017),
"β-VAE: Learning basic visual concepts with a constrained variational framework" (ICLR),
Appendix A.2, Table 1, row "2D shapes (VAE)": Adagrad with learning rate 1e-2; encoder
FC 1200, 1200 (ReLU) on the flattened 64×64 image; 10 latents; decoder FC 1200, 1200, 1200
(tanh) to 4096 Bernoulli logits (model ``higgins-mlp``). The table gives neither a batch
size nor a number of steps: this preset takes disentanglement_lib's (64; 300,000), so
the two presets differ only in model and optimiser.
"""

from __future__ import annotations

from typing import Any

from constrained_vae.core.models import DLIB_CONV

LOCATELLO_2019 = "locatello2019"
HIGGINS_2017 = "higgins2017"
HIGGINS_MLP = "higgins-mlp"  # the β-VAE paper's 2D-shapes MLP (see the module docstring)

# How a long run is logged: the number of rows and checkpoints, not its numbers (both may change on resume).
_LONG_RUN_LOGGING: dict[str, Any] = dict(log_every=100, checkpoint_every=10_000)

PRESETS: dict[str, dict[str, Any]] = {
    LOCATELLO_2019: dict(
        model=DLIB_CONV, likelihood="bernoulli", latent_dim=10, steps=300_000, batch_size=64,
        optimizer="adam", lr=1e-4, **_LONG_RUN_LOGGING,
    ),
    HIGGINS_2017: dict(
        model=HIGGINS_MLP, likelihood="bernoulli", latent_dim=10, steps=300_000, batch_size=64,
        optimizer="adagrad", lr=1e-2, **_LONG_RUN_LOGGING,
    ),
}  # fmt: skip

# The datasets each preset was published for.
PRESET_DATASETS: dict[str, tuple[str, ...]] = {
    LOCATELLO_2019: ("dsprites", "dsprites-npz", "color-dsprites", "noisy-dsprites", "scream-dsprites", "shapes3d"),
    HIGGINS_2017: ("dsprites", "dsprites-npz"),
}

PRESET_DESCRIPTIONS: dict[str, str] = {
    LOCATELLO_2019: "disentanglement_lib / Locatello et al. 2019: model dlib-conv, Adam 1e-4, batch 64, 300k steps",
    HIGGINS_2017: "Higgins et al. 2017, 2D shapes: MLP 1200-1200 / 1200-1200-1200 tanh, Adagrad 1e-2",
}


def preset_settings(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (a copy); KeyError for an unknown name."""
    return dict(PRESETS[name])
