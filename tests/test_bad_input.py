"""Bad input that used to pass silently: each now stops with a `ValueError`
naming the argument and what was received."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar
from keras_attreg import attributions as attr

RNG = np.random.default_rng(5)


def _compiled():
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(1e-2))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return base, model


def _data(samples=8):
    x = RNG.normal(size=(samples, 4)).astype("float32")
    return x, (np.arange(samples) % 3).astype("float32")


def test_fit_refuses_fractional_labels_in_arrays():
    _, model = _compiled()
    x, y = _data()
    with pytest.raises(ValueError, match=r"argument y: .*whole-number.*0\.5"):
        model.fit(x, y + 0.5, verbose=0)


def test_fit_refuses_fractional_labels_in_a_dataset():
    _, model = _compiled()
    x, y = _data()
    data = tf.data.Dataset.from_tensor_slices((x, y + 0.5)).batch(4)
    match = r"argument y: .*whole-number.*fractional values \[0\.5 2\.5\]"
    with pytest.raises(ValueError, match=match):
        model.fit(data, verbose=0)


def test_whole_number_float_labels_train_as_integer_labels():
    x, y = _data()
    results = []
    for labels in (y, y.astype("int64")):
        keras.utils.set_random_seed(0)
        base, model = _compiled()
        model.fit(x, labels, batch_size=4, epochs=2, verbose=0)
        results.append(base.get_weights())
    for float_weights, int_weights in zip(*results, strict=True):
        np.testing.assert_array_equal(float_weights, int_weights)


def test_attributions_refuse_fractional_targets():
    base, _ = _compiled()
    x, y = _data()
    with pytest.raises(
        ValueError, match=r"argument targets: .*values \[0\.25 0\.25 0\.25\]"
    ):
        attr.saliency(base, x, np.where(y == 1, 0.25, y))
    with pytest.raises(ValueError, match="argument y_val"):
        kar.callbacks.AttributionMonitor(
            np.zeros((2, 5, 5)), [0.5, 1.0], output_dir="unused"
        )


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: kar.L1GradientPenalty(alpha="0.1"), "alpha"),
        (lambda: kar.FBILoss(lam="0.1"), "lam"),
        (lambda: kar.FBILoss(epsilon=b"0.01"), "epsilon"),
        (lambda: kar.DelayedActivation(threshold="0.7"), "threshold"),
        (lambda: attr.smoothgrad(None, np.zeros((1, 4)), [0], noise="0.1"), "noise"),
    ],
)
def test_number_arguments_refuse_strings(make, name):
    with pytest.raises(
        ValueError, match=rf"Invalid value for argument {name}: .* Received: {name}="
    ):
        make()


def _empty_pipeline(x, y):
    """Batches of a pipeline that turns out empty only when it runs."""
    empty = (
        tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda _, label: label > 5)
    ).batch(4)
    assert int(empty.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    return empty


def test_fit_stops_after_an_epoch_in_which_the_pipeline_was_empty():
    base, model = _compiled()
    x, y = _data()
    empty = _empty_pipeline(x, y)
    before = base.get_weights()
    with pytest.raises(ValueError, match=r"argument x: .*no batch in epoch 1"):
        model.fit(empty, epochs=3, validation_data=(x, y), verbose=0)
    for old, new in zip(before, base.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_evaluate_and_validation_on_an_empty_pipeline_raise():
    _, model = _compiled()
    x, y = _data()
    empty = _empty_pipeline(x, y)
    with pytest.raises(ValueError, match=r"argument x: .*Received: x yielded no batch"):
        model.evaluate(empty, verbose=0)
    with pytest.raises(
        ValueError, match=r"argument validation_data: .*yielded no batch \(an empty"
    ):
        model.fit(x, y, validation_data=empty, verbose=0)
    assert np.isfinite(model.evaluate(x, y, verbose=0, return_dict=True)["loss"])


def test_a_pipeline_of_unknown_size_that_yields_batches_trains():
    base, model = _compiled()
    x, y = _data()
    kept = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda _, label: label < 2)
    before = base.get_weights()[0]
    history = model.fit(kept.batch(4), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert not np.array_equal(before, base.get_weights()[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "method",
    [
        attr.saliency,
        attr.gradient_x_input,
        functools.partial(attr.integrated_gradients, steps=4),
        functools.partial(attr.smoothgrad, samples=2),
        attr.epsilon_lrp,
        functools.partial(attr.occlusion, patch_size=2),
    ],
    ids=lambda m: getattr(m, "__name__", None) or m.func.__name__,
)
def test_attributions_refuse_non_finite_inputs(method, bad):
    base, _ = _compiled()
    x, y = _data(3)
    x[1, 2] = bad
    with pytest.raises(
        ValueError, match=r"argument x: .*Received: x with 1 non-finite .*\(1, 2\)"
    ):
        method(base, x, y)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    with pytest.raises(ValueError, match="argument x"):
        method(base, data)


def test_sensitivity_n_refuses_non_finite_inputs():
    base, _ = _compiled()
    x, y = _data(3)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="argument x: expected finite inputs"):
        kar.evaluation.sensitivity_n(
            base, (x, y), np.ones_like(x), n_values=[1], num_subsets=4, verbose=0
        )


def test_relevance_map_refuses_token_ids_instead_of_returning_zeros():
    """relevance_map on a token model used to return an all-zero map (the pass
    stops at the lookup); epsilon_lrp gives the per-token relevance. Oracle for
    the latter being non-trivial: at least one non-zero value per sample."""
    from keras_attreg.relevance import relevance_map

    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    ids = np.array([[3, 5, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    with pytest.raises(ValueError, match=r"token\s+ids.*epsilon_lrp.*int32"):
        relevance_map(model, ids, [0, 1])
    maps = attr.epsilon_lrp(model, ids, [0, 1]).numpy()
    assert maps.shape == (2, 6)
    assert (np.abs(maps).max(axis=1) > 0).all()


def _nan_at_sample(x, y, sample):
    maps = np.ones(x.shape, "float32")
    maps[sample, 1, 2] = np.nan
    return maps


@pytest.mark.parametrize(
    "metric",
    [
        kar.evaluation.deletion,
        kar.evaluation.insertion,
        kar.evaluation.road,
        kar.evaluation.infidelity,
        functools.partial(kar.evaluation.sensitivity_n, n_values=(2,), verbose=0),
    ],
)
@pytest.mark.parametrize("given", ["precomputed", "method"])
def test_metrics_refuse_maps_that_are_not_finite(metric, given):
    """A NaN in one map used to rank that sample's pixels silently (NaN sorted
    last by one sort, anywhere by another) and return a number: now every
    metric stops, naming the argument and the first bad sample (sample 3,
    which the maps below make bad: the expected value is set by hand)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5, 5, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    x = RNG.normal(size=(6, 5, 5, 1)).astype("float32")
    y = np.arange(6) % 3
    maps = _nan_at_sample(x, y, 3)
    if given == "method":

        def attributions(model, xb, tb):
            # the batch of data samples 2 and 3 gets a NaN at its sample 1
            second = np.array_equal(np.asarray(xb)[0], x[2])
            return (
                _nan_at_sample(np.asarray(xb), tb, 1) if second else np.ones(xb.shape)
            )

        kwargs = {"batch_size": 2}
    else:
        attributions, kwargs = maps, {}
    with pytest.raises(
        ValueError,
        match=r"attributions: every map must be finite.*"
        r"NaN or inf, the first at sample 3",
    ):
        metric(model, (x, y), attributions, **kwargs)
