"""NAS with several seeds per architecture: each seed's accuracy kept, the reward of the mean."""

import csv

import optuna
import pytest

from effnet.errors import UserError
from effnet.nas import search_architectures
from effnet.search.stats import estimate


def noisy_accuracy(spec, number, seed=None):
    """Deterministic in (architecture, seed)."""
    k5 = sum(b.kernel == 5 for b in spec.blocks) / len(spec.blocks)
    return {"accuracy": round(0.5 + 0.3 * k5 + 0.01 * (seed or 0), 6)}


def test_every_seed_is_kept_and_the_reward_is_that_of_the_mean(tmp_path):
    kwargs = dict(strategy="random", resolution=32, evaluate=noisy_accuracy, progress=False, plot=True, seed=4)
    result = search_architectures(n_trials=3, output=tmp_path, seeds=3, **kwargs)
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(done) == 3
    for t in done:
        assert t["seeds"] == 3 and len(t["accuracies"]) == 3
        assert [round(a - t["accuracies"][0], 6) for a in t["accuracies"]] == [0, 0.01, 0.02]  # seeds 4, 5, 6
        assert t["accuracy"] == pytest.approx(sum(t["accuracies"]) / 3)
        assert t["accuracy_ci95"] == pytest.approx(estimate(t["accuracies"]).ci95)
        target = result.objective.effective_target
        assert t["reward"] == pytest.approx(t["accuracy"] * (t["macs"] / target) ** result.objective.exponent)
    with open(tmp_path / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["seeds"] == "3" and float(rows[0]["accuracy_ci95"]) > 0
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    # the strategy learned from means over three seeds: another count is another study
    with pytest.raises(UserError, match="other settings.*seeds"):
        search_architectures(n_trials=4, output=tmp_path, seeds=2, **kwargs)


def test_one_seed_calls_a_two_argument_evaluator_as_before(tmp_path):
    result = search_architectures(
        strategy="random",
        n_trials=2,
        resolution=32,
        evaluate=lambda spec, number: {"accuracy": 0.5},
        storage=optuna.storages.InMemoryStorage(),
        output=tmp_path,
        progress=False,
        plot=False,
    )
    assert all(t["accuracy"] == 0.5 and "accuracies" not in t for t in result.trials)
