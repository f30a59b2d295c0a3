import json

import pytest


def test_models_json(cli):
    code, out, _ = cli("models", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 15
    b7 = next(r for r in rows if r["name"] == "efficientnet_b7")
    assert b7["params"] == 66_347_960 and b7["resolution"] == 600 and b7["dropout"] == 0.5
    for key in ("name", "params", "macs", "resolution", "width", "depth", "dropout", "blocks"):
        assert key in b7


def test_models_table(cli):
    code, out, _ = cli("models")
    assert code == 0 and "efficientnet_lite4" in out and "13,006,568" in out


def test_info_name_and_blocks(cli):
    code, out, _ = cli("info", "b2", "--json")
    data = json.loads(out)
    assert code == 0 and data["params"] == 9_109_994 and data["width"] == 1.1 and data["depth"] == 1.2
    blocks = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e6_i16_o24_se0.25"
    code, out, _ = cli("info", "--blocks", blocks, "--json")
    data = json.loads(out)
    assert code == 0 and data["blocks"] == blocks.split(",") and data["resolution"] == 224
    code, out, _ = cli("info", "--blocks", blocks, "--width", "2", "--depth", "2", "--resolution", "1.5", "--json")
    data = json.loads(out)
    assert (
        data["blocks"] == ["r2_k3_s11_e1_i64_o32_se0.25", "r4_k3_s22_e6_i32_o48_se0.25"] and data["resolution"] == 336
    )


def test_scale_phi_one(cli):
    code, out, _ = cli("scale", "--phi", "1", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["depth"] == pytest.approx(1.2) and data["width"] == pytest.approx(1.1)
    assert data["ideal_macs_ratio"] == pytest.approx(1.92, abs=0.01)
    assert 1.9 <= data["macs_ratio"] <= 2.3
    assert data["macs"] == pytest.approx(data["macs_ratio"] * 385_814_752, rel=1e-3)


def test_scale_direct_and_save(cli, tmp_path):
    path = tmp_path / "w2.json"
    code, out, _ = cli("scale", "--width", "2", "--save", str(path), "--json")
    data = json.loads(out)
    assert code == 0 and data["width"] == 2.0 and data["resolution"] == 224
    code, out, _ = cli("info", str(path), "--json")
    assert json.loads(out)["macs"] == data["macs"]
    code, out, _ = cli("scale", "--resolution", "448", "--json")
    assert json.loads(out)["resolution"] == 448


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["info", "efficientnet_b42"], "unknown model"),
        (["scale", "--phi", "-16.5"], "--phi"),
        (["scale", "--phi", "nan"], "--phi"),
        (["scale", "--phi", "1", "--alpha", "nan"], "--alpha"),
        (["scale", "--phi", "1", "--alpha", "-1"], "--alpha"),
        (["info", "--blocks", "r1_k3_s11_e1_i32_oo16"], "oo"),
        (["info", "--blocks", "r1_k4_s11_e1_i32_o16"], "kernel"),
        (["info", "--blocks", "r1_k3_s33_e1_i32_o16"], "stride"),
        (["scale"], "--phi"),
        (["info", "missing.json"], "missing.json"),
    ],
)
def test_user_mistakes_one_line_exit_2(cli, argv, needle):
    code, out, err = cli(*argv)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_entry_point_runs():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "effnet", "scale", "--phi", "nan"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["scale", "--phi", "100"], "--phi must be ≤ 16"),
        (["scale", "--phi", "1e6"], "--phi must be ≤ 16"),
        (["scale", "--phi", "10", "--alpha", "3"], "scales depth by"),
        (["scale", "--width", "1000"], "--width must be ≤ 64"),
        (["info", "--blocks", "r1000000000_k3_s11_e1_i32_o16"], "repeats"),
        (["info", "--blocks", "r1_k3_s11_e1_i32_o16", "--image-size", "0"], "--image-size"),
        (["info", "--blocks", "r1_k3_s11_e1_i32_o16,r1_k3_s22_e6_i24_o40"], "stage 2"),
        (["info", "--blocks", "r1_k3_s11_e1_i32_o16", "--resolution", "100000"], "resolution"),
    ],
)
def test_out_of_bounds_is_one_line_exit_2(cli, argv, needle):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_stem_break_in_a_description_file_names_the_stage(cli, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"name": "broken", "blocks": ["r1_k3_s11_e1_i16_o16"], "stem_channels": 32}))
    code, out, err = cli("info", "--description", str(path))
    assert code == 2 and "stage 1" in err and "the stem gives 32" in err and len(err.strip().splitlines()) == 1


def test_save_into_a_folder_is_one_line(cli, tmp_path):
    code, _, err = cli("info", "b0", "--save", str(tmp_path))
    assert code == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1
