"""Architecture search: space, objective, controller and strategies with a deterministic stub evaluator."""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import sys
import time

import optuna
import pytest
import torch

from effnet import NetworkSpec, create_model, get_description, parse_blocks, profile
from effnet.errors import UserError
from effnet.nas import Objective, Reinforce, SearchSpace, search_architectures
from effnet.nas.space import DECISIONS
from effnet.nas.strategies import STRATEGIES

B0 = get_description("efficientnet_b0")


def fake_accuracy(spec, number):
    """Deterministic: kernel-5 stages and MBConv stages help."""
    k5 = sum(b.kernel == 5 for b in spec.blocks) / len(spec.blocks)
    mb = sum(b.kind == "mb" for b in spec.blocks) / len(spec.blocks)
    return {"accuracy": round(0.4 + 0.3 * k5 + 0.2 * mb, 6)}


def assert_rewards_recomputed(result):
    obj = result.objective
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert done
    for t in done:
        ratio = t["macs"] / obj.effective_target
        w = 0.0 if obj.kind == "hard" and ratio <= 1 else obj.exponent
        assert t["reward"] == pytest.approx(t["accuracy"] * ratio**w, rel=1e-12)
        assert t["macs"] == profile(B0.with_(blocks=parse_blocks(t["blocks"]), resolution=obj.resolution)).macs


# -- space -----------------------------------------------------------------------------------------


