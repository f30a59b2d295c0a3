"""Progressive learning (EfficientNetV2) for any model, and mixup/CutMix: the stages, a run on the digits,
an exact resume after SIGKILL in the third stage, the V2 recipes and the bad inputs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from effnet import NetworkSpec, UserError, get_description
from effnet.data import batch_mixer
from effnet.train import get_recipe, train_model
from effnet.train.checkpoint import load_checkpoint
from effnet.train.progressive import plan_stages, ramp, stage_bounds
from effnet.train.trainer import Trainer

BLOCKS = "r1_k3_s11_e1_i16_o16_se0.25,r1_k3_s22_e4_i16_o24_se0.25"
TINY = NetworkSpec(name="tiny", blocks=BLOCKS, stem_channels=16, head_channels=64, resolution=32)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
#: Every ramp on: 4 stages, 16 → 32 px, RandAugment 2 → 10, mixup 0 → 0.4, CutMix 0.5, dropout 0.1 → 0.3.
RAMPS = dict(
    progressive_stages=4, resolution_start=16, augment="randaugment", randaugment_m_start=2, randaugment_m_end=10,
    mixup_alpha_end=0.4, cutmix_alpha=0.5, dropout_start=0.1, dropout_end=0.3,
)  # fmt: skip


def read_metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# -- the stages ------------------------------------------------------------------------------------
def test_stages_cover_the_epochs_evenly():
    assert stage_bounds(4, 10) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert stage_bounds(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert stage_bounds(3, 350) == [(0, 116), (116, 233), (233, 350)]
    for stages, epochs in ((1, 1), (4, 350), (7, 9)):
        bounds = stage_bounds(stages, epochs)
        assert bounds[0][0] == 0 and bounds[-1][1] == epochs
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    assert [ramp(5, 15, i, 4) for i in range(4)] == pytest.approx([5, 25 / 3, 35 / 3, 15])
    assert ramp(0.1, 0.3, 0, 1) == 0.3  # one stage trains at the end values


def test_v2_recipes_are_table_6_of_the_paper():
    """V2-S: 128 → 300 px (its train_resolution), RandAugment 5 → 15, mixup 0, dropout 0.1 → 0.3, as the
    paper's Algorithm 1 (first stage at the start values; the official code would start at 171 px)."""
    plan = plan_stages(get_recipe("v2"), 350, get_description("efficientnetv2_s"), None)
    assert plan.progressive and [s.resolution for s in plan.stages] == [128, 185, 243, 300]
    assert [s.randaugment_m for s in plan.stages] == [5, 8, 12, 15]
    assert [s.mixup_alpha for s in plan.stages] == [0, 0, 0, 0] and {s.cutmix_alpha for s in plan.stages} == {0}
    assert [s.dropout for s in plan.stages] == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    assert [(s.first_epoch, s.stop_epoch) for s in plan.stages] == [(0, 87), (87, 175), (175, 262), (262, 350)]
    m = plan_stages(get_recipe("v2_m"), 350, get_description("efficientnetv2_m"), None).stages
    assert [s.resolution for s in m] == [128, 213, 299, 384]  # the official V2-M train size (Table 6: 380)
    assert [s.randaugment_m for s in m] == [5, 10, 15, 20] and [s.dropout for s in m][-1] == pytest.approx(0.4)
    assert [s.mixup_alpha for s in m] == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2])
    large = plan_stages(get_recipe("v2_l"), 350, get_description("efficientnetv2_l"), None).stages
    assert [s.randaugment_m for s in large] == [5, 12, 18, 25] and large[-1].mixup_alpha == pytest.approx(0.4)
    assert large[0].dropout == pytest.approx(0.1) and large[-1].dropout == pytest.approx(0.5)
    for name in ("v2", "v2_m", "v2_l"):  # the paper's optimiser and schedule otherwise
        recipe, paper = get_recipe(name), get_recipe("paper")
        assert recipe.augment == "randaugment" and recipe.progressive_stages == 4
        for key in ("optimizer", "base_lr", "eps", "schedule", "decay_rate", "ema_decay", "label_smoothing"):
            assert getattr(recipe, key) == getattr(paper, key), (name, key)
    assert plan.stage_of(0).index == 0 and plan.stage_of(87).index == 1 and plan.stage_of(350).index == 3
    assert plan.stage_of(200).label() == "stage 3/4, 243 px"


