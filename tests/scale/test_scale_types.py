"""Issue 41 on scaling's API: arguments of the wrong type are a UserError naming them, never an
AttributeError or a format error from inside."""

import pytest

from effnet import UserError, get_description, scale_compound, scale_network

B0 = get_description("efficientnet_b0")


@pytest.mark.parametrize(
    "args, kwargs, field, needle",
    [
        (("efficientnet_b0", 1), {}, "spec", r"get_description\('efficientnet_b0'\)"),
        ((None, 1), {}, "spec", "spec must be a NetworkSpec, got NoneType"),
        ((B0, "1"), {}, "phi", "phi must be a number, got '1'"),
        ((B0, True), {}, "phi", "phi must be a number"),
        ((B0, float("nan")), {}, "phi", "finite"),
        ((B0, 1), {"alpha": "1.2"}, "alpha", "alpha must be a number"),
        ((B0, 1), {"name": 5}, "name", "name must be a non-empty string"),
    ],
)
def test_scale_compound_wrong_types(args, kwargs, field, needle):
    with pytest.raises(UserError, match=needle) as caught:
        scale_compound(*args, **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"depth": "2"}, "depth"),
        ({"width": 0}, "width"),
        ({"image_size": 10**9}, "resolution"),
        ({"image_size": 1.5}, "image_size"),
        ({"dropout": "0.2"}, "dropout"),
    ],
)
def test_scale_network_wrong_values(kwargs, field):
    with pytest.raises(UserError) as caught:
        scale_network(B0, **kwargs)
    assert caught.value.field == field


def test_scale_network_of_no_description():
    with pytest.raises(UserError, match="spec must be a NetworkSpec, got dict"):
        scale_network({"name": "x"}, depth=2)


def test_valid_calls_unchanged():
    assert scale_compound(B0, 1).name == "efficientnet_b0-phi1"
    assert scale_compound(B0, 0.5).name == "efficientnet_b0-phi0.5"
