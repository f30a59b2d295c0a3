"""Issue 41, the public API under hostile arguments: every numeric or typed argument is checked, sizes are
bounded before anything is allocated, and a mistake is a UserError (or TypeError/ValueError) naming the
argument, never another exception. The property test (Hypothesis) runs in well under a minute."""

from __future__ import annotations

import contextlib
import math
import resource
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import effnet
from effnet import UserError
from effnet.preprocess import Preprocessing

TINY = effnet.NetworkSpec(
    name="tiny", blocks=effnet.parse_blocks("r1_k3_s11_e1_i8_o8,r1_k3_s22_e2_i8_o16"), stem_channels=8, head_channels=32,
    resolution=32,
)  # fmt: skip
_TINY_MODEL = effnet.create_model(TINY, num_classes=3).eval()
#: How much more address space than the process already maps a call may take (an allocation beyond it
#: fails the test as a MemoryError or RuntimeError instead of swapping).
HEADROOM = 3 * 2**30


# ------------------------------------------------------------------------------------------ named cases
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_classes": 10**12}, "num_classes"),
        ({"in_chans": 10**9}, "in_chans"),
        ({"num_classes": -1}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"memory_efficient": "no"}, "memory_efficient"),
        ({"features_only": 1}, "features_only"),
        ({"pretrained": 1}, "pretrained"),
    ],
)
def test_create_model_refuses_before_allocating(kwargs, field):
    with pytest.raises(UserError) as caught:
        effnet.create_model("efficientnet_b0", **kwargs)
    assert caught.value.field == field and str(caught.value).startswith(field)


def test_create_model_refuses_a_model_larger_than_memory(monkeypatch):
    import effnet.factory

    monkeypatch.setattr(effnet.factory, "available_memory_bytes", lambda device="cpu": 10 * 2**20)  # 10 MiB left
    with pytest.raises(
        UserError,
        match=r"^model: efficientnet_b0 at 224 px .* 5,288,548 parameters and needs ~20\.2 MiB, 10\.0 MiB available$",
    ):
        effnet.create_model("efficientnet_b0")
    with pytest.raises(UserError, match=r"^num_classes 100,000: "):
        effnet.create_model(TINY, num_classes=100_000)


def test_available_memory_counts_an_address_space_limit():
    from bounded import python

    code, out, err = python("from effnet.models.profile import available_memory_bytes as a; print(a() < 6 * 2**30)")
    assert code == 0 and out.strip() == "True", err


def test_create_model_of_huge_sizes_is_one_line_under_the_limit():
    from bounded import python

    code, out, err = python(
        "import effnet\n"
        "for kw in ({'num_classes': 10**12}, {'in_chans': 10**9}, {'num_classes': 999_999, 'in_chans': 60_000}):\n"
        "    try:\n        effnet.create_model('efficientnet_b0', **kw)\n"
        "    except effnet.UserError as e:\n        print(e.field)\n"
    )
    assert code == 0 and out.split() == ["num_classes", "in_chans", "num_classes"], err


def test_memory_efficient_true_still_turns_the_mode_on():
    assert effnet.create_model(TINY, memory_efficient=True).memory_efficient
    assert not effnet.create_model(TINY, memory_efficient=False).memory_efficient


# ------------------------------------------------------------------------------------------ the property
@contextlib.contextmanager
def address_space_headroom(extra: int = HEADROOM):
    """The process's address space limited to what it maps now plus ``extra``, for the block."""
    status = Path("/proc/self/status").read_text()
    used = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + extra if hard == resource.RLIM_INFINITY else min(hard, used + extra)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


WHOLE = st.sampled_from([-(10**18), -1, 0, 1, 2, 3, 8, 31, 224, 4097, 10**6 + 1, 10**9, 10**12, 10**18]) | st.integers(
    -3, 64
)
REAL = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(
    [0.0, 1e-300, 0.5, 1.0, 1.2, 16.0, 1e308]
)
JUNK = st.sampled_from([None, True, False, "1", "abc", b"1", [1], {"a": 1}, object(), torch.tensor(1.0)])
ANY_NUMBER = WHOLE | REAL | JUNK
ANY_FLAG = st.booleans() | JUNK | WHOLE


