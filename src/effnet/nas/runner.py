"""The search loop: propose an architecture, train it on the proxy, score it, remember everything.

Every evaluated architecture is an Optuna trial in the study's storage (SQLite by default,
PostgreSQL for many workers) with user attributes ``blocks``, ``accuracy``, ``macs``, ``params`` and
``reward``, so an interrupted search resumes with its finished trials kept and several workers can
share one study. A trial whose worker died is run again: at once when the dead worker was on this
machine, after the storage's heartbeat grace period otherwise.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.models.profile import measure_latency_ms, profile
from effnet.nas.objective import Objective
from effnet.nas.space import SearchSpace
from effnet.nas.strategies import STRATEGIES, is_multi_objective, make_sampler

#: An evaluator trains one architecture on the proxy: (description at the proxy resolution, trial
#: number) → {"accuracy": fraction, optional "seconds", …}.
Evaluator = Callable[[NetworkSpec, int], dict[str, Any]]

#: Consecutive failed evaluations after which the search stops.
MAX_CONSECUTIVE_FAILURES = 3
#: Seconds between looks at the study while other workers finish its last trials.
WAIT_SECONDS = 2.0


@dataclass
class TrainEvaluator:
    """Train each architecture with :func:`effnet.train.train_model` under one fixed proxy budget."""

    data: str = "digits"
    epochs: int = 1
    resolution: int = 32
    batch_size: int = 64
    seed: int = 0
    recipe: str = "small"
    max_steps_per_epoch: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __call__(self, spec: NetworkSpec, number: int) -> dict[str, Any]:
        from effnet.search.proxy import Proxy, train_proxy

        proxy = Proxy(
            data=self.data,
            resolution=self.resolution,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            recipe=self.recipe,
            max_steps_per_epoch=self.max_steps_per_epoch,
        )
        result = train_proxy(spec.with_(resolution=self.resolution), proxy, **self.overrides)
        keep = ("accuracy", "top5", "loss", "seconds", "num_classes")
        return {k: result[k] for k in keep}


@dataclass
class SearchResult:
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


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as reported: blocks, accuracy, macs, params, reward, state, …"""
    attrs = trial.user_attrs
    record = {
        "number": trial.number,
        "state": trial.state.name,
        "blocks": attrs.get("blocks"),
        "accuracy": attrs.get("accuracy"),
        "macs": attrs.get("macs"),
        "params": attrs.get("params"),
        "reward": attrs.get("reward"),
        "seconds": attrs.get("seconds"),
    }
    for key in ("latency_ms", "cached_from", "retry_of", "error"):
        if key in attrs:
            record[key] = attrs[key]
    if "failed_trial" in trial.system_attrs:
        record["retry_of"] = trial.system_attrs["failed_trial"]
    return record


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker process on this machine is gone."""
    from effnet.search.storage import study_lock

    host = socket.gethostname()
    recovered = []
    with study_lock(study):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(trial.user_attrs.get("worker", ""))
            name, _, pid = worker.rpartition(":")
            if name != host or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            _retry()(study, study._storage.get_trial(trial._trial_id))
            recovered.append(trial.number)
    return recovered


def _run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], Any]) -> None:
    """Evaluate a started trial with heartbeats and record its outcome (as ``Study.optimize`` would)."""
    from effnet.search.storage import Heartbeat

    with Heartbeat(study, trial._trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            value, state = None, TrialState.PRUNED
        except BaseException:  # a user error or an interrupt: recorded as failed, then reported
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            state = TrialState.COMPLETE
    try:
        study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker heard no heartbeat for too long and failed this trial; the architecture is
        # queued again, so this result is dropped rather than counted twice.
        print(
            f"effnet: trial {trial.number} was declared stale by another worker; its result is dropped "
            "(raise --heartbeat?)",
            file=sys.stderr,
        )


def _retry() -> RetryHeartbeatStaleTrialCallback:
    """Queue a stale trial again with the same architecture."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RetryHeartbeatStaleTrialCallback(max_retry=None)


def _check_study(study: optuna.Study, settings: dict[str, Any]) -> None:
    """Record the search settings on a new study; refuse to mix different settings into an old one."""
    old = study.user_attrs.get("nas")
    if old is None:
        study.set_user_attr("nas", settings)
        return
    changed = [key for key in settings if old.get(key) != settings[key]]
    if changed:
        raise UserError(
            f"study {study.study_name!r} was created with other settings ({', '.join(changed)}); "
            "use the same settings to resume it, or another --study-name"
        )


