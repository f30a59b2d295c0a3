"""The search loop: propose an architecture, train it on the proxy, score it, remember everything.

Every evaluated architecture is an Optuna trial in the study's storage (SQLite by default,
PostgreSQL for many workers) with user attributes ``blocks``, ``accuracy``, ``macs``, ``params`` and
``reward``, so an interrupted search resumes with its finished trials kept and several workers can
share one study. Trials run through the worker loop of :mod:`effnet.search.worker`: a trial whose
worker died is run again with the same architecture, at once when the dead worker was on this
machine, after the storage's heartbeat grace period otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from effnet.atomic import atomic_write_text
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.models.profile import measure_latency_ms, profile
from effnet.nas.objective import Objective
from effnet.nas.space import SearchSpace
from effnet.nas.strategies import STRATEGIES, is_multi_objective, make_sampler
from effnet.progress import progress_bar
from effnet.results import Result
from effnet.runs import claim_folder
from effnet.search.proxy import Proxy, baseline_macs, proxy_base, train_proxy
from effnet.search.record import TrialRecord
from effnet.search.stats import estimate
from effnet.search.storage import DEFAULT_HEARTBEAT, open_study, redact_url
from effnet.search.worker import check_settings, start_trial, study_url, work
from effnet.train.logs import TRAIN_MARKERS

#: An evaluator trains one architecture on the proxy: (description at the proxy resolution, trial
#: number) → {"accuracy": fraction, optional "seconds", …}; with several seeds it is called once per
#: seed with the keyword ``seed``.
Evaluator = Callable[..., dict[str, Any]]

#: The proxy every architecture trains on unless told otherwise: one epoch of the search proxy.
NAS_PROXY = Proxy(epochs=1)
#: Consecutive failed evaluations after which the search stops.
MAX_CONSECUTIVE_FAILURES = 3
#: Seconds between looks at the study while other workers finish its last trials.
WAIT_SECONDS = 2.0
#: What a search writes in its output folder besides its study (replaced by ``overwrite``).
OWNED = ("best.json", "trials.csv", "pareto.png", "search.json")


@dataclass
class TrainEvaluator:
    """Train each architecture on the proxy task (:func:`effnet.search.proxy.train_proxy`);
    ``overrides`` go to :func:`effnet.train.train_model` (e.g. ``warmup_epochs``, ``device``);
    ``base_macs`` is the reference's multiply-adds (the ``macs`` budget's yardstick)."""

    proxy: Proxy = NAS_PROXY
    overrides: dict[str, Any] = field(default_factory=dict)
    base_macs: int | None = None

    def __call__(self, spec: NetworkSpec, number: int, seed: int | None = None) -> dict[str, Any]:
        trained = spec.with_(resolution=self.proxy.resolution)
        result = train_proxy(trained, self.proxy, seed=seed, base_macs=self.base_macs, **self.overrides)
        keep = ("accuracy", "top5", "loss", "seconds", "num_classes", "epochs_trained")
        return {k: result[k] for k in keep if k in result}


@dataclass
class SearchResult(Result):
    """What a search found: every trial, the best by reward, and the files written."""

    strategy: str
    study_name: str
    storage: str
    objective: Objective
    space: SearchSpace
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.objective.describe(),
            "strategy": self.strategy,
            "study_name": self.study_name,
            "storage": self.storage,
            "space": self.space.describe(),
            "best": self.best,
            "pareto": [t["number"] for t in pareto_front(self.trials)],
            "trials": self.trials,
            "files": self.files,
        }


#: What a trial of several seeds records besides its (mean) accuracy.
SEED_ATTRS = ("accuracies", "accuracy_ci95", "seeds")


def evaluate_seeds(evaluate: Evaluator, spec: NetworkSpec, number: int, seeds: list[int]) -> dict[str, Any]:
    """Train one architecture once per seed: its result, with several seeds the first seed's result
    with ``accuracy`` the mean, each seed's ``accuracies``, the mean's 95% half-width ``accuracy_ci95``
    and the seconds of all seeds (stops at a seed whose accuracy is not finite)."""
    results = []
    for seed in seeds:
        start = time.perf_counter()
        result = dict(evaluate(spec, number) if len(seeds) == 1 else evaluate(spec, number, seed=seed))
        result.setdefault("seconds", round(time.perf_counter() - start, 3))
        results.append(result)
        if not math.isfinite(float(result["accuracy"])):
            return result
    if len(results) == 1:
        return results[0]
    spread = estimate(r["accuracy"] for r in results)
    assert spread is not None
    return {
        **results[0],
        "accuracy": spread.mean,
        "accuracies": [r["accuracy"] for r in results],
        "accuracy_ci95": spread.ci95,
        "seeds": len(results),
        "seconds": round(sum(r["seconds"] for r in results), 3),
    }


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as reported: number, state, blocks, accuracy (the mean over its seeds), macs, params,
    reward, seconds, and with several seeds each seed's accuracy and the mean's 95% half-width."""
    present = ("latency_ms", "cached_from", "retry_of", "accuracies", "accuracy_ci95", "seeds")
    return TrialRecord.of(trial, always=("blocks", "reward"), present=present).row()


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials no other beats on both accuracy (higher) and multiply-adds (lower)."""
    done = [r for r in records if r["state"] == "COMPLETE" and r.get("accuracy") is not None]
    front = []
    for r in done:
        dominated = any(
            o["accuracy"] >= r["accuracy"]
            and o["macs"] <= r["macs"]
            and (o["accuracy"] > r["accuracy"] or o["macs"] < r["macs"])
            for o in done
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r["macs"])


def search_architectures(
    data: str | None = None,
    *,
    strategy: str = "rl",
    n_trials: int = 20,
    proxy: Proxy | None = None,
    space: SearchSpace | None = None,
    objective: Objective | None = None,
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    output: str | Path = "nas-output",
    evaluate: Evaluator | None = None,
    population: int | None = None,
    sample_size: int | None = None,
    rl_algorithm: str = "reinforce",
    heartbeat: int | None = None,
    train_overrides: dict[str, Any] | None = None,
    progress: bool = True,
    plot: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    **proxy_settings: Any,
) -> SearchResult:
    """Search the space with one strategy until the study holds ``n_trials`` evaluated architectures.

    Each proposal is decoded to a description at the proxy resolution, trained with the same budget
    (``evaluate``, by default :class:`TrainEvaluator` on the proxy), and scored with ``objective``
    (ACC × (MACs/T)^w, T scaled to the proxy resolution). The proxy is ``proxy`` (default
    :data:`NAS_PROXY`) with any of its fields given as keywords (``data``, ``epochs``,
    ``resolution``, ``batch_size``, ``seed``, ``seeds``, ``recipe``, ``max_steps_per_epoch``,
    ``budget``, …); its seed also seeds the strategy. With ``seeds`` > 1 every architecture trains
    once per seed and its reward is that of the mean accuracy (the number of seeds is part of the
    study's settings: the strategy learned from rewards averaged over that many). Writes into
    ``output``: ``best.json`` (the best architecture's description), ``trials.csv``, ``pareto.png``
    and ``search.json``; the study is in ``storage`` (default ``output/study.db``). The output
    folder holds one search (:func:`effnet.runs.claim_folder`): the same study continues,
    another is refused unless ``overwrite``; ``resume`` insists on continuing one.
    """
    if data is not None:
        proxy_settings["data"] = data
    proxy = replace(proxy or NAS_PROXY, **proxy_settings)
    resolution = proxy.resolution
    if strategy not in STRATEGIES:
        raise UserError(f"strategy {strategy!r} is unknown (known: {', '.join(STRATEGIES)})", field="strategy")
    check_whole_number("n_trials", n_trials, 1)
    space = space or SearchSpace()
    objective = objective or Objective(resolution=resolution)
    if objective.resolution != resolution:
        raise UserError(
            f"resolution {resolution} differs from the objective's {objective.resolution}", field="resolution"
        )
    proxy_base(space.reference, proxy)  # the resolution must reach the network's total stride
    if evaluate is None and str(proxy.data) != "digits" and not Path(proxy.data).is_dir():
        raise UserError(f"data {proxy.data} is not a folder (give one with train/ and val/, or 'digits')", field="data")
    if evaluate is None:
        base_macs = baseline_macs(space.reference, proxy) if proxy.budget == "macs" else None
        evaluate = TrainEvaluator(proxy, dict(train_overrides or {}), base_macs)
    out = Path(output)
    study_name = study_name or f"nas-{strategy}"
    stored = (
        "output"
        if storage is None
        else redact_url(str(storage))
        if isinstance(storage, str | Path)
        else type(storage).__name__
    )
    owned = OWNED if storage is not None else (*OWNED, "study.db", "study.db.lock")
    run = {"command": "nas", "study": study_name, "storage": stored}
    with claim_folder(out, run_files=owned, record=run, others=TRAIN_MARKERS, resume=resume, overwrite=overwrite):
        multi = is_multi_objective(strategy)
        study = open_study(
            storage,
            study_name,
            output=out,
            heartbeat=heartbeat or DEFAULT_HEARTBEAT,
            sampler=make_sampler(
                strategy,
                space,
                seed=proxy.seed,
                population=population,
                sample_size=sample_size,
                rl_algorithm=rl_algorithm,
            ),
            directions=["maximize", "minimize"] if multi else None,
        )
        if len(study.directions) != (2 if multi else 1):
            raise UserError(f"study_name {study_name!r} belongs to another strategy; use another", field="study_name")
        check_settings(
            study,
            {
                "kind": "nas",
                "strategy": strategy,
                "space": space.describe(),
                "objective": objective.describe(),
                "proxy": proxy.settings(),
                "seeds": proxy.seeds,
                **({"rl_algorithm": rl_algorithm} if strategy == "rl" else {}),
            },
        )
        distributions = space.distributions()

        def evaluated() -> list[FrozenTrial]:
            return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

        def claim() -> optuna.Trial | None:
            """The next trial (one queued again first); None once the study holds, or is evaluating,
            the architectures asked for."""
            states = [t.state for t in study.get_trials(deepcopy=False)]  # one look: trials finish meanwhile
            done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
            waiting = TrialState.WAITING in states
            if done >= n_trials or (not waiting and done + states.count(TrialState.RUNNING) >= n_trials):
                return None
            return start_trial(study)

        def run_one(trial: optuna.Trial) -> float | tuple[float, float]:
            params = {name: trial.suggest_categorical(name, dist.choices) for name, dist in distributions.items()}
            spec = space.network(params, name=f"{study_name}-{trial.number}").with_(resolution=resolution)
            trial.set_user_attr("blocks", spec.block_strings)
            twin = next(
                (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params == params),
                None,
            )
            if twin is not None:  # the same architecture under the same budget: its result stands
                keys = ("accuracy", "seconds", "latency_ms", "num_classes", *SEED_ATTRS)
                result = {k: twin.user_attrs[k] for k in keys if k in twin.user_attrs}
                trial.set_user_attr("cached_from", twin.number)
            else:
                try:
                    result = evaluate_seeds(evaluate, spec, trial.number, proxy.seed_values)
                except UserError:
                    raise
                except Exception as err:  # a diverging or broken candidate: recorded, and the search goes on
                    trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
                    raise optuna.TrialPruned() from err
            for name in SEED_ATTRS:
                if name in result:
                    trial.set_user_attr(name, result[name])
            accuracy = float(result["accuracy"])
            if not math.isfinite(accuracy):
                trial.set_user_attr("error", "accuracy is not finite")
                raise optuna.TrialPruned()
            # multiply-adds of the model as trained: the proxy resolution and the data's classes
            num_classes = int(result.get("num_classes", 1000))
            counts = profile(spec, num_classes=num_classes)
            cost: float = counts.macs
            if objective.metric == "latency":
                if "latency_ms" not in result:
                    result["latency_ms"] = measure_latency_ms(spec, resolution=resolution, num_classes=num_classes)
                cost = float(result["latency_ms"])
                trial.set_user_attr("latency_ms", cost)
            reward = objective.reward(accuracy, cost)
            trial.set_user_attr("accuracy", accuracy)
            trial.set_user_attr("macs", counts.macs)
            trial.set_user_attr("params", counts.params)
            trial.set_user_attr("num_classes", num_classes)
            trial.set_user_attr("reward", reward)
            trial.set_user_attr("seconds", result.get("seconds"))
            return (accuracy, float(counts.macs)) if multi else reward

        best_reward = max((t.user_attrs.get("reward", -math.inf) for t in evaluated()), default=-math.inf)
        failures = 0
        initial = min(len(evaluated()), n_trials)
        with progress_bar(
            n_trials, desc=f"nas {strategy}", unit="arch", enabled=progress and sys.stderr.isatty(), initial=initial
        ) as bar:

            def say(message: str) -> None:
                bar.write(message, file=sys.stderr)

            def finished(trial: FrozenTrial) -> None:
                nonlocal best_reward, failures
                record = trial_record(trial)
                if record["state"] == "COMPLETE":
                    failures = 0
                    best_reward = max(best_reward, record["reward"])
                    if progress:
                        say(
                            f"trial {record['number']:>3}: acc {record['accuracy']:.4f}  macs {record['macs'] / 1e6:.3g}M  "
                            f"params {record['params'] / 1e6:.3g}M  reward {record['reward']:.4f}  best {best_reward:.4f}"
                            + (f"  (same as trial {record['cached_from']})" if "cached_from" in record else "")
                        )
                else:
                    failures += 1
                    if progress:
                        say(f"trial {record['number']:>3}: {record['state'].lower()} {record.get('error', '')}")
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        raise UserError(
                            f"{failures} architectures in a row failed to train (last: {record.get('error', 'unknown')})"
                        )
                bar.n = min(len(evaluated()), n_trials)
                bar.set_postfix(best=f"{best_reward:.4f}")
                bar.refresh()

            if progress and initial:
                say(
                    f"study {study_name!r}: {initial} of {n_trials} architectures already evaluated, best reward {best_reward:.4f}"
                )
            work(
                study,
                claim,
                run_one,
                more=lambda: len(evaluated()) < n_trials,
                poll=WAIT_SECONDS,
                on_trial=finished,
                say=say,
            )
        return finish_search(study, strategy=strategy, space=space, objective=objective, output=out, plot=plot)


def finish_search(
    study: optuna.Study,
    *,
    strategy: str,
    space: SearchSpace,
    objective: Objective,
    output: Path,
    plot: bool = True,
) -> SearchResult:
    """Collect the study's trials, pick the best by reward and write the result files."""
    trials = [trial_record(t) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    done = [r for r in trials if r["state"] == "COMPLETE" and r.get("reward") is not None]
    files: dict[str, str] = {}
    best = None
    if done:
        best = dict(max(done, key=lambda r: (r["reward"], -r["number"])))
        frozen = study.get_trials(deepcopy=False)
        params = next(t.params for t in frozen if t.number == best["number"])
        spec = space.network(params, name=f"{study.study_name}-best")
        path = output / "best.json"
        spec.save(path)
        files["description"] = str(path)
        at_reference = profile(spec)  # as `effnet info` counts it: reference resolution, 1000 classes
        best.update(
            description=str(path),
            reference_resolution=spec.resolution,
            macs_at_reference_resolution=at_reference.macs,
            params_at_reference_resolution=at_reference.params,
        )
    columns = ["number", "state", "accuracy", "accuracy_ci95", "seeds", "macs", "params", "reward", "seconds", "blocks"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in trials:
        writer.writerow([",".join(r[c]) if c == "blocks" and r[c] else r.get(c) for c in columns])
    files["trials"] = str(atomic_write_text(output / "trials.csv", buffer.getvalue()))
    if plot and done:
        from effnet.plots import plot_pareto

        files["pareto"] = str(
            plot_pareto(
                trials,
                pareto_front(trials),
                best,
                output / "pareto.png",
                target=objective.effective_target if objective.metric == "macs" else None,
                xlabel=f"multiply-adds (M) at {objective.resolution} px",
                title=f"effnet nas — {strategy}, {objective.kind} objective, w={objective.exponent:g}",
            )
        )
    files["search"] = str(output / "search.json")
    result = SearchResult(strategy, study.study_name, study_url(study), objective, space, trials, best, files)
    atomic_write_text(files["search"], json.dumps(result.to_dict(), indent=2) + "\n")
    return result
