"""Cascading model-parameter randomisation (Adebayo et al. 2018) against the
test's own randomised copies, scipy's Spearman, and the cases the paper
derives (a weight-independent map never decorrelates)."""

import json
import zlib

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from matplotlib.figure import Figure

import keras_attreg as kar
from keras_attreg.attributions import gradient_x_input, saliency
from keras_attreg.evaluation.randomisation import (
    RandomisationResult,
    model_randomisation,
)

RNG = np.random.default_rng(5)

# The variables the module docstring says are re-initialised, and the
# initializer attribute each is drawn with, written out per layer type.
_VARIABLES = {
    keras.layers.Conv2D: [
        ("kernel", "kernel_initializer"),
        ("bias", "bias_initializer"),
    ],
    keras.layers.Conv1D: [
        ("kernel", "kernel_initializer"),
        ("bias", "bias_initializer"),
    ],
    keras.layers.Dense: [
        ("kernel", "kernel_initializer"),
        ("bias", "bias_initializer"),
    ],
    keras.layers.BatchNormalization: [
        ("gamma", "gamma_initializer"),
        ("beta", "beta_initializer"),
    ],
    keras.layers.Embedding: [("embeddings", "embeddings_initializer")],
}


def _cnn(shape=(8, 8, 1), classes=4):
    """Conv -> BatchNorm -> ReLU -> Flatten -> Dense logits, with BatchNorm
    moving statistics that are not the 0/1 defaults."""
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten(name="flatten")(h)
    model = keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h))
    bn = model.get_layer("bn")
    bn.moving_mean.assign(RNG.normal(size=3).astype("float32"))
    bn.moving_variance.assign(RNG.uniform(0.5, 2.0, size=3).astype("float32"))
    bn.gamma.assign(RNG.uniform(0.5, 2.0, size=3).astype("float32"))
    return model


def _images(count=6, shape=(8, 8, 1), classes=4):
    x = RNG.normal(size=(count, *shape)).astype("float32")
    return x, np.arange(count) % classes


