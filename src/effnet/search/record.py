"""One trial as the grid search, the scaling study and NAS report it: one schema, read in one place;
and a point trained with several seeds as one row of means and intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from effnet.results import Result
from effnet.search.stats import Estimate, estimate


@dataclass(frozen=True)
class TrialRecord(Result):
    """What a trial did: its number and state (``MISSING`` for a point with no trial yet), the
    queue point it trained (None in NAS), validation accuracy (of a completed trial), cost, time,
    the error that failed it, who trained it, and the extras each kind of search records."""

    number: int | None
    state: str
    point: str | None = None
    accuracy: float | None = None
    macs: int | None = None
    params: int | None = None
    seconds: float | None = None
    error: str | None = None
    worker: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, trial: FrozenTrial | None, *, always: Sequence[str] = (), present: Sequence[str] = ()) -> TrialRecord:
        """The record of ``trial`` (None: a point not queued yet). Extras: the user attributes named
        in ``always`` (None when absent) and those in ``present`` that the trial has; ``retry_of`` is
        the trial this one runs again, ``accuracy_at_prune`` the last accuracy of a pruned trial."""
        if trial is None:
            return cls(number=None, state="MISSING", extras=dict.fromkeys(always))
        attrs = dict(trial.user_attrs)
        if "failed_trial" in trial.system_attrs:  # queued again by the stale-trial callback
            attrs["retry_of"] = trial.system_attrs["failed_trial"]
        extras = {name: attrs.get(name) for name in always}
        extras.update({name: attrs[name] for name in present if name in attrs})
        if trial.state == TrialState.PRUNED and trial.value is not None:
            extras["accuracy_at_prune"] = trial.value
        return cls(
            number=trial.number,
            state=trial.state.name,
            point=attrs.get("point"),
            accuracy=attrs.get("accuracy") if trial.state == TrialState.COMPLETE else None,
            macs=attrs.get("macs"),
            params=attrs.get("params"),
            seconds=attrs.get("seconds"),
            error=attrs.get("error"),
            worker=attrs.get("worker"),
            extras=extras,
        )

    def row(self, lead: Mapping[str, Any] | None = None, *, number: str | None = "number") -> dict[str, Any]:
        """The record as one table or JSON row: ``lead`` first (e.g. the point's parameters), the
        trial's number under the key ``number`` (None: left out), the common fields, the extras, and
        the error and worker where known."""
        row = dict(lead or {})
        if number is not None:
            row[number] = self.number
        row.update(state=self.state, accuracy=self.accuracy, macs=self.macs, params=self.params, seconds=self.seconds)
        row.update(self.extras)
        row.update({k: v for k, v in (("error", self.error), ("worker", self.worker)) if v is not None})
        return row


def point_row(
    records: Sequence[TrialRecord], lead: Mapping[str, Any] | None = None, *, number: str | None = "number"
) -> dict[str, Any]:
    """A point trained with several seeds (one record per seed, in seed order) as one row: the first
    seed's row (:meth:`TrialRecord.row`), its state COMPLETE only when every seed's is (else the first
    other state), ``accuracy`` the mean over the seeds with ``accuracy_std`` and ``accuracy_ci95`` (the
    half-width of the 95% t-interval; None with one seed: unknown), each seed's accuracy, and the mean
    seconds. With ``number``, ``<number>s`` lists every seed's trial."""
    first = next((r for r in records if r.state == "COMPLETE"), records[0])
    row = first.row(lead, number=number)
    if number is not None:
        row[number] = records[0].number
    state = next((r.state for r in records if r.state != "COMPLETE"), "COMPLETE")
    spread = estimate(r.accuracy for r in records if r.accuracy is not None) if state == "COMPLETE" else None
    row.update(
        state=state,
        accuracy=None if spread is None else spread.mean,
        accuracy_std=None if spread is None else spread.std,
        accuracy_ci95=None if spread is None else spread.ci95,
        seeds=len(records),
        accuracies=[r.accuracy for r in records],
    )
    seconds = [r.seconds for r in records if r.seconds is not None]
    row["seconds"] = round(sum(seconds) / len(seconds), 3) if seconds else None
    trained = [r.extras["train_seconds"] for r in records if r.extras.get("train_seconds") is not None]
    if trained:
        row["train_seconds"] = round(sum(trained) / len(trained), 3)
    if number is not None:
        row[f"{number}s"] = [r.number for r in records]
    errors = [r.error for r in records if r.error]
    if errors and "error" not in row:
        row["error"] = errors[0]
    return row


def row_estimate(row: Mapping[str, Any]) -> Estimate | None:
    """The accuracy of a row as an :class:`~effnet.search.stats.Estimate` over its seeds (a row without
    per-seed accuracies counts as one seed); None while it has no accuracy."""
    if row.get("accuracy") is None:
        return None
    values = [a for a in row.get("accuracies") or () if a is not None]
    return estimate(values) if values else Estimate(mean=float(row["accuracy"]), n=1)
