"""Budget planning: the largest real φ under a multiply-adds, parameter or latency budget."""

import json

import pytest

from effnet import get_description, profile, scale_compound
from effnet.errors import UserError
from effnet.search.plan import PRECISION, largest_phi


def test_plan_macs_2e9_is_the_largest_phi_under_budget(cli):
    code, out, err = cli("plan", "--macs", "2e9", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert {"phi", "depth", "width", "resolution", "params", "macs"} <= set(record)
    b0 = get_description("b0")
    phi = record["phi"]
    at = profile(scale_compound(b0, phi))
    assert at.macs == record["macs"] <= 2e9 and at.params == record["params"]
    assert profile(scale_compound(b0, phi + 2 * PRECISION)).macs > 2e9  # φ + ε is over the budget
    assert 2.0 < phi < 2.5 and record["resolution"] == scale_compound(b0, phi).resolution
    assert record["depth"] == pytest.approx(1.2**phi) and record["width"] == pytest.approx(1.1**phi)


def test_plan_params_and_other_coefficients():
    from effnet.search.plan import plan

    record = plan(get_description("b0"), params=7e6, alpha=1.1, beta=1.2, gamma=1.1)
    phi = record.phi
    b0 = get_description("b0")
    assert profile(scale_compound(b0, phi, 1.1, 1.2, 1.1)).params <= 7e6
    assert profile(scale_compound(b0, phi + 2 * PRECISION, 1.1, 1.2, 1.1)).params > 7e6


def test_largest_phi_handles_steps_and_a_dip():
    # A step function that rises at φ = 1, dips back under the budget on [1.5, 1.75) and rises for good at 2.3.
    def cost(phi):
        if phi < 1.0:
            return 1.0
        if 1.5 <= phi < 1.75:
            return 1.9
        return 2.1 if phi < 2.3 else 5.0

    assert largest_phi(cost, 2.0) == pytest.approx(1.75, abs=PRECISION)
    assert largest_phi(lambda phi: 1.0 + phi, 10.0) == pytest.approx(9.0, abs=PRECISION)
    with pytest.raises(UserError, match=r"smallest scale-down of the baseline, φ = -16 at 3, is over the budget 2"):
        largest_phi(lambda phi: 3.0, 2.0)


def test_largest_phi_below_the_baseline():
    """A budget under the baseline's cost: the largest φ < 0 under it (scanned down, then bisected); a φ whose
    model cannot be built (cost inf) ends the scan."""
    assert largest_phi(lambda phi: 10.0 + phi, 2.0) == pytest.approx(-8.0, abs=PRECISION)
    with pytest.raises(UserError, match=r"φ = -4 at 6, is over the budget 2 \(φ goes down to -4\)"):
        largest_phi(lambda phi: 10.0 + phi, 2.0, phi_min=-4.0)
    steps = lambda phi: 5.0 if phi > -1.3 else 1.0  # noqa: E731 - a step down between -1.5 and -1.25
    assert largest_phi(steps, 2.0) == pytest.approx(-1.3, abs=PRECISION)
    with pytest.raises(UserError, match=r"φ = -2 at 5, is over the budget 2 \(a smaller φ cannot be built\)"):
        largest_phi(lambda phi: 5.0 if phi > -2.1 else float("inf"), 2.0)


def test_plan_below_the_baseline_scales_down(cli):
    b0 = get_description("b0")
    code, out, err = cli("plan", "--macs", "1e8", "--json")
    assert code == 0, err
    record = json.loads(out)
    phi = record["phi"]
    assert (
        -3.5 < phi < -2.5 and record["depth"] == pytest.approx(1.2**phi) and record["width"] == pytest.approx(1.1**phi)
    )
    at = profile(scale_compound(b0, phi))
    assert at.macs == record["macs"] <= 1e8 < profile(b0).macs and record["resolution"] == at.resolution < 224
    assert profile(scale_compound(b0, phi + 2 * PRECISION)).macs > 1e8  # φ + ε is over the budget
    code, _, err = cli("plan", "--params", "1e5")  # below every buildable scale-down of B0
    assert code == 2 and err.count("\n") == 1 and "smallest scale-down of the baseline" in err


def test_plan_latency_measured_here(cli):
    """The budget is set from the baseline's latency measured here, just before (1.5 ms on the 2-core
    AMD EPYC VM at load 4, 10 ms was the fixed budget once): a loaded machine cannot push the baseline
    over it (tests/README.md)."""
    from effnet.models.profile import measure_latency_ms
    from effnet.zoo import description_from_blocks

    tiny = "r1_k3_s11_e1_i32_o16,r1_k3_s22_e4_i16_o24"
    baseline = measure_latency_ms(description_from_blocks(tiny, resolution=32), repeats=3)
    budget = max(10.0, 10 * baseline)
    code, out, err = cli(
        "plan", "--blocks", tiny, "--image-size", "32", "--latency-ms", f"{budget:.3f}", "--repeats", "3", "--json"
    )
    assert code == 0, err
    record = json.loads(out)
    assert 0 < record["latency_ms"] <= budget and record["budget"]["metric"] == "latency_ms"


def test_plan_user_mistakes(cli):
    code, _, err = cli("plan")
    assert code == 2 and "one of the arguments" in err
    code, _, err = cli("plan", "--macs", "2e9", "--params", "5M")
    assert code == 2 and "not allowed with" in err
    code, _, err = cli("plan", "--macs", "1e5")  # B0 scaled down as far as it builds (φ ≈ -14) is 0.83M
    assert code == 2 and err.count("\n") == 1 and "over the budget" in err


# ---------------------------------------------------------------------------------- bounds (issue 41)
TINY = "r1_k3_s11_e1_i32_o16,r1_k3_s22_e4_i16_o24"


def _tiny():
    from effnet.zoo import description_from_blocks

    return description_from_blocks(TINY, resolution=32)


def test_a_budget_beyond_the_largest_model_is_answered_at_once():
    from effnet.search.plan import PHI_MAX, plan

    for budget in ({"macs": 1e308}, {"params": 1e308}):
        record = plan(get_description("efficientnet_b0"), **budget)
        assert record.capped and record.phi == PHI_MAX and record.evaluations == 2 and record.next is None


def test_plan_macs_1e308_json_ends_quickly_under_the_address_space_limit():
    from bounded import effnet_cli

    code, out, err = effnet_cli("plan", "--base", "efficientnet_b0", "--macs", "1e308", "--json", timeout=90)
    assert code == 0, err
    assert json.loads(out)["capped"] is True


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--latency-ms", "1e9"], "--latency-ms must be ≤ 60000"),
        (["--latency-ms", "5", "--repeats", "100000000"], "--repeats must be a whole number ≤ 1000"),
        (["--latency-ms", "5", "--batch-size", "100000"], "--batch-size 100,000: efficientnet_b0"),
        (["--macs", "2e9", "--num-classes", "100000000"], "--num-classes must be a whole number ≤ 1000000"),
    ],
)
def test_plan_bounds_are_one_line_at_once(flags, needle):
    from bounded import effnet_cli

    code, out, err = effnet_cli("plan", "--base", "efficientnet_b0", *flags, timeout=60)
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err, err