def _named(err: BaseException, names: set[str]) -> bool:
    """Whether an error names one of the arguments given (its field, or the start of its message)."""
    field = getattr(err, "field", None)
    text = str(err)
    return field in names or any(name in text for name in names)


def _check(call, names: set[str]):
    try:
        call()
    except (UserError, TypeError, ValueError) as err:
        assert _named(err, names), f"{type(err).__name__} names none of {names}: {err}"
    except Exception as err:  # noqa: BLE001 (the property: no other exception escapes)
        pytest.fail(f"{type(err).__name__} escaped: {err}")


CALLS = {
    "create_model": (
        st.fixed_dictionaries(
            {
                "num_classes": WHOLE | JUNK,
                "in_chans": WHOLE | JUNK,
                "memory_efficient": ANY_FLAG,
                "features_only": ANY_FLAG,
            }  # fmt: skip
        ),
        lambda kw: effnet.create_model(TINY, **kw),
        {"model"},
    ),
    "scale_compound": (
        st.fixed_dictionaries({"phi": ANY_NUMBER, "alpha": ANY_NUMBER, "beta": REAL, "gamma": REAL}),
        lambda kw: effnet.scale_compound(TINY, kw.pop("phi"), **kw),
        {"spec", "blocks", "resolution", "description field"},
    ),
    "scale_network": (
        st.fixed_dictionaries(
            {"depth": ANY_NUMBER, "width": REAL, "resolution": REAL, "image_size": WHOLE | JUNK, "dropout": REAL | JUNK}
        ),
        lambda kw: effnet.scale_network(TINY, **{k: v for k, v in kw.items() if v is not None}),
        {"spec", "blocks", "description field"},
    ),
    "compound_coefficients": (
        st.fixed_dictionaries({"phi": ANY_NUMBER, "alpha": ANY_NUMBER, "beta": ANY_NUMBER, "gamma": ANY_NUMBER}),
        lambda kw: effnet.compound_coefficients(**kw),
        set(),
    ),
    "description": (
        st.fixed_dictionaries(
            {
                "bn_momentum": ANY_NUMBER,
                "bn_eps": ANY_NUMBER,
                "dropout": ANY_NUMBER,
                "resolution": WHOLE | JUNK,
                "stem_pool": ANY_FLAG,
            }  # fmt: skip
        ),
        lambda kw: TINY.with_(**kw),
        {"description field"},
    ),
    "preprocessing": (
        st.fixed_dictionaries(
            {
                "resolution": WHOLE | JUNK,
                "crop_pct": ANY_NUMBER,
                "mean": st.tuples(REAL, REAL, REAL) | JUNK,
                "std": st.tuples(REAL, REAL, REAL) | JUNK,
            }  # fmt: skip
        ),
        lambda kw: Preprocessing(**kw),
        {"preprocessing"},
    ),
    "optimize": (
        st.fixed_dictionaries(
            {
                "threads": WHOLE | JUNK,
                "input_size": WHOLE | JUNK,
                "backend": st.sampled_from(["eager", "nope", 3]),
                "onednn": ANY_FLAG,
                "tune_allocator": st.sampled_from([False, "no", 0, None]),
            }  # fmt: skip
        ),
        # tune_allocator is never True here: glibc's settings are per process (tests/infer checks them)
        lambda kw: effnet.optimize(
            _TINY_MODEL, **{k: v for k, v in kw.items() if v is not None or k == "tune_allocator"}
        ),
        {"model"},
    ),
    "profile": (
        # profile is models/profile.py's ("registry"): beyond 10**12 classes its meta tensors overflow
        st.fixed_dictionaries(
            {
                "num_classes": st.sampled_from([-1, 0, 1, 3, 1000, 10**12]) | JUNK,
                "in_chans": st.sampled_from([1, 3, 64, 0, -1]) | JUNK,
            }  # fmt: skip
        ),
        lambda kw: effnet.profile(TINY, **kw),
        set(),
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_public_api_arguments_are_checked(name):
    strategy, call, extra = CALLS[name]

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(kwargs):
        _check(lambda: call(dict(kwargs)), set(kwargs) | extra)

    with address_space_headroom():
        run()


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    class_names=JUNK | st.lists(st.text(max_size=3) | WHOLE, max_size=3),
    model=st.sampled_from(["tiny", "linear", None]),
)
def test_save_weights_arguments_are_checked(tmp_path_factory, class_names, model):
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    net = {"tiny": effnet.create_model(TINY, num_classes=3), "linear": torch.nn.Linear(2, 2), None: None}[model]
    _check(lambda: effnet.save_weights(net, path, class_names=class_names), {"model", "class_names"})
    valid = class_names is None or (
        isinstance(class_names, list) and len(class_names) == 3 and all(isinstance(n, str) for n in class_names)
    )
    assert path.exists() == (model == "tiny" and valid)


def test_nan_is_never_a_number_anywhere():
    for call in (
        lambda: effnet.scale_compound(TINY, math.nan),
        lambda: effnet.compound_coefficients(1, alpha=math.nan),
        lambda: TINY.with_(bn_momentum=math.nan),
        lambda: Preprocessing(32, 0.875, mean=(math.nan, 0, 0)),
    ):
        with pytest.raises(UserError):
            call()


# ------------------------------------------------------------------------------------------ the checks
def test_check_regular_file_names_what_a_path_is(tmp_path):
    import socket

    from effnet.errors import check_regular_file

    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s"))
        with pytest.raises(UserError, match=r"weights .*s is a socket, not a regular file") as caught:
            check_regular_file(tmp_path / "s", "weights", field="weights")
        assert caught.value.field == "weights"
    finally:
        sock.close()
    (tmp_path / "f").write_text("x")
    assert check_regular_file(tmp_path / "f") == tmp_path / "f"


def test_check_threads_is_bounded_by_the_cpus():
    from effnet.errors import check_threads, usable_cpus

    check_threads("threads", usable_cpus())
    for value in (0, -1, usable_cpus() + 1, 100_000, 1.0, True, "2"):
        with pytest.raises(UserError, match="^threads must be a whole number"):
            check_threads("threads", value)


def test_check_number_refuses_text_and_booleans():
    from effnet.errors import check_number

    assert check_number("x", 2) == 2.0
    for value in ("2", b"2", True, None, math.inf):
        with pytest.raises(UserError, match="^x must be a"):
            check_number("x", value)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    effnet.save_weights(effnet.create_model(TINY, num_classes=3), path)
    return path


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    num_classes=WHOLE | JUNK,
    model=st.sampled_from([None, "tiny", 5, "", "efficientnet_b0"]) | JUNK,
    fmt=st.sampled_from(["auto", "native", "timm", "nope", 3, None]),
)
def test_load_model_arguments_are_checked(tiny_file, num_classes, model, fmt):
    names = {"num_classes", "model", "format", "tiny.safetensors", "padding"}
    with address_space_headroom():
        _check(lambda: effnet.load_model(tiny_file, num_classes=num_classes, model=model, format=fmt), names)


# ------------------------------------------------------------------------------------------ optimize
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"backend": "onnxruntime", "threads": -1}, "threads"),
        ({"backend": "onnxruntime", "threads": 100_000}, "threads"),
        ({"backend": "onnxruntime", "threads": 1.5}, "threads"),
        ({"backend": "onnxruntime", "input_size": -1}, "input_size"),
        ({"backend": "onnxruntime", "input_size": 100_000}, "input_size"),
        ({"backend": ["eager"]}, "backend"),
        ({"onednn": "no"}, "onednn"),
        ({"tune_allocator": "no"}, "tune_allocator"),
    ],
)
def test_optimize_arguments_are_checked_before_any_work(kwargs, field):
    with pytest.raises(UserError) as caught:
        effnet.optimize(effnet.create_model(TINY, num_classes=3), **kwargs)
    assert caught.value.field == field and str(caught.value).startswith(field)


def test_optimize_of_a_module_that_is_no_effnet_model():
    with pytest.raises(UserError, match="^model must be an effnet model") as caught:
        effnet.optimize(torch.nn.Linear(2, 2))
    assert caught.value.field == "model"
