"""The joint law over (d, w, r) and the (α, β, γ) it chooses at a target φ, on synthetic studies written
from known laws with noise in the study's CSV format."""

import json
import math

import numpy as np
import pytest

from effnet.errors import UserError
from effnet.search import joint
from effnet.search.grid import constraint, scaling_grid
from effnet.search.laws import read_study
from effnet.search.study import PAPER_DEPTHS, PAPER_RESOLUTIONS, PAPER_WIDTHS, write_csv

PHI = 3.0


def additive(d, w, r):
    """Each dimension saturates on its own: the best split at φ = 3 is balanced (interior); 60% at the baseline."""
    return 0.1 + 0.06 * d**-0.8 + 0.12 * w**-1.2 + 0.12 * r**-1.5


def multiplicative(d, w, r):
    """One power law of the three: its best split is a corner (resolution: c/2 > a, b/2)."""
    return 0.1 + 0.3 * d**-0.3 * w**-0.4 * r**-0.8


def curves(law, *, seeds=5, noise=0.005, rng=0, widths=5, depths=5, resolutions=6, phis=5):
    """A study's four curves (the paper's sweeps, the baseline trained once and starting each) with
    every seed's accuracy drawn around 1 − law(d, w, r)."""
    rng = np.random.default_rng(rng)
    points = {
        "width": [(1.0, w, 1.0) for w in PAPER_WIDTHS[:widths]],
        "depth": [(d, 1.0, 1.0) for d in PAPER_DEPTHS[:depths]],
        "resolution": [(1.0, 1.0, r) for r in PAPER_RESOLUTIONS[:resolutions]],
        "compound": [(1.2**p, 1.1**p, 1.15**p) for p in range(phis)],
    }
    base = list(1 - law(1, 1, 1) + rng.normal(0, noise, seeds))
    values = {"width": PAPER_WIDTHS, "depth": PAPER_DEPTHS, "resolution": PAPER_RESOLUTIONS, "compound": range(phis)}
    out = {}
    for family, triples in points.items():
        rows = []
        for value, (d, w, r) in zip(values[family], triples):
            accuracies = base if (d, w, r) == (1, 1, 1) else list(1 - law(d, w, r) + rng.normal(0, noise, seeds))
            rows.append(
                {"value": value, "depth": d, "width": w, "resolution_multiplier": r, "accuracies": accuracies,
                 "accuracy": float(np.mean(accuracies)), "seeds": seeds, "num_classes": 10, "state": "COMPLETE",
                 "macs": round(1e6 * d * w**2 * r**2)}
            )  # fmt: skip
        out[family] = [row for row in rows if row["accuracies"]]
    return out


def study(tmp_path, law, **kwargs):
    """The rows of a synthetic study as ``read_study`` reads them back from its CSV."""
    return read_study(write_csv(curves(law, **kwargs), tmp_path / "scaling_study.csv"))


def true_choice(law, phi=PHI):
    return joint.best_on_surface(lambda logs: law(*np.exp(logs).T), phi, 2.0)


def inside(bounds, value, slack=1e-3):
    return bounds.low - slack <= value <= bounds.high + slack


def test_additive_study_chooses_the_generating_optimum_within_its_interval(tmp_path):
    rows = study(tmp_path, additive)
    fit = joint.fit_joint(rows)
    assert fit.form == "additive" and fit.points == 18  # the baseline, listed in each curve, counted once
    held = {f.name: f.heldout_rmse for f in fit.forms}
    assert held["additive"] < held["multiplicative"] / 2  # picks the generating form by a wide margin
    assert "additive law" in fit.comparison and "multiplicative" in fit.comparison
    assert fit.params["e_inf"] == pytest.approx(0.1, abs=0.03)

    choice = joint.choose_at_phi(rows, PHI, resamples=60, grid_choice=(1.4, 1.1, 1.1))
    truth = true_choice(additive)
    assert 1.03 < truth[0] < 1.1 and 1.12 < truth[1] < 1.2 and 1.15 < truth[2] < 1.22  # interior: balanced
    for bounds, value in zip((choice.alpha, choice.beta, choice.gamma), truth, strict=True):
        assert inside(bounds, value), (bounds, value)
        assert bounds.high - bounds.low < 0.12  # an interval that says something
    a, b, g = choice.alpha.value, choice.beta.value, choice.gamma.value
    assert constraint(a, b, g) == pytest.approx(2.0, rel=1e-9)  # exactly on the surface
    assert choice.multipliers["depth"] == pytest.approx(a**PHI)

    true_accuracy = 1 - additive(*(np.array(truth) ** PHI))
    assert choice.predicted.low <= true_accuracy <= choice.predicted.high
    true_gain = true_accuracy - (1 - additive(*(np.array(joint.PAPER) ** PHI)))
    assert true_gain > 0.008
    assert choice.paper.gain.low <= true_gain <= choice.paper.gain.high
    assert choice.paper.verdict == "ahead" and choice.grid is not None and choice.grid.verdict == "ahead"
    assert choice.beyond < joint.FAR
    assert "the choice is ahead by" in choice.summary and "the grid's φ = 1 choice" in choice.summary

    again = joint.choose_at_phi(rows, PHI, resamples=60, grid_choice=(1.4, 1.1, 1.1))
    assert again.to_dict() == choice.to_dict()  # deterministic: a fixed generator
    data = choice.to_dict()
    assert set(data["alpha"]) == {"value", "low", "high"} and set(data["predicted"]) == {"predicted", "low", "high"}


