"""benchmarks/results.py writes every benchmark result in one schema under results/<machine>/<date>-<bench>.json."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results.py"
_SPEC = importlib.util.spec_from_file_location("benchmark_results", _PATH)
results = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(results)


def test_save_result_writes_the_one_schema_under_machine_and_date(tmp_path):
    path = results.save_result("speed", {"images_per_s": 12.5}, date="2026-12-07", root=tmp_path)
    record = json.loads(path.read_text())
    machine = results.machine_info()
    assert path == tmp_path / machine["family"] / "2026-12-07-speed.json"
    assert record == {
        "schema": 1,
        "bench": "speed",
        "date": "2026-12-07",
        "machine": machine,
        "command": sys.argv,
        "results": {"images_per_s": 12.5},
    }
    assert set(machine) == {"cpu", "family", "flags", "cores", "torch"}
    assert machine["torch"] == torch.__version__


def test_a_second_result_the_same_day_gets_a_suffix_and_machine_overrides_the_folder(tmp_path):
    first = results.save_result("train", {"top1": 0.9}, machine="h100", date="2026-12-07", root=tmp_path)
    second = results.save_result("train", {"top1": 0.8}, machine="h100", date="2026-12-07", root=tmp_path)
    assert first == tmp_path / "h100" / "2026-12-07-train.json"
    assert second == tmp_path / "h100" / "2026-12-07-train-2.json"
    assert json.loads(first.read_text())["results"] == {"top1": 0.9}


def test_cpu_family_names_the_microarchitecture():
    assert results.cpu_family("AuthenticAMD", 23, 0x01, [], "AMD EPYC 7601") == "zen1"
    assert results.cpu_family("AuthenticAMD", 23, 0x31, [], "AMD EPYC 7742") == "zen2"
    assert results.cpu_family("AuthenticAMD", 25, 0x01, [], "AMD EPYC 7763") == "zen3"
    assert results.cpu_family("AuthenticAMD", 25, 0x11, [], "AMD EPYC 9654") == "zen4"
    assert results.cpu_family("AuthenticAMD", 26, 0x02, [], "AMD EPYC") == "zen5"
    assert results.cpu_family("GenuineIntel", 6, 0x8F, ["amx_tile", "avx512f"], "Intel Xeon Platinum") == "xeon-amx"
    assert results.cpu_family("Other", 0, 0, [], "Some CPU 3000") == "some-cpu-3000"
    assert results.gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert results.gpu_slug("NVIDIA H200") == "h200"


def test_every_stored_result_is_in_the_layout_and_the_schema():
    root = _PATH.parent / "results"
    files = sorted(root.rglob("*.json"))
    assert files
    for path in files:
        record = json.loads(path.read_text())
        relative = path.relative_to(root)
        assert len(relative.parts) == 2, relative
        assert set(record) == {"schema", "bench", "date", "machine", "command", "results"}, relative
        assert record["schema"] == 1
        assert path.name in {f"{record['date']}-{record['bench']}.json"} | {
            f"{record['date']}-{record['bench']}-{n}.json" for n in range(2, 10)
        }, relative
        assert {"cpu", "family", "flags", "cores", "torch"} <= set(record["machine"]), relative
        expected = results.gpu_slug(record["machine"]["gpu"]) if "gpu" in record["machine"] else None
        assert relative.parts[0] == (expected or record["machine"]["family"]), relative