def test_the_end_size_defaults_to_the_runs_then_the_models_train_resolution():
    recipe = get_recipe("v2", resolution_start=64)
    b0 = get_description("efficientnetv2_b0")  # evaluates at 224, trains at 192
    assert plan_stages(recipe, 4, b0, None).stages[-1].resolution == 192
    assert plan_stages(recipe, 4, b0.with_(resolution=160), 160).stages[-1].resolution == 160
    assert plan_stages(recipe.with_(resolution_end=256), 4, b0, None).stages[-1].resolution == 256
    assert [s.resolution for s in plan_stages(get_recipe("small", progressive_stages=2), 2, TINY, None).stages] == [
        16,
        32,
    ]  # start: half the end
    fixed = plan_stages(get_recipe("small", mixup_alpha=0.2), 5, TINY, None)
    assert not fixed.progressive and len(fixed.stages) == 1 and fixed.record(3) is None
    assert (fixed.stage_of(4).resolution, fixed.stage_of(4).mixup_alpha, fixed.stage_of(4).dropout) == (32, 0.2, 0.2)


def test_batch_mixer_gives_soft_targets():
    images, targets = torch.rand(8, 3, 16, 16), torch.arange(8) % 10
    assert batch_mixer(0, 0, 10) is None
    for mixup, cutmix in ((0.4, 0), (0, 1.0), (0.4, 1.0)):
        torch.manual_seed(0)
        mixed, soft = batch_mixer(mixup, cutmix, 10)(images, targets)
        assert mixed.shape == images.shape and soft.shape == (8, 10)
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        assert not torch.equal(mixed, images)


# -- runs --------------------------------------------------------------------------------------------
def test_progressive_run_on_digits_grows_the_image_size(tmp_path, monkeypatch, capsys):
    """4 stages on the digits: each stage's loader gives images of its size, dropout and the mixer follow
    the stage, metrics.csv has the stage and image size, evaluation stays at 32 px."""
    seen = []
    enter = Trainer._enter_stage

    def spy(self, epoch):
        stage, loader = enter(self, epoch)
        image, _ = loader.dataset[(0, 11)]
        seen.append((stage.index, image.shape[-1], self.setup.net.dropout.p, type(self.mixer).__name__))
        return stage, loader

    monkeypatch.setattr(Trainer, "_enter_stage", spy)
    report = train_model(
        TINY, "digits", epochs=4, batch_size=16, recipe="small", max_steps_per_epoch=4, output=tmp_path,
        progress=True, **RAMPS,
    )  # fmt: skip
    assert [(i, px) for i, px, _, _ in seen] == [(0, 16), (1, 21), (2, 27), (3, 32)]
    assert [p for _, _, p, _ in seen] == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    assert [m for _, _, _, m in seen] == ["CutMix", "RandomChoice", "RandomChoice", "RandomChoice"]
    rows = read_metrics(tmp_path)
    assert list(rows[0])[:4] == ["epoch", "step", "stage", "train_resolution"]
    assert [(r["stage"], r["train_resolution"]) for r in rows] == [("1", "16"), ("2", "21"), ("3", "27"), ("4", "32")]
    assert report.resolution == 32 and report.epochs_done == 4 and 0 <= report.top1 <= 1
    assert report.history[2]["train_resolution"] == 27
    assert "epoch 3/4, stage 3/4, 27 px" in capsys.readouterr().err  # the progress bar
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["stage"]["index"] == 3 and last["stage"]["resolution"] == 32


def test_runs_without_progressive_learning_keep_their_metrics_columns(tmp_path):
    train_model(TINY, epochs=1, batch_size=16, recipe="small", max_steps_per_epoch=2, progress=False,
                output=tmp_path, mixup_alpha=0.2, cutmix_alpha=1.0)  # fmt: skip
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,step,lr,train_loss,val_loss,top1,top5,seconds,images_per_second"
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["stage"] is None


def command(output: Path, *extra: str) -> list[str]:
    return [
        "train", "--blocks", BLOCKS, "--resolution", "32", "--epochs", "4", "--batch-size", "16",
        "--max-steps-per-epoch", "6", "--recipe", "small", "--seed", "5", "--threads", "1", "--workers", "1",
        "--checkpoint-every", "2", "--progressive", "--resolution-start", "16", "--set", "augment=randaugment",
        "--randaugment-m-start", "2", "--randaugment-m-end", "10", "--mixup-end", "0.4", "--cutmix", "0.5",
        "--dropout-start", "0.1", "--dropout-end", "0.3", "--output", str(output), "--json", *extra,
    ]  # fmt: skip


