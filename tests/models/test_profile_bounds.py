"""profile() and the model refuse sizes outside their bounds before building anything."""

import pytest

from effnet.errors import UserError
from effnet.models.efficientnet import MAX_CLASSES
from effnet.models.profile import profile


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"resolution": 0}, "resolution"),
        ({"resolution": 10**9}, "resolution"),
        ({"resolution": 224.0}, "resolution"),
        ({"num_classes": MAX_CLASSES + 1}, "num_classes"),
        ({"num_classes": 10**18}, "num_classes"),
        ({"in_chans": 10**9}, "in_chans"),
    ],
)
def test_profile_refuses_sizes_out_of_bounds_naming_them(kwargs, field):
    with pytest.raises(UserError) as caught:
        profile("efficientnet_b0", **kwargs)
    assert caught.value.field == field


def test_profile_at_the_bounds_still_counts():
    assert profile("efficientnet_b0", resolution=224).macs == profile("efficientnet_b0").macs
    assert profile("efficientnet_b0", resolution=1).resolution == 1
