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
    assert report.top1 >= 0.6  # chance is 0.1
    assert report.top5 >= report.top1
    assert report.num_classes == 10 and report.resolution == 32 and report.epochs == 4
    assert report.model == "tiny" and report.blocks == list(TINY.block_strings)
    assert report.params == 11266 and report.macs > 0
    assert report.images_per_second > 0 and report.seconds > 0
    assert math.isfinite(report.loss) and len(report.history) == 4


def test_same_seed_same_numbers_and_callback():
    seen = []
    kwargs = dict(epochs=2, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=3, resolution=24)
    first = train_model(TINY, on_epoch_end=lambda epoch, m: seen.append((epoch, m["top1"])), **kwargs)
    second = train_model(TINY, **kwargs)
    assert [e for e, _ in seen] == [1, 2]
    assert seen[-1][1] == first.top1
    for key in ("top1", "top5", "loss", "train_loss"):
        assert getattr(first, key) == getattr(second, key)
    assert first.resolution == 24
    third = train_model(TINY, seed=1, **kwargs)
    assert third.train_loss != first.train_loss


def test_time_limit_stops_early_and_evaluates():
    report = train_model(TINY, epochs=50, batch_size=16, recipe="small", progress=False, time_limit=0.0)
    assert report.stopped_early and report.epochs_done == 1 and report.steps == 1
    assert 0 <= report.top1 <= 1


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
        losses[init] = report.train_loss
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
    assert report.recipe == "paper" and report.lr == pytest.approx(0.016 * 16 / 256)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for key in ("model", "ema", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step", "sampler", "rng"):
        assert key in state, key
    assert set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert state["optimizer"]["state"][0]["square_avg"].shape == state["model"]["stem.conv.weight"].shape
    assert state["config"]["recipe"]["augment"] == "autoaugment" and state["ema"]["updates"] == 2
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "description.json").exists()


def test_weight_file_records_the_runs_interpolation(tmp_path):
    from effnet.factory import load_model

    train_model(
        TINY, "digits", epochs=1, batch_size=32, recipe="small", max_steps_per_epoch=2, progress=False,
        output=tmp_path, interpolation="bilinear",
    )  # fmt: skip
    _, info = load_model(tmp_path / "model.safetensors")
    assert info.preprocessing.interpolation == "bilinear"
    assert info.preprocessing.crop_pct == 1.0  # the small recipe's evaluation crop


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_rmsprop_tf_matches_timm(momentum):
    """timm's RMSpropTF as an oracle (test only). Mapping of the settings: our ``decay`` (ρ of
    ``ms = ρ·ms + (1−ρ)·g²``) is timm's ``alpha``; ``eps`` is inside the square root and the mean
    square starts at 1 in both; ``lr_in_momentum=True`` puts the learning rate into the momentum buffer
    (TF's ``mom = μ·mom + lr·g/√(ms+ε)``); ``decoupled_decay=False`` adds ``wd·w`` to the gradient (L2),
    as ours; ``centered=False``. Parameter groups as the recipes build them (no decay on BatchNorm and
    biases)."""
    from timm.optim import RMSpropTF as TimmRMSpropTF

    from effnet import create_model

    torch.manual_seed(0)
    ours_model = create_model(TINY, num_classes=10)
    timm_model = create_model(TINY, num_classes=10)
    timm_model.load_state_dict(ours_model.state_dict())
    settings = dict(lr=0.05, momentum=momentum, eps=1e-3)
    ours = RMSpropTF(parameter_groups(ours_model, 1e-2), decay=0.9, **settings)
    oracle = TimmRMSpropTF(
        parameter_groups(timm_model, 1e-2), alpha=0.9, **settings,
        centered=False, decoupled_decay=False, lr_in_momentum=True,
    )  # fmt: skip
    for _ in range(5):
        for a, b in zip(ours_model.parameters(), timm_model.parameters(), strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        ours.step()
        oracle.step()
    for (name, a), b in zip(ours_model.named_parameters(), timm_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ours.state[a]["square_avg"], oracle.state[b]["square_avg"], msg=name)


def test_ema_warms_up_and_copies_batch_counts():
    """The EMA (torch's AveragedModel) follows ``ema = d·ema + (1−d)·w`` with d = min(decay, (1+n)/(10+n))
    from the starting weights, and copies BatchNorm's integer batch count."""
    from effnet import create_model
    from effnet.train.ema import ModelEma

    torch.manual_seed(0)
    model = create_model(TINY, num_classes=10).train()
    ema = ModelEma(model, decay=0.95)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(2, 3, 32, 32))  # moves the running statistics and batch counts
        ema.update_parameters(model)
        decay = min(0.95, (1 + n) / (10 + n))
        for key, value in model.state_dict().items():
            expected[key] = expected[key].lerp(value, 1 - decay) if value.is_floating_point() else value.clone()
    assert ema.updates == 4 and ema.record()["updates"] == 4
    shadow = ema.module.state_dict()
    assert all(torch.equal(shadow[k], expected[k]) for k in expected)
    assert shadow["stem.bn.num_batches_tracked"].item() == 4
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_follows_a_model_of_the_same_layout_given_later():
    """The EMA lists its (shadow, model) tensor pairs once; another model of the same layout given later
    is averaged from, not the first one."""
    from effnet import create_model
    from effnet.train.ema import ModelEma

    torch.manual_seed(0)
    first, second = create_model(TINY, num_classes=10), create_model(TINY, num_classes=10)
    ema = ModelEma(first, decay=0.5, warmup=False)
    ema.update_parameters(first)  # lists first's tensors
    ema.update_parameters(second)
    start, other = first.state_dict(), second.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, start[key].lerp(other[key], 0.5), msg=key)
    assert ema.updates == 2


