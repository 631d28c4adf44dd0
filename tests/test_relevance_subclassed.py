"""Custom layers and subclassed models are entered by tracing their `call`
into a graph of their sublayers (the same layer objects). Oracles: the
functional twin the test builds itself from those layer objects, central
finite differences of the FBI loss, and the error messages."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _finite_differences import central_difference, largest_and_median

from keras_attreg._logits import split_logits
from keras_attreg.attributions import deeplift_rescale, epsilon_lrp
from keras_attreg.relevance import relevance_map, relevance_pass
from keras_attreg.training import AttributionRegularizedModel
from keras_attreg.training.fbi import FBILoss

L = keras.layers


class ResidualBlock(L.Layer):
    """relu(x + Dense(Dropout(relu(Dense(x))))), written as a Layer subclass."""

    def __init__(self, units, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.inner = L.Dense(units, activation="relu", dtype=dtype)
        self.drop = L.Dropout(0.3, dtype=dtype)
        self.outer = L.Dense(units, dtype=dtype)
        self.add = L.Add(dtype=dtype)

    def call(self, x, training=None):
        h = self.outer(self.drop(self.inner(x), training=training))
        return keras.ops.relu(self.add([x, h]))


class Net(keras.Model):
    """A subclassed image classifier whose call only chains layers:
    convolution, BatchNorm (folded), ReLU, a residual block of its own, a
    constant shift, pooling and the logits."""

    def __init__(self, dtype=None):
        super().__init__(dtype=dtype)
        self.conv = L.Conv2D(4, 3, use_bias=False, dtype=dtype)
        self.norm = L.BatchNormalization(dtype=dtype)
        self.pool = L.GlobalAveragePooling2D(dtype=dtype)
        self.block = ResidualBlock(4, dtype=dtype)
        self.logits = L.Dense(3, dtype=dtype)

    def call(self, x, training=False):
        h = keras.ops.relu(self.norm(self.conv(x), training=training))
        h = self.block(self.pool(h), training=training)
        return self.logits(h + 0.5)


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.normal(size=tuple(variable.shape)) * 0.5
        if "variance" in variable.path:
            value = np.abs(value) + 0.5
        variable.assign(value)
    return model


def _net(dtype=None):
    net = Net(dtype=dtype)
    net(np.zeros((1, 8, 8, 3), dtype or "float32"))
    return _randomise(net)


def _twin(net):
    """The functional graph of `Net.call`, written out by the test over the
    same layer objects (the block inlined)."""
    x = keras.Input((8, 8, 3), dtype=net.conv.dtype)
    h = L.ReLU()(net.norm(net.conv(x)))
    h = net.pool(h)
    block = net.block
    h = L.ReLU()(block.add([h, block.outer(block.inner(h))]))
    return keras.Model(x, net.logits(h + 0.5))


def _images(seed=1, n=3):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype("float32")


def test_subclassed_model_maps_equal_those_of_its_functional_twin():
    """Oracle: the functional twin built by the test from the same layer
    objects: epsilon-LRP, DeepLIFT, `relevance_map` and the FBI loss's
    per-layer forward inputs and backward maps are the same."""
    net = _net()
    twin = _twin(net)
    x, targets = _images(), np.array([0, 2, 1])
    np.testing.assert_allclose(net(x).numpy(), twin(x).numpy(), rtol=1e-6)
    for method in (epsilon_lrp, deeplift_rescale):
        ours, theirs = method(net, x, targets).numpy(), method(twin, x, targets).numpy()
        assert np.abs(theirs).max() > 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(
        relevance_map(net, x, targets, epsilon=0.0).numpy(),
        relevance_map(twin, x, targets, epsilon=0.0).numpy(),
        rtol=1e-5,
        atol=1e-8,
    )
    x, targets = tf.constant(x), tf.constant(targets)
    ours = relevance_pass(split_logits(net), x, targets)
    theirs = relevance_pass(split_logits(twin), x, targets)
    assert ours.layers == theirs.layers  # the same objects: conv, dense x 3
    assert len(ours.layers) == 4
    for a, b in zip(ours.backward_maps, theirs.backward_maps, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-8)


def test_residual_block_layer_in_a_sequential_equals_the_inlined_twin():
    """Oracle: the functional model with the block's layers inlined by the
    test (same objects): equal maps, and at eps -> 0 on this ReLU network
    the relevance is x * dS_c/dx by the test's own tape."""
    block = ResidualBlock(6, name="block")
    first, last = L.Dense(6, activation="relu"), L.Dense(3)
    model = keras.Sequential([keras.Input((5,)), first, block, last])
    _randomise(model, seed=2)
    x = keras.Input((5,))
    h = first(x)
    inlined = keras.Model(
        x, last(L.ReLU()(block.add([h, block.outer(block.inner(h))])))
    )
    data = np.random.default_rng(3).normal(size=(4, 5)).astype("float32")
    targets = np.array([0, 1, 2, 1])
    for method in (epsilon_lrp, deeplift_rescale):
        ours, theirs = method(model, data, targets), method(inlined, data, targets)
        assert np.abs(theirs.numpy()).max() > 0
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-8)
    data = tf.constant(data)
    with tf.GradientTape() as tape:
        tape.watch(data)
        score = tf.reduce_sum(tf.gather(model(data), targets, axis=1, batch_dims=1))
    expected = (data * tape.gradient(score, data)).numpy()
    ours = relevance_map(model, data, targets, epsilon=0.0).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


