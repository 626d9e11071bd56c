"""disentanglement_lib's conv VAE (``--model dlib-conv``): its parameters and shapes against a transcription of
``disentanglement_lib/methods/shared/architectures.py`` (google-research/disentanglement_lib), TensorFlow's
"same" padding, a bank and a run of it, and the ``locatello2019`` preset that trains it."""

from __future__ import annotations

import json

import pytest
import torch
from ray_testing import assert_same_run
from torch import nn

from constrained_vae.cli.run import run_main
from constrained_vae.cli.sweep import sweep_main
from constrained_vae.core.models import (
    DLIB_CONV,
    DlibConvEncoder,
    DlibDeconvDecoder,
    build_vae,
    tf_same_conv,
    tf_same_deconv,
    tf_same_padding,
)
from constrained_vae.run import folder
from constrained_vae.run.bank import Bank
from constrained_vae.run.device import torch_threads
from constrained_vae.run.loop import load_run, train_bank
from constrained_vae.run.settings import RunConfig


def conv_params(kernel: int, c_in: int, c_out: int) -> int:
    """A tf.layers.conv2d or conv2d_transpose: a kernel×kernel×c_in×c_out kernel and c_out biases."""
    return kernel * kernel * c_in * c_out + c_out


def dense_params(n_in: int, n_out: int) -> int:
    """A tf.layers.dense: an n_in×n_out kernel and n_out biases."""
    return n_in * n_out + n_out


# disentanglement_lib/methods/shared/architectures.py, for a 64×64×1 input and num_latent = 10.
# conv_encoder: e1, e2 conv 4×4/2 "same" to 32, 32; e3, e4 conv 2×2/2 "same" to 64, 64 (64 → 32 → 16 → 8 → 4);
# e5 dense 256 on the flattened 4×4×64; means and log_var, dense num_latent each.
DLIB_ENCODER = [
    conv_params(4, 1, 32),
    conv_params(4, 32, 32),
    conv_params(2, 32, 64),
    conv_params(2, 64, 64),
    dense_params(4 * 4 * 64, 256),
    dense_params(256, 10),
    dense_params(256, 10),
]
# deconv_decoder: d1 dense 256; d2 dense 1024, reshaped to 4×4×64; d3 … d6 conv2d_transpose 4×4/2 "same" to
# 64, 32, 32 and output_shape[2] = 1 channels.
DLIB_DECODER = [
    dense_params(10, 256),
    dense_params(256, 1024),
    conv_params(4, 64, 64),
    conv_params(4, 64, 32),
    conv_params(4, 32, 32),
    conv_params(4, 32, 1),
]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_parameters_are_disentanglement_libs_layer_for_layer_for_64x64x1_and_10_latents():
    model = build_vae(DLIB_CONV, (1, 64, 64), 10)
    assert count(model.encoder) == sum(DLIB_ENCODER) == 309_204
    assert count(model.decoder) == sum(DLIB_DECODER) == 381_313
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [count(m) for m in convs] == DLIB_ENCODER[:4] + DLIB_DECODER[2:]
    assert [count(m) for m in linears] == DLIB_ENCODER[4:] + DLIB_DECODER[:2]
    paper = build_vae("conv", (1, 64, 64), 10)  # 4×4 kernels in e3 and e4: 16 weights where dlib has 4
    assert count(paper) - count(model) == (16 - 4) * (32 * 64 + 64 * 64) == 73_728