#: Runs the CLI and SIGKILLs itself right after the checkpoint at step 4 of epoch 3 (the third stage).
KILL_IN_STAGE_3 = textwrap.dedent(
    """
    import os, signal, sys
    from effnet.cli.main import main
    from effnet.train import checkpoint

    save = checkpoint.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == 2 and state["step_in_epoch"] == 4:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save_checkpoint = save_then_die
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_in_the_third_stage_then_resume_is_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run = lambda *args: subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)  # noqa: E731
    done = run(sys.executable, "-m", "effnet", *command(whole))
    assert done.returncode == 0, done.stderr[-3000:]

    died = run(sys.executable, "-c", KILL_IN_STAGE_3, *command(killed))
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    state = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["stage"]["index"]) == (2, 4, 2)
    assert state["stage"]["resolution"] == 27 and not (killed / "model.safetensors").exists()

    resumed = run(sys.executable, "-m", "effnet", *command(killed, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first, second = (
        load_checkpoint(whole / "checkpoints" / "last.pt"),
        load_checkpoint(killed / "checkpoints" / "last.pt"),
    )
    for a, b in ((first["model"], second["model"]), (first["ema"]["module"], second["ema"]["module"])):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole_rows, killed_rows = read_metrics(whole), read_metrics(killed)
    assert [r["train_resolution"] for r in killed_rows] == ["16", "21", "27", "32"]
    skip = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in skip} for r in killed_rows] == [
        {k: v for k, v in r.items() if k not in skip} for r in whole_rows
    ]


def test_a_resume_checks_the_stage(tmp_path):
    settings = dict(epochs=2, batch_size=16, recipe="small", max_steps_per_epoch=2, progress=False, output=tmp_path)
    train_model(TINY, progressive_stages=2, **settings)
    with pytest.raises(UserError, match="differs from this run's schedule .*dropout 0.2 there, 0.3 here"):
        train_model(TINY, progressive_stages=2, dropout_end=0.3, resume=True, **settings)
    with pytest.raises(UserError, match="written by a progressive run and this run is not one"):
        train_model(TINY, resume=True, **settings)


# -- bad inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(progressive_stages=4, resolution_start=32, resolution_end=16), "resolution_end"),
        (dict(progressive_stages=4, resolution_start=48), "resolution_start"),  # above the end, 32 px
        (dict(progressive_stages=4, resolution_start=2), "resolution_start"),  # below the total stride
        (dict(progressive_stages=5), "progressive_stages"),  # more stages than the 4 epochs
        (dict(progressive_stages=-1), "progressive_stages"),
        (dict(progressive_stages=4, augment="randaugment", randaugment_m_end=31), "randaugment_m_end"),
        (dict(progressive_stages=4, augment="randaugment", randaugment_m_start=-1), "randaugment_m_start"),
        (dict(progressive_stages=4, randaugment_m_end=10), "randaugment_m_end"),  # augment is none
        (dict(mixup_alpha=-0.1), "mixup_alpha"),
        (dict(cutmix_alpha=float("nan")), "cutmix_alpha"),
        (dict(progressive_stages=4, mixup_alpha_end=-1), "mixup_alpha_end"),
        (dict(progressive_stages=4, dropout_end=1.0), "dropout_end"),
        (dict(dropout_end=0.3), "dropout_end"),  # progressive learning is off
    ],
)
def test_bad_settings_name_their_field(settings, field):
    with pytest.raises(UserError) as caught:
        train_model(TINY, epochs=4, batch_size=16, recipe="small", progress=False, max_steps_per_epoch=1, **settings)
    assert caught.value.field == field and str(caught.value).startswith(field), str(caught.value)


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--progressive", "--resolution-start", "32", "--resolution-end", "16"], "--resolution-end"),
        (["--progressive", "--resolution-start", "64"], "--resolution-start"),
        (["--progressive", "8"], "--progressive"),
        (["--progressive", "0"], "--progressive"),
        (["--progressive", "--set", "augment=randaugment", "--randaugment-m-end", "31"], "--randaugment-m-end"),
        (["--mixup", "-1"], "--mixup"),
        (["--progressive", "--cutmix-start", "-0.5"], "--cutmix-start"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_2(cli, extra, flag):
    code, out, err = cli(
        "train", "--blocks", BLOCKS, "--resolution", "32", "--epochs", "4", "--batch-size", "16",
        "--max-steps-per-epoch", "1", "--recipe", "small", "--json", *extra,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"effnet train: error: {flag} "), err
