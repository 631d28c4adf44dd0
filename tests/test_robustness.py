"""Non-finite values during training, and mixed precision."""

import keras
import numpy as np
import pytest

import keras_attreg as kar


def _base(dtype=None):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, dtype=dtype),
            keras.layers.BatchNormalization(dtype=dtype),
            keras.layers.ReLU(dtype=dtype),
            keras.layers.Flatten(dtype=dtype),
            keras.layers.Dense(3, dtype=dtype),
        ]
    )


def _model(nonfinite="raise", lr=0.01, base=None):
    model = kar.AttributionRegularizedModel(
        base or _base(), kar.L1GradientPenalty(0.01), nonfinite=nonfinite
    )
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n)


def test_nan_input_stops_training_naming_step_and_inputs():
    x, y = _data()
    x[9, 2, 3, 0] = np.nan
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(FloatingPointError, match=r"training step 1: inputs \(x\)"):
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    # The first batch trained, the second stopped before its forward pass.
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(before, model.get_weights(), strict=True)
    ]
    assert any(changed)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_diverging_loss_stops_training_naming_the_term():
    x, y = _data()
    model = _model(lr=1e30)
    with pytest.raises(
        FloatingPointError, match="non-finite value in training step"
    ) as info:
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    message = str(info.value)
    assert any(term in message for term in ("task loss", "penalty", "gradients"))
    assert "inputs" not in message


def test_skip_mode_leaves_weights_and_batchnorm_statistics_untouched():
    x, y = _data(8)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.inf
    model = _model("skip")
    model.fit(x, y, batch_size=8, verbose=0)
    before = [w.copy() for w in model.base_model.get_weights()]
    logs = model.fit(bad, y, batch_size=8, verbose=0).history
    for a, b in zip(before, model.base_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert logs["skipped_batches"] == [1.0]
    assert np.isfinite(logs["loss"][0]) or logs["loss"][0] == 0.0
    # A good batch afterwards trains normally and is not counted.
    logs = model.fit(x, y, batch_size=8, verbose=0).history
    assert logs["skipped_batches"] == [0.0]
    assert not np.array_equal(before[0], model.base_model.get_weights()[0])


def test_nonfinite_argument_is_checked_and_serialised(tmp_path):
    with pytest.raises(ValueError, match="Received: nonfinite='ignore'"):
        kar.AttributionRegularizedModel(
            _base(), kar.L1GradientPenalty(), nonfinite="ignore"
        )
    model = _model("skip")
    x, y = _data(8)
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").nonfinite == "skip"


@pytest.mark.parametrize(
    "policy, rtol", [("mixed_bfloat16", 0.05), ("mixed_float16", 0.01)]
)
def test_mixed_precision_penalty_matches_float32(policy, rtol):
    """Same weights, same batch: the penalty under a mixed policy vs float32."""
    x, y = _data(16)
    reference = _base()
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = _model(base=_base())
        mixed.base_model.set_weights(reference.get_weights())
        assert mixed.base_model.layers[0].compute_dtype == policy.split("_")[1]
        got = mixed.evaluate(x, y, verbose=0, return_dict=True)
        mixed.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert all(np.isfinite(w).all() for w in mixed.get_weights())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain = _model(base=reference)
    want = plain.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        got["attribution_penalty"], want["attribution_penalty"], rtol=rtol
    )
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=rtol)


def test_float16_input_gradient_does_not_underflow():
    """Tiny logits: the float16 input gradient would flush to zero unscaled."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        base = _base()
        for layer in base.layers:
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
                layer.kernel.assign(layer.kernel * 1e-3)
        model = _model(base=base)
        x, y = _data(8)
        got = model.evaluate(x, y, verbose=0, return_dict=True)["attribution_penalty"]
        weights = base.get_weights()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = _base()
    reference.set_weights(weights)
    want = _model(base=reference).evaluate(x, y, verbose=0, return_dict=True)
    assert want["attribution_penalty"] > 0
    np.testing.assert_allclose(got, want["attribution_penalty"], rtol=0.02)