@pytest.mark.parametrize("channels", [1, 3])
def test_layer_outputs_have_tensorflow_same_shapes_and_the_decoder_gives_logits_of_the_image(channels):
    torch.manual_seed(0)
    model = build_vae(DLIB_CONV, (channels, 64, 64), 10)
    sizes: list[tuple[int, ...]] = []
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            layer.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
    out = model(torch.rand(5, channels, 64, 64))
    encoder = [(32, 32, 32), (32, 16, 16), (64, 8, 8), (64, 4, 4)]  # 64 → 32 → 16 → 8 → 4
    decoder = [(64, 8, 8), (32, 16, 16), (32, 32, 32), (channels, 64, 64)]  # 4 → 8 → 16 → 32 → 64
    assert sizes == [*encoder, *decoder]
    assert out.mu.shape == out.log_var.shape == (5, 10) and out.decoded.shape == (5, channels, 64, 64)
    assert out.decoded.min() < 0 < out.decoded.max()  # logits, no squashing


def test_tensorflow_layers_start_from_glorot_uniform_kernels_and_zero_biases():
    torch.manual_seed(0)
    for module in (DlibConvEncoder(1, 10), DlibDeconvDecoder(1, 10)):
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                assert torch.count_nonzero(layer.bias) == 0
                area = layer.weight[0, 0].numel()
                fan_in, fan_out = layer.weight.shape[1] * area, layer.weight.shape[0] * area
                limit = (6 / (fan_in + fan_out)) ** 0.5
                assert layer.weight.abs().max() <= limit and layer.weight.abs().max() > 0.9 * limit


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(64, 4, 2, (1, 1)), (16, 2, 2, (0, 0)), (5, 2, 2, (0, 1)), (7, 4, 2, (1, 2)), (64, 4, 1, (1, 2))],
)
def test_same_padding_is_tensorflows_with_the_odd_pixel_after(size, kernel, stride, padding):
    assert tf_same_padding(size, kernel, stride) == padding


def test_an_asymmetric_same_convolution_pads_the_right_and_bottom_edges():
    conv = tf_same_conv(1, 1, 2, 2, 5)
    nn.init.ones_(conv[1].weight), nn.init.zeros_(conv[1].bias)
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    # TF: output ⌈5/2⌉ = 3, one zero row and column padded after; each output sums its 2×2 window.
    windows = [[0, 1], [2, 3], [4]]
    expected = torch.tensor([[sum(x[0, 0, p, q] for p in rows for q in cols) for cols in windows] for rows in windows])
    assert torch.equal(conv(x)[0, 0], expected)


def test_an_asymmetric_same_transposed_convolution_drops_the_extra_pixel_at_the_end():
    deconv = tf_same_deconv(1, 1, 3, 2, 2)
    layer = deconv[0]
    nn.init.ones_(layer.weight), nn.init.zeros_(layer.bias)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # TF: output 2·2 = 4; the full output (2 − 1)·2 + 3 = 5 loses the "same" padding (0, 1) of a conv from 4 to 2.
    # Output pixel r of the full output gathers input pixel p where 2p ≤ r < 2p + 3.
    sources = [[0], [0], [0, 1], [1]]
    expected = torch.tensor([[sum(x[0, 0, p, q] for p in rows for q in cols) for cols in sources] for rows in sources])
    assert torch.equal(deconv(x)[0, 0], expected)


def tiny(**overrides) -> RunConfig:
    settings = dict(dataset="dsprites", model=DLIB_CONV, batch_size=8, steps=20, log_every=5, threads=1)
    return RunConfig(**(settings | overrides))


@torch_threads(1)
def test_a_stacked_bank_of_two_computes_each_members_own_terms_and_steps():
    bank = Bank.build([tiny(epsilon=2.0).resolved(), tiny(beta=4.0).resolved()], "stacked")  # one dataset
    batches = [member.next_batch() for member in bank.members]
    x, noise = (torch.stack([batch[i] for batch in batches]) for i in (0, 1))
    params = [dict(module.named_parameters()) for module in bank.terms_modules]
    stacked = {name: torch.stack([p[name] for p in params]) for name in params[0]}
    terms = bank._stacked_terms(stacked, x, noise)
    for i, module in enumerate(bank.terms_modules):
        torch.testing.assert_close(terms[i], module(x[i], noise[i]), rtol=1e-4, atol=1e-3)
    before = [p.detach().clone() for p in bank.members[0].model.parameters()]
    for _ in range(2):
        stepped = bank.advance(bank.members)
    assert all(torch.isfinite(torch.stack([t.nll, t.kl])).all() for t in stepped)
    assert any(not torch.equal(b, p) for b, p in zip(before, bank.members[0].model.parameters(), strict=True))