def search_architectures(
    data: str = "digits",
    *,
    strategy: str = "rl",
    n_trials: int = 20,
    epochs: int = 1,
    resolution: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    space: SearchSpace | None = None,
    objective: Objective | None = None,
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    output: str | Path = "nas-output",
    evaluate: Evaluator | None = None,
    recipe: str = "small",
    max_steps_per_epoch: int | None = None,
    population: int | None = None,
    sample_size: int | None = None,
    heartbeat: int | None = None,
    train_overrides: dict[str, Any] | None = None,
    rl_algorithm: str = "reinforce",
    progress: bool = True,
    plot: bool = True,
) -> SearchResult:
    """Search the space with one strategy until the study holds ``n_trials`` evaluated architectures.

    Each proposal is decoded to a description at the proxy ``resolution``, trained with the same
    budget (``evaluate``, by default :class:`TrainEvaluator` on ``data``), and scored with
    ``objective`` (ACC × (MACs/T)^w, T scaled to the proxy resolution). Writes into ``output``:
    ``best.json`` (the best architecture's description), ``trials.csv``, ``pareto.png`` and
    ``search.json``; the study is in ``storage`` (default ``output/study.db``).
    """
    from effnet.search.queue import queue_lock, worker_id
    from effnet.search.storage import DEFAULT_HEARTBEAT, open_storage

    if strategy not in STRATEGIES:
        raise UserError(f"strategy {strategy!r} is unknown (known: {', '.join(STRATEGIES)})")
    for name, value in (("n_trials", n_trials), ("epochs", epochs), ("resolution", resolution)):
        check_whole_number(name, value, 1)
    space = space or SearchSpace()
    objective = objective or Objective(resolution=resolution)
    if objective.resolution != resolution:
        raise UserError(f"the objective's resolution {objective.resolution} differs from the proxy's {resolution}")
    if resolution < space.reference.total_stride:
        raise UserError(
            f"resolution {resolution} is smaller than the network's total stride {space.reference.total_stride}"
        )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    study_name = study_name or f"nas-{strategy}"
    evaluate = evaluate or TrainEvaluator(
        data=data,
        epochs=epochs,
        resolution=resolution,
        batch_size=batch_size,
        seed=seed,
        recipe=recipe,
        max_steps_per_epoch=max_steps_per_epoch,
        overrides=dict(train_overrides or {}),
    )
    if isinstance(evaluate, TrainEvaluator) and str(evaluate.data) != "digits" and not Path(evaluate.data).is_dir():
        raise UserError(f"data folder {evaluate.data} does not exist (give a folder with train/ and val/, or 'digits')")
    if isinstance(storage, BaseStorage):  # e.g. optuna.storages.InMemoryStorage() for one process
        rdb = storage
    else:
        rdb = open_storage(storage, output=out, heartbeat=heartbeat or DEFAULT_HEARTBEAT)
        rdb.failed_trial_callback = _retry()
    multi = is_multi_objective(strategy)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=rdb,
        study_name=study_name,
        sampler=make_sampler(
            strategy, space, seed=seed, population=population, sample_size=sample_size, rl_algorithm=rl_algorithm
        ),
        load_if_exists=True,
        **({"directions": ["maximize", "minimize"]} if multi else {"direction": "maximize"}),
    )
    if len(study.directions) != (2 if multi else 1):
        raise UserError(f"study {study_name!r} belongs to another strategy; use another --study-name")
    _check_study(
        study,
        {
            "strategy": strategy,
            "space": space.describe(),
            "objective": objective.describe(),
            "epochs": epochs,
            "resolution": resolution,
            "data": str(data),
            "seed": seed,
            "max_steps_per_epoch": max_steps_per_epoch,
            **({"rl_algorithm": rl_algorithm} if strategy == "rl" else {}),
        },
    )
    distributions = space.distributions()

    def evaluated() -> list[FrozenTrial]:
        return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def claim() -> optuna.Trial | None:
        """Atomically start the next trial (a re-queued one first); None while the last
        architectures are being evaluated by other workers."""
        with queue_lock(study):
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not waiting and len(evaluated()) + len(running) >= n_trials:
                return None
            with warnings.catch_warnings():  # the heartbeats are ours (see _run_trial)
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
                return study.ask()

    def run_one(trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr("worker", worker_id())
        params = {name: trial.suggest_categorical(name, dist.choices) for name, dist in distributions.items()}
        spec = space.network(params, name=f"{study_name}-{trial.number}").with_(resolution=resolution)
        trial.set_user_attr("blocks", spec.block_strings)
        twin = next(
            (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params == params),
            None,
        )
        start = time.perf_counter()
        if twin is not None:  # the same architecture under the same budget: its result stands
            keys = ("accuracy", "seconds", "latency_ms", "num_classes")
            result = {k: twin.user_attrs[k] for k in keys if k in twin.user_attrs}
            trial.set_user_attr("cached_from", twin.number)
        else:
            try:
                result = dict(evaluate(spec, trial.number))
            except UserError:
                raise
            except Exception as err:  # a diverging or broken candidate: recorded, and the search goes on
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
                raise optuna.TrialPruned() from err
            result.setdefault("seconds", round(time.perf_counter() - start, 3))
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

    from tqdm.auto import tqdm

    bar = tqdm(
        total=n_trials,
        initial=min(len(evaluated()), n_trials),
        desc=f"nas {strategy}",
        unit="arch",
        file=sys.stderr,
        disable=not progress or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    best_reward = max((t.user_attrs.get("reward", -math.inf) for t in evaluated()), default=-math.inf)
    if progress and evaluated():
        tqdm.write(
            f"study {study_name!r}: {len(evaluated())} of {n_trials} architectures already evaluated, best reward "
            f"{best_reward:.4f}",
            file=sys.stderr,
        )
    failures = 0
    try:
        while len(evaluated()) < n_trials:
            for number in recover_orphans(study):
                if progress:
                    tqdm.write(f"trial {number}: its worker died; queued again", file=sys.stderr)
            if isinstance(rdb, RDBStorage) and rdb.heartbeat_interval:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    optuna.storages.fail_stale_trials(study)  # workers elsewhere that stopped beating
            trial = claim()
            if trial is None:
                time.sleep(WAIT_SECONDS)  # other workers are evaluating the last architectures
                continue
            _run_trial(study, trial, run_one)
            last = study._storage.get_trial(trial._trial_id)
            record = trial_record(last)
            if record["state"] == "COMPLETE":
                failures = 0
                best_reward = max(best_reward, record["reward"])
                if progress:
                    tqdm.write(
                        f"trial {record['number']:>3}: acc {record['accuracy']:.4f}  macs {record['macs'] / 1e6:.3g}M  "
                        f"params {record['params'] / 1e6:.3g}M  reward {record['reward']:.4f}  best {best_reward:.4f}"
                        + (f"  (same as trial {record['cached_from']})" if "cached_from" in record else ""),
                        file=sys.stderr,
                    )
            else:
                failures += 1
                if progress:
                    tqdm.write(
                        f"trial {record['number']:>3}: {record['state'].lower()} {record.get('error', '')}",
                        file=sys.stderr,
                    )
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise UserError(
                        f"{failures} architectures in a row failed to train (last: {record.get('error', 'unknown')})"
                    )
            bar.n = min(len(evaluated()), n_trials)
            bar.set_postfix(best=f"{best_reward:.4f}")
            bar.refresh()
    finally:
        bar.close()
    return finish_search(
        study,
        strategy=strategy,
        space=space,
        objective=objective,
        output=out,
        storage_url=rdb.url if isinstance(rdb, RDBStorage) else type(rdb).__name__,
        plot=plot,
    )


def finish_search(
    study: optuna.Study,
    *,
    strategy: str,
    space: SearchSpace,
    objective: Objective,
    output: Path,
    storage_url: str,
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
    csv_path = output / "trials.csv"
    columns = ["number", "state", "accuracy", "macs", "params", "reward", "seconds", "blocks"]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in trials:
            writer.writerow([",".join(r[c]) if c == "blocks" and r[c] else r[c] for c in columns])
    files["trials"] = str(csv_path)
    result = SearchResult(strategy, study.study_name, storage_url, objective, space, trials, best, files)
    if plot and done:
        files["pareto"] = str(draw_pareto(result, output / "pareto.png"))
    files["search"] = str(output / "search.json")
    Path(files["search"]).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def draw_pareto(result: SearchResult, path: Path) -> Path:
    """Accuracy against multiply-adds for every trial, the Pareto front joined, the best ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result.trials if r["state"] == "COMPLETE" and r.get("accuracy") is not None]
    front = pareto_front(result.trials)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["macs"] / 1e6 for r in done], [r["accuracy"] for r in done], s=18, alpha=0.5, label="architectures")
    ax.plot([r["macs"] / 1e6 for r in front], [r["accuracy"] for r in front], "o-", color="C1", label="Pareto front")
    if result.best:
        ax.scatter(
            [result.best["macs"] / 1e6],
            [result.best["accuracy"]],
            s=160,
            facecolors="none",
            edgecolors="C3",
            linewidths=2,
            label="best reward",
        )
    if result.objective.metric == "macs":
        ax.axvline(result.objective.effective_target / 1e6, color="gray", ls="--", lw=1, label="target T")
    ax.set_xlabel(f"multiply-adds (M) at {result.objective.resolution} px")
    ax.set_ylabel("proxy accuracy (top-1)")
    ax.set_title(f"effnet nas — {result.strategy}, {result.objective.kind} objective, w={result.objective.exponent:g}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