def test_a_lambda_of_keras_ops_is_entered():
    """Oracle: the functional twin applying the same `keras.ops` to the same
    Dense layers' outputs."""
    first, last = L.Dense(4, activation="relu"), L.Dense(2)
    flip = L.Lambda(lambda t: keras.ops.flip(t, axis=-1) * 2.0)
    model = keras.Sequential([keras.Input((3,)), first, flip, last])
    x = keras.Input((3,))
    twin = keras.Model(x, last(keras.ops.flip(first(x), axis=-1) * 2.0))
    data = np.random.default_rng(9).normal(size=(2, 3)).astype("float32")
    expected = relevance_map(twin, data, [0, 1]).numpy()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(relevance_map(model, data, [0, 1]).numpy(), expected)


def test_fbi_trains_a_subclassed_model_through_fit():
    """Oracle: the weights before `fit` (every one moves, the block's sublayers
    included) and finiteness of the logged losses."""
    net = _net()
    model = AttributionRegularizedModel(net, FBILoss(lam=0.1))
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = [w.numpy() for w in net.trainable_weights]
    logs = model.fit(
        _images(4, n=8), np.arange(8) % 3, batch_size=4, epochs=2, verbose=0
    ).history
    assert np.all(np.isfinite(logs["loss"])) and np.all(np.isfinite(logs["fbi_loss"]))
    assert min(logs["fbi_loss"]) > 0
    for weight, before in zip(net.trainable_weights, start, strict=True):
        assert np.abs(weight.numpy() - before).max() > 0, weight.path


def test_fbi_weight_gradient_of_a_subclassed_model_matches_finite_differences():
    """Oracle: central finite differences (float64, h = 1e-6) of the reported
    FBI loss, for kernels of the model's own layers and of the block inside."""
    net = _net(dtype="float64")
    x = tf.constant(_images(5), tf.float64)
    targets = tf.constant([0, 2, 1])
    split, regularizer = split_logits(net), FBILoss(lam=0.5)

    def loss():
        return tf.reduce_mean(regularizer(split, x, targets, False)[1])

    kernels = [net.conv.kernel, net.block.inner.kernel, net.logits.kernel]
    with tf.GradientTape() as tape:
        value = loss()
    gradients = tape.gradient(value, kernels)
    for kernel, gradient in zip(kernels, gradients, strict=True):
        for index in largest_and_median(gradient.numpy()):
            expected = central_difference(loss, kernel, index)
            assert abs(expected) > 1e-8
            assert gradient.numpy()[index] == pytest.approx(expected, rel=1e-4)


class TokenEmbedding(L.Layer):
    """An Embedding and a LayerNormalization inside a custom layer (as
    keras-hub's TokenAndPositionEmbedding holds its Embedding)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = L.Embedding(20, 4)
        self.norm = L.LayerNormalization()

    def call(self, ids):
        return self.norm(self.embed(ids))


def test_an_embedding_inside_a_custom_layer_is_the_input_of_token_models():
    """Oracle: the functional twin over the same Embedding, LayerNorm and
    head: the token maps (relevance at the Embedding output, summed over its
    axis) are the same when the Embedding sits inside a custom layer."""
    tokens, pool, logits = TokenEmbedding(), L.GlobalAveragePooling1D(), L.Dense(2)
    ids = keras.Input((5,), dtype="int32")
    model = keras.Model(ids, logits(pool(tokens(ids))))
    _randomise(model, seed=7)
    twin_ids = keras.Input((5,), dtype="int32")
    twin = keras.Model(twin_ids, logits(pool(tokens.norm(tokens.embed(twin_ids)))))
    batch = np.random.default_rng(8).integers(1, 20, size=(3, 5)).astype("int32")
    for method in (epsilon_lrp, deeplift_rescale):
        ours, theirs = method(model, batch, [0, 1, 0]), method(twin, batch, [0, 1, 0])
        assert ours.shape == batch.shape and np.abs(theirs.numpy()).max() > 0
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-8)


class MaskedMean(L.Layer):
    """A mean over the real positions, read from the Keras mask its `call`
    takes (the mean over every position without one)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        if mask is None:
            return keras.ops.mean(x, axis=1)
        weights = keras.ops.cast(mask, x.dtype)[..., None]
        return keras.ops.sum(x * weights, axis=1) / keras.ops.sum(weights, axis=1)

    def compute_mask(self, x, mask=None):
        return None


