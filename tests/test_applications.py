"""FBI and LRP on every keras.applications family that fits the CPU.

One `fit` step with `FBILoss` gives a finite loss; `relevance_map` and
`epsilon_lrp` give finite, non-zero maps of x's shape. `weights=None`: no
downloads. The exactness of the pass on graphs is tested against the test's
own tape in tests/test_relevance_graph.py (ResNet50 there, nested).
"""

import keras
import numpy as np
import pytest

from keras_attreg import AttributionRegularizedModel, FBILoss
from keras_attreg.attributions import epsilon_lrp
from keras_attreg.relevance import relevance_map

pytestmark = pytest.mark.slow

# (name, input side, extra constructor arguments)
APPLICATIONS = [
    ("VGG16", 32, {}),
    ("ResNet50", 32, {}),
    ("ResNet50V2", 32, {}),
    ("DenseNet121", 32, {}),
    ("MobileNetV2", 32, {}),
    ("MobileNetV3Small", 32, {"include_preprocessing": True}),
    ("EfficientNetB0", 32, {}),
    ("ConvNeXtTiny", 32, {}),
    ("Xception", 71, {}),
]


def _calibrate_batch_norm(model, x):
    """Moving statistics = the statistics of `x` (a fresh model's inference
    activations otherwise shrink to ~1e-12 over 50 layers)."""
    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in layers:
        layer.momentum = 0.99


@pytest.mark.parametrize(
    "name, side, extra", APPLICATIONS, ids=[a[0] for a in APPLICATIONS]
)
def test_fbi_step_and_relevance_maps_on_keras_applications(name, side, extra):
    keras.utils.set_random_seed(0)
    # A softmax ending (the Keras default) for some of them: the pass starts
    # at the logit under it.
    activation = "softmax" if len(name) % 2 else None
    model = getattr(keras.applications, name)(
        weights=None,
        input_shape=(side, side, 3),
        classes=4,
        classifier_activation=activation,
        **extra,
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255 if extra else 1, size=(4, side, side, 3)).astype("float32")
    y = np.array([1, 3, 0, 2])
    _calibrate_batch_norm(model, x)
    maps = relevance_map(model, x, y).numpy()
    assert maps.shape == x.shape
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0
    if name == "MobileNetV3Small":  # the traced, batched attribution API
        lrp = epsilon_lrp(model, x, y, epsilon=0.01, batch_size=2).numpy()
        # The same pass traced: float32 rounding of the fused graph differs
        # from eager and the 1/z of the rule amplifies it (measured: 0.9% of
        # the largest value).
        np.testing.assert_allclose(lrp, maps, atol=0.02 * np.abs(maps).max())
    wrapped = AttributionRegularizedModel(model, FBILoss(lam=0.1))
    # One step: eager costs less than tracing the nested-tape step of a
    # 100-layer graph.
    wrapped.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=activation is None),
        run_eagerly=True,
    )
    logs = wrapped.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and logs["fbi_loss"][0] > 0