def test_a_dlib_conv_run_trains_and_resumes_bit_for_bit(tmp_path):
    flags = "--epsilon 5 --model dlib-conv --batch-size 8 --log-every 5 --checkpoint-every 5 --threads 1".split()
    assert run_main([*flags, "--steps", "20", "--no-progress", "--out", str(tmp_path / "straight")]) == 0
    assert run_main([*flags, "--steps", "10", "--no-progress", "--out", str(tmp_path / "split")]) == 0
    assert run_main(["--resume", str(tmp_path / "split"), "--steps", "20", "--no-progress"]) == 0
    assert_same_run(tmp_path / "split", tmp_path / "straight")
    assert folder.read_config(tmp_path / "split").model == DLIB_CONV


def test_the_locatello2019_preset_trains_dlib_conv_and_records_it(tmp_path):
    assert RunConfig(beta=4.0, preset="locatello2019").resolved().model == DLIB_CONV
    flags = "--beta 4 --preset locatello2019 --steps 2 --batch-size 8 --threads 1 --no-progress".split()
    assert run_main([*flags, "--out", str(tmp_path / "r")]) == 0
    recorded = json.loads((tmp_path / "r" / folder.CONFIG_FILE).read_text())
    assert (recorded["preset"], recorded["model"]) == ("locatello2019", DLIB_CONV)
    assert isinstance(load_run(tmp_path / "r").model.encoder, DlibConvEncoder)


def test_a_run_recorded_under_the_preset_with_the_paper_conv_model_resumes_as_conv(tmp_path):
    config = RunConfig(beta=4.0, preset="locatello2019", model="conv", steps=4, batch_size=8, threads=1)
    train_bank([config], [tmp_path / "old"], resume=[False], progress=False)
    recorded = json.loads((tmp_path / "old" / folder.CONFIG_FILE).read_text())
    assert (recorded["preset"], recorded["model"]) == ("locatello2019", "conv")
    assert run_main(["--resume", str(tmp_path / "old"), "--steps", "6", "--no-progress"]) == 0
    assert folder.read_config(tmp_path / "old").model == "conv"
    assert folder.read_summary(tmp_path / "old")["steps"] == 6
    assert not isinstance(load_run(tmp_path / "old").model.encoder, DlibConvEncoder)


SWEEP = "--seeds 0 --preset locatello2019 --steps 2 --batch-size 8 --executor local --no-progress".split()


def test_a_sweep_reads_its_preset_as_recorded_so_one_made_before_dlib_conv_goes_on_with_conv(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep_main(["--out", str(out), "--beta", "1", *SWEEP, "--model", "conv"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["preset_settings"]["model"] == DLIB_CONV  # the preset as it is now, overridden by --model
    # sweep.json as it was written while locatello2019 trained conv: no preset_settings, the model left to the preset
    del record["preset_settings"], record["run_settings"]["model"]
    (out / "sweep.json").write_text(json.dumps(record))
    assert sweep_main(["--out", str(out), "--beta", "1", *SWEEP]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert sweep_main(["--out", str(out), "--beta", "1", "2", *SWEEP]) == 0  # a point added trains as the others
    assert [folder.read_config(out / f"beta{b}-seed0").model for b in (1, 2)] == ["conv", "conv"]
    assert json.loads((out / "sweep.json").read_text())["preset_settings"]["model"] == "conv"
    assert sweep_main(["--out", str(tmp_path / "new"), "--beta", "1", *SWEEP]) == 0
    assert folder.read_config(tmp_path / "new" / "beta1-seed0").model == DLIB_CONV