def _own_copy(model, names, seed):
    """The test's randomised copy: clone, copy the weights, then draw each
    listed layer's variables with its initializer re-created with the seed
    crc32(f"{seed}/{name}/{i}") % 2**31 (the documented rule)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in names:
        layer = copy.get_layer(name)
        for index, (variable, attribute) in enumerate(_VARIABLES[type(layer)]):
            initializer = getattr(layer, attribute)
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = zlib.crc32(f"{seed}/{name}/{index}".encode()) % 2**31
                initializer = type(initializer).from_config(config)
            target = getattr(layer, variable)
            target.assign(initializer(tuple(target.shape), dtype=target.dtype))
    return copy


def _spearman(a, b):
    """scipy's Spearman of each sample's flattened maps."""
    return np.array(
        [
            scipy.stats.spearmanr(np.ravel(p), np.ravel(q)).statistic
            for p, q in zip(a, b, strict=True)
        ]
    )


def test_each_step_equals_scipy_spearman_on_the_tests_own_randomised_copy():
    """Oracle: the test's own copy (clone + the documented re-initialisation,
    layer by layer from the output) and scipy.stats.spearmanr of its |maps|."""
    model = _cnn()
    model.get_layer("conv").trainable = False  # frozen layers are randomised too
    x, y = _images()
    result = model_randomisation(model, (x, y), saliency, seed=3)
    assert result.layers == ["logits", "bn", "conv"]
    assert result.label == "saliency" and result.measure == "spearman"
    original = np.abs(saliency(model, x, y).numpy())
    for step in range(1, 4):
        copy = _own_copy(model, result.layers[:step], seed=3)
        maps = np.abs(saliency(copy, x, y).numpy())
        expected = _spearman(original, maps)
        np.testing.assert_allclose(result.per_sample[:, step - 1], expected, atol=1e-9)
        np.testing.assert_allclose(result.similarity[step - 1], expected.mean())
    assert (result.undefined == 0).all()


def test_pearson_of_signed_maps_and_a_chosen_layer_order_equal_the_own_copy():
    """Oracle: np.corrcoef of the signed gradient x input maps of the test's
    own copy, with only the layers asked for randomised, in that order."""
    model = _cnn()
    x, y = _images()
    result = model_randomisation(
        model,
        (x, y),
        "gradient_x_input",
        similarity="pearson",
        absolute=False,
        layers=["conv", "logits"],
    )
    assert result.layers == ["conv", "logits"]
    assert result.label == "gradient_x_input" and not result.absolute
    original = gradient_x_input(model, x, y).numpy().reshape(len(x), -1)
    for step in (1, 2):
        copy = _own_copy(model, ["conv", "logits"][:step], seed=0)
        maps = gradient_x_input(copy, x, y).numpy().reshape(len(x), -1)
        expected = [
            np.corrcoef(p, q)[0, 1] for p, q in zip(original, maps, strict=True)
        ]
        np.testing.assert_allclose(result.per_sample[:, step - 1], expected, atol=1e-6)


def test_token_models_compare_maps_over_the_real_tokens_only():
    """Oracle: scipy's Spearman over each sample's non-zero ids of the
    per-token |saliency| of the test's own copy (Embedding re-drawn too)."""
    length, vocabulary = 9, 20
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, 4, name="embedding")(inputs)
    h = keras.layers.Conv1D(5, 3, activation="tanh", name="conv")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(h))
    ids = RNG.integers(1, vocabulary, (5, length)).astype("int32")
    for row, size in zip(ids, (3, 9, 5, 7, 4), strict=True):
        row[size:] = 0
    y = np.arange(5) % 2
    result = model_randomisation(model, (ids, y), saliency)
    assert result.layers == ["logits", "conv", "embedding"]
    original = np.abs(saliency(model, ids, y).numpy())
    for step in range(1, 4):
        maps = np.abs(saliency(_own_copy(model, result.layers[:step], 0), ids, y))
        expected = [
            scipy.stats.spearmanr(o[r != 0], m[r != 0]).statistic
            for o, m, r in zip(original, maps, ids, strict=True)
        ]
        np.testing.assert_allclose(result.per_sample[:, step - 1], expected, atol=1e-9)


def test_the_original_model_is_left_bit_identical():
    """Oracle: a copy of every weight (BatchNorm statistics included) taken
    before the call, compared bit for bit; the wrapper stands for its base."""
    model = _cnn()
    before = [w.copy() for w in model.get_weights()]
    x, y = _images()
    result = model_randomisation(model, (x, y), saliency)
    after = model.get_weights()
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        assert old.dtype == new.dtype and np.array_equal(old, new)
    wrapper = kar.AttributionRegularizedModel(model, kar.L1GradientPenalty(1e-2))
    wrapped = model_randomisation(wrapper, (x, y), saliency)
    np.testing.assert_array_equal(wrapped.per_sample, result.per_sample)
    for old, new in zip(before, model.get_weights(), strict=True):
        assert np.array_equal(old, new)


@pytest.fixture(scope="module")
def trained_cnn():
    """A small CNN (strided conv, dense hidden layer) trained on real MNIST."""
    x, y = kar.datasets.load_mnist_sample("train")
    x = kar.datasets.standardize(x[:2000, ..., None].astype("float32") / 255, "mnist")
    x, y = np.asarray(x, "float32"), y[:2000].astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.85
    return model, x[:32], y[:32]


def test_saliency_of_a_fully_randomised_trained_cnn_is_dissimilar(trained_cnn):
    """Oracle: Adebayo et al. (Fig. 2/4): the gradient of a re-initialised
    network is not that of the trained one; the unrandomised model's own
    similarity (scipy's Spearman of its maps with a plain clone's) is 1."""
    model, x, y = trained_cnn
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    reference = _spearman(np.abs(saliency(model, x, y)), np.abs(saliency(copy, x, y)))
    np.testing.assert_allclose(reference, 1.0)
    result = model_randomisation(model, (x, y), saliency)
    assert result.layers == ["logits", "hidden", "conv1"]
    assert result.similarity[-1] < 0.5
    assert result.similarity[-1] < result.similarity[0]
    assert np.nanmean(result.per_sample[:, -1]) == pytest.approx(result.similarity[-1])


