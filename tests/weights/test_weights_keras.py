"""Keras applications' EfficientNetB0 in the legacy HDF5 layout, imported and compared with Keras itself."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import effnet  # noqa: E402
from effnet.factory import load_model, load_weights  # noqa: E402
from effnet.weights import IMAGENET_MEAN, IMAGENET_STD, detect_format  # noqa: E402
from effnet.weights.files import read_h5  # noqa: E402

SIZE = 128
#: Keras-on-torch converts tensors through numpy's old __array__ protocol; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras_b0(tmp_path_factory):
    """Keras B0 (weights=None) with randomised BN statistics, saved as a legacy .h5 file."""
    if keras.backend.backend() != "torch":
        pytest.skip("needs KERAS_BACKEND=torch")
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.2, beta.shape).astype("float32"),
                    rng.normal(0, 0.2, mean.shape).astype("float32"),
                    rng.uniform(0.5, 1.5, var.shape).astype("float32"),
                ]
            )
        elif isinstance(layer, keras.layers.Normalization):  # ImageNet mean/std, as the released model
            mean, var, count = layer.get_weights()
            std = np.array(IMAGENET_STD, "float32")
            layer.set_weights(
                [np.array(IMAGENET_MEAN, "float32").reshape(mean.shape), (std**2).reshape(var.shape), count]
            )
    kernel, bias = model.get_layer("predictions").get_weights()  # a peaked softmax, so probabilities say something
    model.get_layer("predictions").set_weights([rng.normal(0, 0.5, kernel.shape).astype("float32"), bias])
    path = tmp_path_factory.mktemp("keras") / "b0.h5"
    model.save(path)  # Keras 3: legacy HDF5 layout for .h5
    return model, path


def test_layout_is_the_released_one(keras_b0):
    _, path = keras_b0
    tensors = read_h5(path)
    assert {"stem_conv/kernel", "block1a_dwconv/kernel", "block2b_expand_conv/kernel", "top_conv/kernel"} <= set(
        tensors
    )
    assert tensors["predictions/kernel"].shape == (1280, 1000)
    assert detect_format(tensors) == "keras"


def test_probabilities_match_keras(keras_b0):
    kmodel, path = keras_b0
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = np.asarray(kmodel.predict(pixels, verbose=0))  # Keras rescales and normalises itself
    model = effnet.create_model("efficientnet_b0")
    load_weights(model, path)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0  # effnet gets normalised 0–1 pixels
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model.eval()(x).softmax(-1).numpy()
    assert expected.max() > 0.05  # not a flat distribution
    assert np.abs(probs - expected).max() < 1e-4
    assert (probs.argmax(-1) == expected.argmax(-1)).all()


def test_convert_cli_and_mismatch(keras_b0, tmp_path, cli):
    _, path = keras_b0
    out = tmp_path / "b0.safetensors"
    code, stdout, err = cli("convert", str(path), "--to", str(out), "--model", "efficientnet_b0", "--json")
    assert code == 0, err
    assert '"format": "keras"' in stdout
    model, info = load_model(out)
    assert info.spec.padding == "same" and info.spec.bn_eps == 1e-3 and info.num_classes == 1000
    code, _, err = cli("convert", str(path), "--to", str(out), "--model", "efficientnet_b1")
    assert code == 2 and "looks like efficientnet_b0, model is efficientnet_b1" in err