def test_a_custom_layer_reading_its_own_mask_sees_it():
    """Oracle: the test's own tape through its own masked mean (padding, id 0,
    left out) after a bias-free ReLU head: epsilon-LRP at eps -> 0 and
    DeepLIFT-Rescale from the zero embedding both equal gradient x input at
    the Embedding output, summed per token (0 at padding). A pass that fed
    the layer no mask would average the padding in and differ."""
    keras.utils.set_random_seed(5)
    embedding = L.Embedding(20, 4, mask_zero=True)
    hidden = L.Dense(5, activation="relu", use_bias=False)
    head = L.Dense(2, use_bias=False)
    ids = keras.Input((6,), dtype="int32")
    model = keras.Model(ids, head(hidden(MaskedMean()(embedding(ids)))))
    batch = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])
    targets = np.array([0, 1, 1])
    e = tf.constant(embedding(batch))
    real = tf.cast(batch != 0, "float32")[..., None]
    with tf.GradientTape() as tape:
        tape.watch(e)
        pooled = tf.reduce_sum(e * real, 1) / tf.reduce_sum(real, 1)
        scores = tf.gather(head(hidden(pooled)), targets, axis=1, batch_dims=1)
        total = tf.reduce_sum(scores)
    expected = (e * tape.gradient(total, e)).numpy().sum(-1)
    expected = np.where(batch == 0, 0.0, expected)
    assert np.abs(expected).max() > 1e-4
    np.testing.assert_allclose(model(batch).numpy()[range(3), targets], scores)
    for maps in (
        epsilon_lrp(model, batch, targets, epsilon=1e-9),
        deeplift_rescale(model, batch, targets),
    ):
        np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-4, atol=1e-8)


class RawProjection(L.Layer):
    """x W with a weight of its own, by a raw TensorFlow operation."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 3), name="w")

    def call(self, x):
        return tf.matmul(x, self.w)


class RawScale(L.Layer):
    """No weights, but a raw TensorFlow operation."""

    def call(self, x):
        return tf.math.scalar_mul(2.0, x)


class Gram(L.Layer):
    """A product of two activations: an operation without a rule."""

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))


@pytest.mark.parametrize(
    ("layer", "shape", "match"),
    [
        (RawProjection(name="raw_w"), (4,), "'raw_w' of type RawProjection.*raw_w/w"),
        (RawScale(name="raw_op"), (4,), "'raw_op' of type RawScale.*symbolic"),
        (
            Gram(name="gram"),
            (3, 4),
            "'gram' of type Gram.*no rule for layer 'matmul' of type Matmul",
        ),
    ],
)
def test_layers_without_a_rule_raise_naming_them(layer, shape, match):
    """Oracle: the error message: the layer named, with its weight, or the
    operation inside it that has no rule."""
    model = keras.Sequential([keras.Input(shape), layer, L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match=match):
        relevance_map(model, np.ones((1, *shape), "float32"), [0])


def test_a_keras_pipeline_of_augmentations_is_entered():
    """Oracle: the same augmentation layers as a flat Sequential (their state
    restored to the same start): `keras.layers.Pipeline`, a Layer without a
    rule of its own, is entered and gives the same training-mode relevance."""
    flip, rotate = L.RandomFlip(seed=1), L.RandomRotation(0.2, seed=2)
    head = [L.Conv2D(2, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(2)]
    piped = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Pipeline([flip, rotate]), *head]
    )
    flat = keras.Sequential([keras.Input((8, 8, 3)), flip, rotate, *head])
    state = [v.numpy() for v in piped.non_trainable_variables]
    x, targets = tf.constant(_images(6, n=2)), tf.constant([0, 1])
    ours = relevance_pass(split_logits(piped), x, targets, training=True)
    for variable, value in zip(piped.non_trainable_variables, state, strict=True):
        variable.assign(value)
    theirs = relevance_pass(split_logits(flat), x, targets, training=True)
    assert np.abs(theirs.input_relevance.numpy()).max() > 0
    np.testing.assert_allclose(
        ours.input_relevance.numpy(), theirs.input_relevance.numpy(), rtol=1e-6
    )