def _absolute_input(model, x, targets):
    """An edge-detector-like method that never looks at the model: |x|."""
    return tf.abs(tf.convert_to_tensor(x))


def _constant(model, x, targets):
    return tf.ones_like(tf.convert_to_tensor(x))


def test_a_map_that_ignores_the_weights_stays_similar_at_every_step():
    """Oracle: |x| does not depend on the weights, so each randomised copy gives
    the very same map and Spearman is exactly 1 (the failure case the sanity
    check exists to expose)."""
    model = _cnn()
    x, y = _images()
    result = model_randomisation(model, (x, y), _absolute_input)
    assert result.label == "_absolute_input"
    np.testing.assert_allclose(result.per_sample, 1.0)
    np.testing.assert_allclose(result.similarity, 1.0)
    assert (result.undefined == 0).all()
    np.testing.assert_allclose(result.standard_error(), 0.0, atol=1e-12)


def test_constant_maps_are_undefined_counted_and_written_as_none(tmp_path):
    """Oracle: a correlation with a constant map is undefined (0/0): every
    sample is counted in `undefined`, the mean is NaN, JSON gets null."""
    model = _cnn()
    x, y = _images(count=3)
    result = model_randomisation(model, (x, y), _constant, label="ones")
    assert np.isnan(result.per_sample).all()
    assert result.undefined.tolist() == [3, 3, 3]
    record = json.loads(json.dumps(result.to_dict()))
    assert record["similarity"] == [None, None, None]
    assert record["label"] == "ones" and record["num_samples"] == 3


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, index):
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part], self.y[part]


def test_every_data_form_gives_the_same_result():
    """Oracle: the arrays' result; tf.data, a PyDataset and a one-shot
    generator carry the same samples in the same batches, so every step
    (the generator is read once, yet used for all 3) gives the same numbers."""
    model = _cnn()
    x, y = _images(count=7)
    expected = model_randomisation(model, (x, y), saliency, batch_size=3)

    def generator():
        for start in range(0, len(x), 3):
            yield x[start : start + 3], y[start : start + 3]

    forms = [
        tf.data.Dataset.from_tensor_slices((x, y)).batch(3),
        _Batches(x, y, 3),
        generator(),
    ]
    for data in forms:
        result = model_randomisation(model, data, saliency, batch_size=3)
        assert result.layers == expected.layers
        np.testing.assert_allclose(result.per_sample, expected.per_sample, atol=1e-12)


def test_nested_models_are_walked_into_and_seeds_make_it_reproducible():
    """Oracle: the layers listed by hand from the model's structure; the same
    seed gives the same numbers and another seed other random weights."""
    inner = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="inner_conv")],
        name="backbone",
    )
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    x, y = _images(classes=3)
    first = model_randomisation(model, (x, y), saliency, seed=1)
    assert first.layers == ["logits", "inner_conv"]
    again = model_randomisation(model, (x, y), saliency, seed=1)
    np.testing.assert_array_equal(first.per_sample, again.per_sample)
    other = model_randomisation(model, (x, y), saliency, seed=2)
    assert not np.allclose(first.per_sample, other.per_sample)
    whole = model_randomisation(model, (x, y), saliency, layers=["backbone"])
    assert whole.layers == ["backbone"] and whole.per_sample.shape == (6, 1)


