"""``effnet explain`` end to end, and ``effnet scale --phi`` below zero."""

import json

import pytest


def test_explain_b4_json(cli):
    code, out, _ = cli("explain", "efficientnet_b4", "--json")
    data = json.loads(out)
    assert code == 0 and data["base"] == "efficientnet_b0" and data["official_table"] is True
    assert (data["width"], data["depth"], data["resolution"], data["base_resolution"]) == (1.4, 1.8, 380, 224)
    assert data["phi"] == {"depth": pytest.approx(3.2239, abs=1e-4), "width": pytest.approx(3.5303, abs=1e-4),
                           "resolution": pytest.approx(3.7816, abs=1e-4)}  # fmt: skip
    assert data["one_phi"] is False and data["ideal_macs_ratio"] == pytest.approx(10.153, abs=1e-3)
    assert data["macs"] == 4_393_771_024 and data["base_macs"] == 385_814_752
    assert data["real_macs_ratio"] == pytest.approx(4_393_771_024 / 385_814_752, abs=1e-4)
    stage2 = [r for r in data["rounding"] if r["part"] == "stage 2"]
    assert [(r["asked"], r["got"]) for r in stage2] == [(33.6, 32), (3.6, 4)]


def test_explain_v2_and_text(cli):
    code, out, _ = cli("explain", "efficientnetv2_b2", "--json")
    data = json.loads(out)
    assert code == 0 and data["base"] == "efficientnetv2_base" and (data["width"], data["depth"]) == (1.1, 1.2)
    code, out, _ = cli("explain", "b4")
    assert code == 0 and "hand-written coefficient table" in out and "φ 3.22 (depth), 3.53 (width), 3.78" in out
    assert "stage 6  repeats" in out and "not one φ" in out


def test_explain_blocks_and_description(cli, tmp_path):
    code, out, _ = cli("info", "b2", "--json")
    blocks = ",".join(json.loads(out)["blocks"])
    code, out, _ = cli("explain", "--blocks", blocks, "--image-size", "260", "--json")
    data = json.loads(out)
    assert code == 0 and data["multipliers_from"] == "structure" and data["width"] == 1.1
    # B0's repeats come out the same at depth 1.1 and 1.2: the range says so, the simplest is shown
    assert data["depth"] == 1.1 and data["depth_range"] == [1.0, 1.25]
    path = tmp_path / "small.json"
    code, out, _ = cli("scale", "--phi", "-1", "--save", str(path), "--json")
    small = json.loads(out)
    assert code == 0 and small["resolution"] == 196 and small["macs"] < small["base_macs"]
    code, out, _ = cli("explain", "--description", str(path), "--json")
    data = json.loads(out)
    assert code == 0 and data["phi"]["depth"] == pytest.approx(-1.0) and data["one_phi"] is True


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["explain"], "name a model"),
        (["explain", "resnet50", "--base", "b0"], "--base"),
        (["explain", "b4", "--blocks", "r1_k3_s11_e1_i32_o16"], "not both"),
        (["explain", "b4", "--alpha", "0"], "--alpha"),
        (["scale", "--phi", "-17"], "--phi"),
    ],
)
def test_explain_mistakes_one_line(cli, argv, needle):
    code, _, err = cli(*argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