def test_space_holds_b0_and_decodes_choices_to_block_strings():
    space = SearchSpace()
    assert space.num_stages == 7
    assert space.size == (5 * 2 * 2 * 2 * 3 * 3) ** 7
    ref = space.reference_params()
    assert space.network(ref).block_strings == B0.block_strings
    params = dict(ref, s2_op="cn", s2_kernel=3, s2_se=0.0, s2_skip=False, s2_filters=0.75, s2_layers=1)
    params.update(s3_op="ds", s3_filters=1.25, s0_layers=-1, s6_op="mb3")
    spec = space.network(params)
    assert spec.block_strings == [
        "r1_k3_s11_e1_i32_o16_se0.25",  # r1 − 1 stays at one layer
        "r2_k3_s22_e6_i16_o24_se0.25",
        "cn_r3_k3_s22_e1_i24_o32_noskip",  # 40 × 0.75 = 30 → 32
        "ds_r3_k3_s22_e1_i32_o104_se0.25",  # 80 × 1.25 = 100 → 104 (nearest multiple of 8, halves up)
        "r3_k5_s11_e6_i104_o112_se0.25",
        "r4_k5_s22_e6_i112_o192_se0.25",
        "r1_k3_s11_e3_i192_o320_se0.25",
    ]
    assert space.indices(space.params(space.indices(params))) == space.indices(params)
    model = create_model(spec.with_(resolution=32), num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_space_samples_valid_architectures_around_any_reference():
    ref = get_description("mobilenet_v2") if "mobilenet_v2" in __import__("effnet").model_names() else B0
    space = SearchSpace(reference=ref, ops=("ds", "mb6"), kernels=(3,), filter_multipliers=(1.0,))
    rng = random.Random(0)
    for _ in range(5):
        spec = space.network(space.sample(rng))
        assert len(spec.blocks) == len(ref.blocks)
        assert all(b.kind in ("ds", "mb") and b.kernel == 3 for b in spec.blocks)
        assert [b.out_channels for b in spec.blocks] == [b.out_channels for b in ref.blocks]
    with pytest.raises(UserError, match="unknown conv op"):
        SearchSpace(ops=("mb6", "xx"))
    with pytest.raises(UserError, match="does not belong"):
        space.network({"s0_op": "cn"})


# -- objective -------------------------------------------------------------------------------------


def test_objective_soft_and_hard_with_proxy_scaled_target():
    soft = Objective()
    assert (soft.kind, soft.target, soft.exponent, soft.effective_target) == ("soft", 400e6, -0.07, 400e6)
    assert soft.reward(0.8, 400e6) == pytest.approx(0.8)
    assert soft.reward(0.8, 800e6) == pytest.approx(0.8 * 2**-0.07)
    assert soft.reward(0.8, 200e6) == pytest.approx(0.8 * 0.5**-0.07)  # cheaper models gain
    proxy = Objective(resolution=112)
    assert proxy.effective_target == pytest.approx(100e6)
    assert proxy.reward(0.5, 100e6) == pytest.approx(0.5)
    assert Objective(resolution=320).effective_target == 400e6  # never scaled up
    hard = Objective(kind="hard")
    assert hard.exponent == -1.0
    assert hard.reward(0.8, 200e6) == 0.8 and hard.reward(0.8, 400e6) == 0.8
    assert hard.reward(0.8, 800e6) == pytest.approx(0.4)
    latency = Objective(metric="latency", target=20.0, resolution=32)
    assert latency.effective_target == 20.0 and latency.reward(0.9, 40.0) == pytest.approx(0.9 * 2**-0.07)
    assert latency.describe()["target_latency_ms"] == 20.0
    with pytest.raises(UserError):
        Objective(kind="medium")
    with pytest.raises(UserError):
        Objective(w=0.5)


# -- controller ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_controller_learns_the_rewarded_choice_and_checkpoints(algorithm):
    space = SearchSpace()
    sizes = [len(space.options(d)) for _, d in space.tokens]
    kernel_tokens = [i for i, (_, d) in enumerate(space.tokens) if d == "kernel"]
    learner = Reinforce(sizes, seed=0, algorithm=algorithm)
    generator = torch.Generator().manual_seed(0)

    def p_k5(agent):
        probs = agent.policy.probabilities()
        return sum(probs[i][space.kernels.index(5)] for i in kernel_tokens) / len(kernel_tokens)

    assert p_k5(learner) == pytest.approx(0.5)  # the first policy is uniform
    for _ in range(60):
        actions = learner.sample(generator)
        reward = 0.5 + 0.5 * sum(actions[i] == space.kernels.index(5) for i in kernel_tokens) / len(kernel_tokens)
        learner.update(actions, reward)
    assert p_k5(learner) > 0.8
    assert 0.5 < learner.baseline <= 1.0
    clone = Reinforce(sizes, seed=123)
    clone.load_state_dict(learner.state_dict())
    assert clone.sample(torch.Generator().manual_seed(5)) == learner.sample(torch.Generator().manual_seed(5))


# -- strategies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_each_strategy_finishes_a_tiny_search_with_exact_rewards(strategy, tmp_path):
    result = search_architectures(
        strategy=strategy,
        n_trials=5,
        resolution=32,
        evaluate=fake_accuracy,
        storage=optuna.storages.InMemoryStorage(),
        output=tmp_path,
        population=3,
        progress=False,
        plot=strategy == "rl",
    )
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(done) == 5
    assert result.objective.effective_target == pytest.approx(400e6 * (32 / 224) ** 2)
    assert_rewards_recomputed(result)
    assert result.best["reward"] == max(t["reward"] for t in done)
    best = NetworkSpec.load(result.best["description"])
    assert best.block_strings == result.best["blocks"] and best.resolution == 224
    assert (tmp_path / "trials.csv").read_text().count("\n") == 1 + len(result.trials)
    data = result.to_dict()
    assert {"objective", "target_macs", "w", "best", "trials"} <= set(data)
    assert set(DECISIONS) <= set(data["space"])
    if strategy == "rl":
        assert (tmp_path / "pareto.png").stat().st_size > 1000
    if strategy == "evolution":  # starts from the reference
        assert done[0]["blocks"] == B0.block_strings


def test_hard_objective_search_rewards(tmp_path):
    result = search_architectures(
        strategy="random",
        n_trials=4,
        resolution=32,
        evaluate=fake_accuracy,
        objective=Objective(kind="hard", target=400e6, resolution=32),
        storage=optuna.storages.InMemoryStorage(),
        output=tmp_path,
        progress=False,
        plot=False,
    )
    assert result.to_dict()["objective"] == "hard" and result.to_dict()["w"] == -1.0
    assert_rewards_recomputed(result)


def test_rl_search_resumed_from_storage_replays_the_same_policy(tmp_path):
    kwargs = dict(strategy="rl", resolution=32, evaluate=fake_accuracy, progress=False, plot=False, seed=3)
    whole = search_architectures(n_trials=3, output=tmp_path / "whole", **kwargs)
    search_architectures(n_trials=2, output=tmp_path / "split", **kwargs)
    resumed = search_architectures(n_trials=3, output=tmp_path / "split", **kwargs)  # a new process would do this
    assert [t["blocks"] for t in resumed.trials] == [t["blocks"] for t in whole.trials]
    assert [t["reward"] for t in resumed.trials] == [t["reward"] for t in whole.trials]
    with pytest.raises(UserError, match="other settings"):
        search_architectures(n_trials=4, output=tmp_path / "split", **dict(kwargs, seed=4))


def test_failing_candidates_are_recorded_and_the_search_goes_on(tmp_path):
    calls = []

    def flaky(spec, number):
        calls.append(number)
        if len(calls) == 2:
            raise FloatingPointError("loss is NaN")
        return fake_accuracy(spec, number)

    result = search_architectures(
        strategy="random",
        n_trials=3,
        resolution=32,
        evaluate=flaky,
        storage=optuna.storages.InMemoryStorage(),
        output=tmp_path,
        progress=False,
        plot=False,
    )
    states = [t["state"] for t in result.trials]
    assert states.count("COMPLETE") == 2 and states.count("PRUNED") == 1
    assert "loss is NaN" in next(t for t in result.trials if t["state"] == "PRUNED")["error"]
    assert all(math.isfinite(t["reward"]) for t in result.trials if t["state"] == "COMPLETE")


def test_measured_latency_can_replace_multiply_adds(tmp_path):
    def with_classes(spec, number):
        return dict(fake_accuracy(spec, number), num_classes=10)

    result = search_architectures(
        strategy="random",
        n_trials=2,
        resolution=32,
        evaluate=with_classes,
        objective=Objective(metric="latency", target=5.0, resolution=32),
        storage=optuna.storages.InMemoryStorage(),
        output=tmp_path,
        progress=False,
        plot=False,
    )
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(done) == 2 and result.to_dict()["target_latency_ms"] == 5.0
    for t in done:
        assert t["latency_ms"] > 0
        assert t["reward"] == pytest.approx(t["accuracy"] * (t["latency_ms"] / 5.0) ** -0.07, rel=1e-12)
        spec = B0.with_(blocks=parse_blocks(t["blocks"]), resolution=32)
        assert t["macs"] == profile(spec, num_classes=10).macs


def _search_worker(barrier, db, output):
    def slow(spec, number):
        time.sleep(0.3)  # long enough for the workers to overlap
        return fake_accuracy(spec, number)

    barrier.wait()
    try:
        search_architectures(
            strategy="tpe", n_trials=3, resolution=32, evaluate=slow, storage=str(db), study_name="shared",
            output=output, progress=False, plot=False,
        )  # fmt: skip
    except BaseException as err:  # noqa: BLE001 - reported through the exit status
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        os._exit(1)
    os._exit(0)


def test_workers_starting_together_never_evaluate_more_than_asked(tmp_path):
    # Four processes on one new SQLite study asking for 3 architectures: each worker's "is another
    # trial needed?" and its start of that trial are one step, so no worker starts a surplus trial
    # (checked apart, they all saw "0 of 3" at once and the study ended with 4 or more).
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    db = tmp_path / "shared.db"
    workers = [context.Process(target=_search_worker, args=(barrier, db, tmp_path / f"w{i}")) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # they shared the work