def test_to_dict_and_plot(tmp_path):
    """Oracle: json round trip of the documented keys; the PNG file exists and
    the figure's legend holds the labels; other layers cannot share a plot."""
    model = _cnn()
    x, y = _images()
    first = model_randomisation(model, (x, y), saliency)
    second = model_randomisation(model, (x, y), _absolute_input, label="|x|")
    record = json.loads(json.dumps(first.to_dict()))
    assert record["layers"] == ["logits", "bn", "conv"]
    assert record["measure"] == "spearman" and record["absolute"] is True
    assert len(record["standard_error"]) == 3 and record["undefined"] == [0, 0, 0]
    figure = first.plot(tmp_path / "cascade.png", second, label="grad")
    assert isinstance(figure, Figure)
    assert (tmp_path / "cascade.png").stat().st_size > 0
    assert figure.axes[0].get_legend_handles_labels()[1] == ["grad", "|x|"]
    partial = model_randomisation(model, (x, y), saliency, layers=["logits"])
    assert isinstance(partial, RandomisationResult)
    with pytest.raises(ValueError, match="argument others"):
        first.plot(tmp_path / "bad.png", partial)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(keras.layers.Flatten()(x))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"similarity": "ssim"}, r"argument similarity.*Received: similarity='ssim'"),
        ({"absolute": "yes"}, r"argument absolute.*Received: absolute='yes'"),
        ({"layers": ["nope"]}, r"argument layers.*Received: layers=\['nope'\]"),
        ({"layers": ["flatten"]}, r"argument layers.*have weights.*'flatten'"),
        ({"layers": ["conv", "conv"]}, r"argument layers.*'conv' repeated"),
        ({"layers": []}, r"argument layers.*Received: layers=\[\]"),
        ({"seed": 1.5}, r"argument seed.*Received: seed=1.5"),
        ({"batch_size": 0}, r"argument batch_size.*Received: batch_size=0"),
        ({"verbose": -1}, r"argument verbose.*Received: verbose=-1"),
        ({"method": np.zeros((6, 8, 8, 1))}, r"argument method.*precomputed.*ndarray"),
        ({"data": "x"}, r"argument data.*Received: data of type str"),
        ({"label": 3}, r"argument label.*Received: label=3"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(options, match):
    """Oracle: the Keras convention, "Invalid value for argument <name>: ...
    Received: <name>=<value>"."""
    x, y = _images()
    arguments = {"model": _cnn(), "data": (x, y), "method": saliency, **options}
    with pytest.raises(ValueError, match=match):
        model_randomisation(**arguments)


def test_subclassed_models_and_unknown_method_names_are_refused():
    """Oracle: a subclassed model cannot be cloned from its graph; the method
    registry names the argument it was given through."""
    x, y = _images()
    subclassed = _Subclassed()
    subclassed(x)
    with pytest.raises(ValueError, match=r"argument model.*type _Subclassed"):
        model_randomisation(subclassed, (x, y), saliency)
    with pytest.raises(ValueError, match="method"):
        model_randomisation(_cnn(), (x, y), "no_such_method")


def test_a_named_input_of_a_model_with_several_inputs_equals_the_own_copy():
    """Oracle: the test's own randomised copy and scipy's Spearman of its
    |gradient x input| maps of the input "image" (the method's map of that
    input, the metadata input fed as given); list and dict feed the same."""
    image = keras.Input((6, 6, 1), name="image")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Flatten()(keras.layers.Conv2D(3, 3, name="conv")(image))
    h = keras.layers.Concatenate()([h, meta])
    h = keras.layers.Dense(5, activation="tanh", name="hidden")(h)
    model = keras.Model([image, meta], keras.layers.Dense(3, name="logits")(h))
    x = RNG.normal(size=(5, 6, 6, 1)).astype("float32")
    m = RNG.normal(size=(5, 3)).astype("float32")
    y = np.arange(5) % 3
    result = model_randomisation(
        model, ([x, m], y), gradient_x_input, seed=1, input_name="image"
    )
    assert result.layers == ["logits", "hidden", "conv"]
    original = np.abs(gradient_x_input(model, [x, m], y)[0].numpy())
    for step in range(1, 4):
        copy = _own_copy(model, result.layers[:step], seed=1)
        maps = np.abs(gradient_x_input(copy, [x, m], y)[0].numpy())
        expected = _spearman(original, maps)
        np.testing.assert_allclose(result.per_sample[:, step - 1], expected, atol=1e-9)
    as_dict = model_randomisation(
        model,
        ({"image": x, "meta": m}, y),
        gradient_x_input,
        seed=1,
        input_name="image",
    )
    np.testing.assert_allclose(as_dict.per_sample, result.per_sample)
    with pytest.raises(ValueError, match="named by `input_name`"):
        model_randomisation(model, ([x, m], y), gradient_x_input)