def test_multiplicative_study_chooses_its_corner(tmp_path):
    rows = study(tmp_path, multiplicative)
    fit = joint.fit_joint(rows)
    held = {f.name: f.heldout_rmse for f in fit.forms}
    assert fit.form == "multiplicative" and held["multiplicative"] < held["additive"] / 2
    truth = true_choice(multiplicative)
    assert truth == pytest.approx((1.0, 1.0, math.sqrt(2.0)), abs=1e-6)  # all the cost in resolution
    choice = joint.choose_at_phi(rows, PHI, resamples=40)
    for bounds, value in zip((choice.alpha, choice.beta, choice.gamma), truth, strict=True):
        assert inside(bounds, value)
    assert choice.grid is None and choice.paper.verdict == "ahead"


def test_shrinking_below_the_baseline_works(tmp_path):
    # φ < 0 halves the ideal cost; the choice keeps what costs least accuracy (the true law's own choice).
    choice = joint.choose_at_phi(study(tmp_path, additive), -1.0, resamples=10)
    m = choice.multipliers
    assert m["depth"] * m["width"] ** 2 * m["resolution"] ** 2 == pytest.approx(0.5)
    for bounds, value in zip((choice.alpha, choice.beta, choice.gamma), true_choice(additive, -1.0), strict=True):
        assert inside(bounds, value, slack=0.01)
    assert choice.predicted.predicted < 1 - additive(1, 1, 1)


def test_a_form_the_points_cannot_identify_is_dropped_with_its_reason(tmp_path):
    rows = study(tmp_path, multiplicative, resolutions=2)  # resolution takes 1 and 1.3 only (and compound's)
    rows = [r for r in rows if r["family"] != "compound"]
    fit = joint.fit_joint(rows)
    dropped = {f.name: f.dropped for f in fit.forms}
    assert fit.form == "multiplicative" and dropped["multiplicative"] is None
    assert dropped["additive"] == "resolution takes 2 distinct value(s); its k and exponent need 3"
    assert "additive not fitted: resolution takes 2" in fit.comparison


def test_too_few_points_is_one_line_naming_rows(tmp_path):
    rows = [r for r in study(tmp_path, additive) if r["family"] == "width"]
    with pytest.raises(UserError, match=r"^rows: no form of the joint law can be fitted to 5 point") as err:
        joint.fit_joint(rows)
    assert err.value.field == "rows" and "\n" not in str(err.value)
    assert "multiplicative: needs at least 6 distinct points" in str(err.value)
    assert "additive: needs at least 8 distinct points (7 parameters, one held out), has 5" in str(err.value)
    rows = [r for r in study(tmp_path, additive) if r["family"] in ("width", "depth")]  # 9 points, r = 1
    with pytest.raises(UserError, match=r"^rows: no form of the joint law can be fitted to 9 point") as err:
        joint.fit_joint(rows)
    assert "multiplicative: the points do not vary depth, width and resolution independently" in str(err.value)
    assert "additive: resolution takes 1 distinct value(s)" in str(err.value)


