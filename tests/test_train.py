"""Training API: the built-in digits, determinism, callbacks, recipes and user mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from effnet import NetworkSpec, UserError
from effnet.train import RECIPES, get_recipe, train_model
from effnet.train.optim import LRSchedule, RMSpropTF, parameter_groups

TINY = NetworkSpec(
    name="tiny",
    blocks="r1_k3_s11_e1_i16_o16_se0.25,r1_k3_s22_e4_i16_o32_se0.25",
    stem_channels=16,
    head_channels=128,
    resolution=32,
)


def test_digits_ends_well_above_chance():
    report = train_model(TINY, "digits", epochs=4, batch_size=32, recipe="small", progress=False)
    assert report["top1"] >= 0.6  # chance is 0.1
    assert report["top5"] >= report["top1"]
    assert report["num_classes"] == 10 and report["resolution"] == 32 and report["epochs"] == 4
    assert report["model"] == "tiny" and report["blocks"] == list(TINY.block_strings)
    assert report["params"] == 11266 and report["macs"] > 0
    assert report["images_per_second"] > 0 and report["seconds"] > 0
    assert math.isfinite(report["loss"]) and len(report["history"]) == 4


def test_same_seed_same_numbers_and_callback():
    seen = []
    kwargs = dict(epochs=2, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=3, resolution=24)
    first = train_model(TINY, on_epoch_end=lambda epoch, m: seen.append((epoch, m["top1"])), **kwargs)
    second = train_model(TINY, **kwargs)
    assert [e for e, _ in seen] == [1, 2]
    assert seen[-1][1] == first["top1"]
    for key in ("top1", "top5", "loss", "train_loss"):
        assert first[key] == second[key]
    assert first["resolution"] == 24
    third = train_model(TINY, seed=1, **kwargs)
    assert third["train_loss"] != first["train_loss"]


def test_time_limit_stops_early_and_evaluates():
    report = train_model(TINY, epochs=50, batch_size=16, recipe="small", progress=False, time_limit=0.0)
    assert report["stopped_early"] and report["epochs_done"] == 1 and report["steps"] == 1
    assert 0 <= report["top1"] <= 1


def test_zero_classifier_init_starts_at_log_classes():
    """``classifier_init="zero"``: the first step's loss is ln 10 exactly (uniform prediction); the
    official U(±1/√classes) initialisation does not, and with B0's 1280-wide head its 10-class logits
    start spread widely (the reason for the option)."""
    from effnet import create_model

    losses = {}
    for init in ("zero", "official"):
        report = train_model(
            TINY, epochs=1, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=1,
            classifier_init=init, label_smoothing=0.0,
        )  # fmt: skip
        losses[init] = report["train_loss"]
    assert losses["zero"] == pytest.approx(math.log(10), abs=1e-5)
    assert abs(losses["official"] - math.log(10)) > 1e-3
    torch.manual_seed(0)
    b0 = create_model("efficientnet_b0", num_classes=10, resolution=32, drop_path_rate=0.0, dropout=0.0).train()
    with torch.no_grad():
        logits = b0(torch.randn(8, 3, 32, 32))
    assert logits.std().item() > 1.0
    assert RECIPES["paper"].classifier_init == "official"


def test_callback_exception_propagates():
    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned

    with pytest.raises(Pruned):
        train_model(
            TINY, epochs=3, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=1, on_epoch_end=prune
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=-1), "epochs"),
        (dict(recipe="nope"), "unknown recipe"),
        (dict(data="/no/such/folder"), "does not exist"),
        (dict(no_such_setting=1), "unknown recipe setting"),
        (dict(lr=-0.1), "lr"),
        (dict(classifier_init="xavier"), "classifier_init"),
    ],
)
def test_user_mistakes(kwargs, message):
    with pytest.raises(UserError, match=message):
        train_model(TINY, progress=False, **kwargs)


def test_paper_recipe_is_the_official_one():
    paper = get_recipe("paper")
    assert (paper.optimizer, paper.rmsprop_decay, paper.momentum, paper.eps) == ("rmsprop_tf", 0.9, 0.9, 1e-3)
    assert paper.peak_lr(256) == pytest.approx(0.016) and paper.peak_lr(4096) == pytest.approx(0.256)
    assert (paper.warmup_epochs, paper.decay_epochs, paper.decay_rate) == (5, 2.4, 0.97)
    assert (paper.weight_decay, paper.label_smoothing, paper.ema_decay, paper.drop_path_rate) == (
        1e-5,
        0.1,
        0.9999,
        0.2,
    )
    assert paper.augment == "autoaugment" and paper.interpolation == "bicubic"
    assert set(RECIPES) >= {"paper", "small", "finetune"}
    assert get_recipe("paper", augment="randaugment", randaugment_m=15).randaugment_m == 15


def test_staircase_schedule():
    schedule = LRSchedule(get_recipe("paper"), steps_per_epoch=10, total_steps=1000)
    assert schedule(0) == pytest.approx(1 / 50) and schedule(49) == pytest.approx(1.0)
    assert schedule(50) == pytest.approx(0.97**2)  # the staircase counts from step 0: 50 // 24 = 2
    assert schedule(71) == pytest.approx(0.97**2) and schedule(72) == pytest.approx(0.97**3)


def test_rmsprop_tf_matches_tensorflow_formula():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5))
    opt = RMSpropTF([weight], lr=0.1, decay=0.9, momentum=0.9, eps=1e-3)
    w, ms, mom = weight.detach().clone(), torch.ones(5), torch.zeros(5)
    for _ in range(3):
        grad = torch.randn(5)
        weight.grad = grad.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * grad**2
        mom = 0.9 * mom + 0.1 * grad / torch.sqrt(ms + 1e-3)
        w = w - mom
    torch.testing.assert_close(weight.detach(), w)


def test_weight_decay_skips_batchnorm_and_biases():
    from effnet import create_model

    model = create_model(TINY, num_classes=10)
    decay, no_decay = parameter_groups(model, 1e-5)
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_paper_recipe_runs_and_checkpoints_hold_everything(tmp_path):
    from effnet.train.checkpoint import load_checkpoint

    report = train_model(
        TINY, epochs=1, batch_size=16, max_steps_per_epoch=2, progress=False, output=tmp_path, checkpoint_every_steps=1
    )
    assert report["recipe"] == "paper" and report["lr"] == pytest.approx(0.016 * 16 / 256)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for key in ("model", "ema", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step", "sampler", "rng"):
        assert key in state, key
    assert set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert state["optimizer"]["state"][0]["square_avg"].shape == state["model"]["stem.conv.weight"].shape
    assert state["config"]["recipe"]["augment"] == "autoaugment" and state["ema"]["updates"] == 2
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "description.json").exists()


def test_weight_file_records_the_runs_interpolation(tmp_path):
    from effnet.weights import load_model

    train_model(
        TINY, "digits", epochs=1, batch_size=32, recipe="small", max_steps_per_epoch=2, progress=False,
        output=tmp_path, interpolation="bilinear",
    )  # fmt: skip
    _, info = load_model(tmp_path / "model.safetensors")
    assert info.preprocessing.interpolation == "bilinear"
    assert info.preprocessing.crop_pct == 1.0  # the small recipe's evaluation crop