def test_cpu_runs_train_channels_last_with_the_numbers_of_nchw():
    """On the CPU a run trains in channels_last unless the recipe says otherwise (oneDNN's depthwise
    convolutions are several times faster so: benchmarks/bench_proxy_speed.py); its numbers are NCHW's
    up to float rounding, and the report's counts (from the fit check's profile) are the description's."""
    from effnet.models.profile import profile
    from effnet.train.optim import build_optimizer
    from effnet.train.setup import default_channels_last

    assert default_channels_last(torch.device("cpu"))
    kwargs = dict(epochs=1, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=4, resolution=24)
    fast = train_model(TINY, **kwargs)
    plain = train_model(TINY, channels_last=False, **kwargs)
    assert fast.steps == plain.steps == 4
    assert math.isclose(fast.train_loss, plain.train_loss, rel_tol=1e-4)
    assert math.isclose(fast.loss, plain.loss, rel_tol=1e-3)
    counts = profile(TINY.with_(resolution=24), num_classes=10)
    assert (fast.params, fast.macs) == (counts.params, counts.macs) and counts.params == 11266 and counts.macs > 0
    model = torch.nn.Linear(2, 2)
    for name in ("small", "finetune"):  # one kernel per tensor list on the CPU too
        assert build_optimizer(model, get_recipe(name), 0.1).defaults["foreach"] is True


REPORT_KEYS = [
    "model", "data", "top1", "top5", "loss", "train_loss", "params", "macs", "seconds", "train_seconds",
    "images_per_second", "epochs", "epochs_done", "stopped_early", "steps", "batch_size", "world_size",
    "resolution", "num_classes", "class_names", "seed", "recipe", "lr", "ema", "device", "blocks", "history",
]  # fmt: skip


def test_report_is_a_result_dataclass(tmp_path):
    import json

    from effnet.train import RunConfig, TrainReport

    kwargs = dict(epochs=1, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=1)
    report = train_model(TINY, **kwargs)
    assert isinstance(report, TrainReport) and list(report.to_dict()) == [*REPORT_KEYS, "evaluation"]
    assert report.output is None and "output" not in report.to_dict()
    # the summary comes from the run's own last evaluation: the same top-1 and top-5, no second pass
    assert report.evaluation["top1"] == report.top1 and report.evaluation["top5"] == report.top5
    assert report.evaluation["images"] == 360 and report.evaluation["top1_ci95"][0] <= report.top1
    written = train_model(TINY, output=tmp_path, **kwargs)
    assert list(written.to_dict()) == [*REPORT_KEYS, "evaluation", "output"] and written.output == str(tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(written.to_dict()))
    config, rest = RunConfig.split({"epochs": 3, "lr": 0.1, "device": "cpu"}, recipe="small")
    assert (config.epochs, config.recipe, config.device, rest) == (3, "small", "cpu", {"lr": 0.1})


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(epochs=0), "epochs"), (dict(batch_size=10_000), "batch_size"), (dict(resume=True), "resume")],
)
def test_errors_name_their_argument(kwargs, field):
    with pytest.raises(UserError) as caught:
        train_model(TINY, progress=False, **kwargs)
    assert caught.value.field == field and str(caught.value).startswith(field)