def test_grid_points_alone_are_refused_as_not_identifiable():
    # A grid search's rows: every point on α·β²·γ² ≈ 2, their cost within ±5%: how error falls with cost
    # cannot be told, so no law predicts another φ (search-scaling --predict-phi prints this one line).
    rng = np.random.default_rng(1)
    rows = [
        {"alpha": a, "beta": b, "gamma": g, "accuracies": list(1 - additive(a, b, g) + rng.normal(0, 0.005, 3)),
         "state": "COMPLETE", "num_classes": 10}
        for a, b, g in scaling_grid()
    ]  # fmt: skip
    with pytest.raises(UserError, match=r"^rows: the points span ×1\.1 of ideal cost .* not identifiable") as err:
        joint.choose_at_phi(rows, PHI, resamples=5)
    assert err.value.field == "rows"


@pytest.mark.parametrize(
    ("change", "field", "match"),
    [
        (lambda rows: rows[3].update(accuracies=[0.5, math.nan, 0.5, 0.5, 0.5]), "accuracies", "has accuracy nan"),
        (lambda rows: [r.update(accuracies=r["accuracies"][:1]) for r in rows], "accuracies", "no spread"),
        (lambda rows: [r.update(accuracies=[0.1, 0.12, 0.11]) for r in rows], "accuracies", "learning threshold"),
    ],
)
def test_bad_accuracies_are_one_line_naming_accuracies(tmp_path, change, field, match):
    rows = study(tmp_path, additive)
    change(rows)
    with pytest.raises(UserError, match=match) as err:
        joint.fit_joint(rows)
    assert err.value.field == field and "\n" not in str(err.value)


def test_unfinished_and_unlearned_points_are_left_out(tmp_path):
    rows = study(tmp_path, additive)
    rows[2].update(state="FAIL", accuracies=[math.nan] * 5)
    rows[8].update(accuracies=[0.11, 0.09, 0.1, 0.12, 0.1])  # at chance (10 classes): a failed training
    fit = joint.fit_joint(rows)
    assert fit.skipped == 1 and fit.not_learned == 1 and fit.points == 16 and fit.form == "additive"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"phi": 0.0}, "phi"), ({"phi": 17.0}, "phi"), ({"phi": math.nan}, "phi"), ({"target": 1.0}, "target")],
)
def test_bad_phi_and_target_are_refused(tmp_path, kwargs, field):
    rows = study(tmp_path, additive)
    with pytest.raises(UserError) as err:
        joint.choose_at_phi(rows, **{"phi": PHI, **kwargs})
    assert err.value.field == field


# -- search-scaling --predict-phi -----------------------------------------------------------------
TINY = ["--blocks", "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25", "--resolution", "16"]


@pytest.mark.parametrize(("phi", "message"), [("17", "must be ≤ 16"), ("0", "is the baseline itself")])
def test_cli_predict_phi_out_of_bounds_is_refused_before_training(cli, tmp_path, phi, message):
    code, out, err = cli("search-scaling", *TINY, "--predict-phi", phi, "--output", str(tmp_path / "run"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--predict-phi" in err and message in err
    assert not (tmp_path / "run").exists()  # nothing trained, no study opened


@pytest.mark.slow
def test_cli_predict_phi_on_a_grid_alone_says_why_in_one_line(cli, tmp_path):
    args = ["search-scaling", *TINY, "--epochs", "1", "--batch-size", "32", "--seeds", "2", "--max-points", "2"]
    args += ["--output", str(tmp_path), "--predict-phi", "2"]
    code, out, _ = cli(*args, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["predict_phi"]["phi"] == 2.0
    assert data["predict_phi"]["error"].startswith("rows: the points span ×1.")
    assert "not identifiable" in data["predict_phi"]["error"] and data["choice"]["verdict"]
    code, out, _ = cli(*args)  # resumed: the same points, the human report
    assert code == 0 and "verdict: " in out
    lines = [line for line in out.splitlines() if line.startswith("at φ = 2: no joint law from this grid alone")]
    assert len(lines) == 1 and "not identifiable" in lines[0]


def test_accuracy_that_does_not_grow_with_the_network_has_no_law(tmp_path):
    # The CIFAR-10 regime of benchmarks/SCALING.md: every point that learns at the same accuracy.
    rows = study(tmp_path, lambda d, w, r: 0.4 + 0 * d, noise=1e-5)
    with pytest.raises(UserError, match=r"^rows: no form of the joint law can be fitted to 18 point") as err:
        joint.fit_joint(rows)
    assert str(err.value).count("its error does not fall as the network grows") == 2