def test_plan_stops_measuring_before_its_time_cap(monkeypatch):
    import importlib

    planning = importlib.import_module("effnet.search.plan")  # the package exports the function as plan
    monkeypatch.setattr(planning, "MAX_MEASURE_SECONDS", 0.0)
    with pytest.raises(UserError, match=r"latency_ms 60000: measuring φ = 0\.25 would take the search past 0 s") as e:
        planning.plan(_tiny(), latency_ms=60_000, repeats=1)
    assert e.value.field == "latency_ms"


def test_plan_api_types_are_named():
    from effnet.search.plan import plan

    cases = [
        ({"latency_ms": 5, "repeats": 0}, "repeats"),
        ({"latency_ms": 5, "batch_size": 1.5}, "batch_size"),
        ({"macs": "2e9"}, "macs"),
        ({"macs": float("nan")}, "macs"),
        ({"macs": 2e9, "num_classes": True}, "num_classes"),
    ]
    for kwargs, field in cases:
        with pytest.raises(UserError) as caught:
            plan(_tiny(), **kwargs)
        assert caught.value.field == field, kwargs
    with pytest.raises(UserError, match="base must be a NetworkSpec"):
        plan("efficientnet_b0", macs=2e9)


def test_plan_shows_a_progress_bar(capsys):
    from effnet.search.plan import plan

    plan(_tiny(), macs=2 * profile(_tiny()).macs, progress=True)
    assert "plan" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- activations (issue 39)
def test_plan_activations_is_the_largest_phi_under_budget(cli):
    code, out, err = cli("plan", "--activations", "20M", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["budget"] == {"metric": "activations", "value": 20e6}
    b0 = get_description("b0")
    phi = record["phi"]
    at = profile(scale_compound(b0, phi))
    assert at.activations == record["activations"] <= 20e6 and at.macs == record["macs"]
    assert profile(scale_compound(b0, phi + 2 * PRECISION)).activations > 20e6  # φ + ε is over the budget
    assert 1.5 < phi < 1.7  # B0's 6.7M activations grow ~3× by φ ≈ 1.58
    tiny = profile(_tiny()).activations
    code, out, err = cli("plan", "--blocks", TINY, "--image-size", "32", "--activations", str(2 * tiny))
    assert code == 0 and f"activations ≤ {2 * tiny:,}" in out and "activations          : " in out, err
    code, _, err = cli("plan", "--activations", "1e4")
    assert code == 2 and err.count("\n") == 1 and "over the budget" in err
    code, _, err = cli("plan", "--activations", "20M", "--macs", "2e9")
    assert code == 2 and "not allowed with" in err
