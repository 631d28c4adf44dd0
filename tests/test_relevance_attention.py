"""CP-LRP through MultiHeadAttention and LayerNormalization (Ali et al. 2022),
against the test's own tape on a forward re-written here with tf ops, with
`tf.stop_gradient` on the attention probabilities and on LayerNorm's std."""

import inspect
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from _finite_differences import central_difference
from _subprocess import run_json

from keras_attreg._logits import split_logits
from keras_attreg.attributions import deeplift_rescale, epsilon_lrp
from keras_attreg.relevance import (
    EpsilonRule,
    GradientRule,
    register_rule,
    relevance_map,
)
from keras_attreg.training import AttributionRegularizedModel
from keras_attreg.training.fbi import FBILoss

L = keras.layers
T, VOCAB, DIM = 6, 20, 8


@keras.saving.register_keras_serializable(package="keras_attreg_tests")
class AddPosition(L.Layer):
    """A learned position embedding added to the patches (x + w)."""

    def build(self, shape):
        self.position = self.add_weight(shape=tuple(shape[1:]), name="position")

    def call(self, x):
        return x + self.position


@pytest.fixture(autouse=True, scope="module")
def _add_position_rule():
    with register_rule(AddPosition, EpsilonRule(0.0)):  # x + w: w is a bias
        yield


def _block(x, i, heads=2, bias=True, dtype=None):
    kw = {} if dtype is None else {"dtype": dtype}
    dim = x.shape[-1]
    h = L.MultiHeadAttention(heads, 4, use_bias=bias, name=f"mha{i}", **kw)(x, x)
    x = L.LayerNormalization(center=bias, name=f"ln{i}a", **kw)(L.Add(**kw)([x, h]))
    h = L.Dense(2 * dim, "relu", use_bias=bias, name=f"ffn{i}a", **kw)(x)
    h = L.Dense(dim, use_bias=bias, name=f"ffn{i}b", **kw)(h)
    return L.LayerNormalization(center=bias, name=f"ln{i}b", **kw)(L.Add(**kw)([x, h]))


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(size=tuple(variable.shape)) * 0.4)
    return model


def _text_model(bias=True, dtype=None, mask_zero=False):
    kw = {} if dtype is None else {"dtype": dtype}
    ids = keras.Input((T,), dtype="int32")
    x = L.Embedding(VOCAB, DIM, mask_zero=mask_zero, name="embedding", **kw)(ids)
    for i in range(2):
        x = _block(x, i, bias=bias, dtype=dtype)
    x = L.GlobalAveragePooling1D(**kw)(x)
    return _randomise(
        keras.Model(ids, L.Dense(3, use_bias=bias, name="logits", **kw)(x))
    )


def _vit(bias=True):
    image = keras.Input((8, 8, 3))
    x = L.Conv2D(DIM, 4, strides=4, use_bias=bias, name="patches")(image)
    x = AddPosition(name="position")(L.Reshape((4, DIM))(x))
    for i in range(2):
        x = _block(x, i, heads=3, bias=bias)
    x = L.GlobalAveragePooling1D()(x)
    return _randomise(keras.Model(image, L.Dense(3, use_bias=bias, name="logits")(x)))


def _own_mha(layer, x):
    """softmax(Q K^T / sqrt(d_k)) V, projections and output by hand,
    probabilities under stop_gradient."""

    def project(dense, a):
        y = tf.einsum("btd,dhk->bthk", a, dense.kernel)
        return y + dense.bias if dense.bias is not None else y

    q = project(layer.query_dense, x) / np.sqrt(layer.key_dim)
    k, v = project(layer.key_dense, x), project(layer.value_dense, x)
    p = tf.stop_gradient(tf.nn.softmax(tf.einsum("bshk,bthk->bhts", k, q), -1))
    out = tf.einsum(
        "bthv,hvd->btd", tf.einsum("bhts,bshv->bthv", p, v), layer.output_dense.kernel
    )
    bias = layer.output_dense.bias
    return out if bias is None else out + bias


def _own_ln(layer, x):
    """(x - mean) / stop_gradient(sqrt(var + eps)) * gamma + beta."""
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = (x - mean) / tf.stop_gradient(tf.sqrt(var + layer.epsilon)) * layer.gamma
    return y + layer.beta if layer.center else y


def _own_head(model, x):
    """The CP-modified forward from the first block's input to the logits."""
    for i in range(2):
        ln_a, ln_b = model.get_layer(f"ln{i}a"), model.get_layer(f"ln{i}b")
        x = _own_ln(ln_a, x + _own_mha(model.get_layer(f"mha{i}"), x))
        h = model.get_layer(f"ffn{i}b")(model.get_layer(f"ffn{i}a")(x))
        x = _own_ln(ln_b, x + h)
    return model.get_layer("logits")(tf.reduce_mean(x, axis=1))


def _x_times_gradient(forward, x, targets):
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.reduce_sum(tf.gather(forward(x), targets, axis=1, batch_dims=1))
    return (x * tape.gradient(score, x)).numpy(), score.numpy()


def _ids(seed=1):
    return np.random.default_rng(seed).integers(1, VOCAB, size=(4, T)).astype("int32")


def test_cp_lrp_is_gradient_times_input_with_frozen_probabilities_on_text():
    """Oracle: e * dS_c/de by the test's own tape through `_own_head`, the
    two blocks re-written with stop_gradient on softmax(QK^T) and LN's std,
    summed over the embedding axis (token relevance)."""
    model = _text_model()
    ids, targets = _ids(), np.array([0, 1, 2, 1])
    e = tf.constant(model.get_layer("embedding")(ids))
    expected, _ = _x_times_gradient(lambda a: _own_head(model, a), e, targets)
    ours = epsilon_lrp(model, ids, targets, epsilon=1e-9).numpy()
    assert ours.shape == (4, T)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(ours, expected.sum(-1), rtol=1e-3, atol=1e-6)


def test_cp_lrp_is_gradient_times_input_with_frozen_probabilities_on_a_vit():
    """Oracle: the test's own tape, image -> patches (Conv2D) + position, then
    `_own_head` with the probabilities and LN's std under stop_gradient."""
    model = _vit()
    rng = np.random.default_rng(2)
    images = tf.constant(rng.normal(size=(3, 8, 8, 3)), tf.float32)
    targets = np.array([2, 0, 1])

    def forward(a):
        patches = tf.reshape(model.get_layer("patches")(a), (-1, 4, DIM))
        return _own_head(model, patches + model.get_layer("position").position)

    expected, _ = _x_times_gradient(forward, images, targets)
    ours = relevance_map(model, images, targets, epsilon=1e-9).numpy()
    assert ours.shape == images.shape
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5)


class ClassToken(L.Layer):
    """A learned class token put before the patches, as ViTs do:
    concat([w, x], axis=1), w one (1, 1, d) weight tiled over the batch."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), name="token")

    def call(self, x):
        batch = keras.ops.shape(x)[0]
        token = keras.ops.tile(self.token, (batch, 1, 1))
        return keras.ops.concatenate([token, x], axis=1)

    def compute_output_shape(self, shape):  # Keras 3.8 cannot infer it
        return (shape[0], shape[1] + 1, shape[2])


def _class_token_vit():
    image = keras.Input((8, 8, 3))
    x = L.Conv2D(DIM, 4, strides=4, name="patches")(image)
    x = ClassToken(name="class_token")(L.Reshape((4, DIM))(x))
    x = AddPosition(name="position")(x)
    for i in range(2):
        x = _block(x, i, heads=3)
    return _randomise(keras.Model(image, L.Dense(3, name="logits")(x[:, 0])))


def test_class_token_vit_refuses_without_a_rule_and_is_gradient_times_input_with_one():
    """A class-token layer holds a weight of its own, so the pass refuses it
    naming the layer; registered with `GradientRule` (relevance routed along
    the concatenation: the token's share is dropped, as a bias's is), CP-LRP
    on the class token's logits equals the test's own tape: image -> patches
    -> concat(token) + position -> the two blocks re-written with the
    probabilities and LN's std under stop_gradient -> the logits of token 0."""
    model = _class_token_vit()
    rng = np.random.default_rng(3)
    images = tf.constant(rng.normal(size=(3, 8, 8, 3)), tf.float32)
    targets = np.array([1, 2, 0])
    with pytest.raises(
        ValueError, match="'class_token' of type ClassToken.*GradientRule"
    ):
        relevance_map(model, images, targets)

    def forward(a):
        patches = tf.reshape(model.get_layer("patches")(a), (-1, 4, DIM))
        token = tf.tile(model.get_layer("class_token").token, (tf.shape(a)[0], 1, 1))
        x = tf.concat([token, patches], 1) + model.get_layer("position").position
        for i in range(2):
            ln_a, ln_b = model.get_layer(f"ln{i}a"), model.get_layer(f"ln{i}b")
            x = _own_ln(ln_a, x + _own_mha(model.get_layer(f"mha{i}"), x))
            h = model.get_layer(f"ffn{i}b")(model.get_layer(f"ffn{i}a")(x))
            x = _own_ln(ln_b, x + h)
        return model.get_layer("logits")(x[:, 0])

    expected, _ = _x_times_gradient(forward, images, targets)
    with register_rule(ClassToken, GradientRule()):
        ours = relevance_map(model, images, targets, epsilon=1e-9).numpy()
        fbi = AttributionRegularizedModel(model, FBILoss(lam=0.5))
        fbi.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        logs = fbi.fit(images, targets, batch_size=3, verbose=0).history
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5)
    assert np.isfinite(logs["fbi_loss"][0]) and logs["fbi_loss"][0] > 0


def test_cp_lrp_conserves_relevance_without_biases():
    """Oracle: the logit S_c of the model's own forward; no biases (nor LN
    shifts) and eps -> 0, so sum(R) = S_c (Ali et al. Sec. 3)."""
    model = _text_model(bias=False)
    ids, targets = _ids(3), np.array([2, 2, 0, 1])
    logits = model(ids).numpy()[np.arange(4), targets]
    ours = epsilon_lrp(model, ids, targets, epsilon=1e-9).numpy()
    assert np.abs(logits).min() > 1e-2
    np.testing.assert_allclose(ours.sum(axis=1), logits, rtol=1e-4)
    vit = _vit(bias=False)
    vit.get_layer("position").position.assign(tf.zeros((4, DIM)))  # a bias
    images = tf.constant(np.random.default_rng(4).normal(size=(2, 8, 8, 3)), "float32")
    scores = vit(images).numpy()[[0, 1], [1, 2]]
    r = relevance_map(vit, images, [1, 2], epsilon=1e-9).numpy()
    np.testing.assert_allclose(r.reshape(2, -1).sum(1), scores, rtol=1e-4)


def test_fbi_weight_gradient_through_attention_matches_finite_differences():
    """Oracle: central finite differences (float64, h = 1e-6) of the reported
    FBI loss, for entries of the query and key kernels (which act on the
    relevance only through the attention probabilities) and the value kernel."""
    model = _text_model(dtype="float64")
    ids, targets = tf.constant(_ids(5)), tf.constant([0, 1, 2, 0])
    split = split_logits(model)
    regularizer = FBILoss(lam=0.5, epsilon=1e-3)

    def loss():
        return tf.reduce_mean(regularizer(split, ids, targets, False)[1])

    mha = model.get_layer("mha0")
    kernels = [mha.query_dense.kernel, mha.key_dense.kernel, mha.value_dense.kernel]
    with tf.GradientTape() as tape:
        value = loss()
    gradients = tape.gradient(value, kernels)
    for kernel, gradient in zip(kernels, gradients, strict=True):
        for index in [(0, 0, 0), (3, 1, 2)]:
            expected = central_difference(loss, kernel, index)
            assert abs(expected) > 1e-6
            assert gradient.numpy()[index] == pytest.approx(expected, rel=1e-4)


def _mha_model(shape, attend, int_input=False):
    x = keras.Input(shape, dtype="int32" if int_input else "float32")
    y = attend(x)
    y = L.Flatten()(y)
    return _randomise(keras.Model(x, L.Dense(3, name="logits")(y)))


VARIANTS = {
    "padding_mask": ((T,), lambda ids: _masked_attention(ids)),
    "causal": (
        (T, DIM),
        lambda x: L.MultiHeadAttention(2, 4)(x, x, use_causal_mask=True),
    ),
    "cross_attention": (
        (T, DIM),
        lambda x: L.MultiHeadAttention(2, 4)(L.Dense(5)(x)[:, :2], L.Dense(7)(x)),
    ),
    "key_differs": (
        (T, DIM),
        lambda x: L.MultiHeadAttention(2, 4)(x, x, key=L.Dense(DIM)(x)),
    ),
    "value_dim": ((T, DIM), lambda x: L.MultiHeadAttention(3, 2, value_dim=5)(x, x)),
    "no_bias": ((T, DIM), lambda x: L.MultiHeadAttention(1, 4, use_bias=False)(x, x)),
    "output_shape": (
        (T, DIM),
        lambda x: L.MultiHeadAttention(4, 2, output_shape=(3,))(x, x),
    ),
    "patches_2d": (
        (3, 4, DIM),
        lambda x: L.MultiHeadAttention(2, 4, attention_axes=(1, 2))(x, x),
    ),
    "dropout_in_inference": (
        (T, DIM),
        lambda x: L.MultiHeadAttention(2, 4, dropout=0.3)(x, x),
    ),
}


def _masked_attention(ids):
    e = L.Embedding(VOCAB, DIM, mask_zero=True)(ids)
    return L.LayerNormalization()(e + L.MultiHeadAttention(2, 4)(e, e))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_give_finite_maps_of_the_input_shape(name):
    """Oracle: the input's own shape, finiteness, and the property of CP-LRP
    that the total relevance is S_c up to what biases absorb (here: nonzero
    and finite), for every supported MultiHeadAttention setting."""
    shape, attend = VARIANTS[name]
    model = _mha_model(shape, attend, int_input=name == "padding_mask")
    rng = np.random.default_rng(6)
    if name == "padding_mask":
        x = _ids(6)
        x[:, 4:] = 0
    else:
        x = rng.normal(size=(2, *shape)).astype("float32")
    r = epsilon_lrp(model, x, [0, 2] if len(x) == 2 else [0, 1, 2, 0]).numpy()
    assert r.shape == x.shape
    assert np.all(np.isfinite(r)) and np.abs(r).max() > 0
    if name == "padding_mask":
        assert np.all(r[:, 4:] == 0)


def test_unsupported_settings_raise_naming_the_layer_and_the_setting():
    """Oracle: the error message (layer name and the setting received)."""
    x = keras.Input((T, DIM))
    if "use_gate" in inspect.signature(L.MultiHeadAttention).parameters:
        y = L.MultiHeadAttention(2, 4, use_gate=True, name="gated")(x, x)
        model = keras.Model(x, L.Dense(2)(L.Flatten()(y)))
        with pytest.raises(ValueError, match="'gated'.*use_gate=True"):
            relevance_map(model, np.ones((1, T, DIM), "float32"), [0])
    attention = L.MultiHeadAttention(2, 4, name="scored")
    y, scores = attention(x, x, return_attention_scores=True)
    model = keras.Model(x, L.Dense(2)(L.Flatten()(y)))
    with pytest.raises(ValueError, match="'scored'.*return_attention_scores=True"):
        relevance_map(model, np.ones((1, T, DIM), "float32"), [0])


def test_deeplift_through_attention_uses_the_frozen_probabilities():
    """Oracle: (x - 0) * dS_c/dx by the test's own tape through `_own_mha`
    (probabilities under stop_gradient): after one attention layer and a
    Dense, DeepLIFT's multipliers are the gradient of that linearisation."""
    x = keras.Input((T, DIM))
    attention = L.MultiHeadAttention(2, 4, name="mha")
    model = _randomise(keras.Model(x, L.Dense(3, name="logits")(attention(x, x))[:, 0]))
    values = tf.constant(np.random.default_rng(7).normal(size=(2, T, DIM)), "float32")

    def forward(a):
        return model.get_layer("logits")(_own_mha(attention, a))[:, 0]

    expected, _ = _x_times_gradient(forward, values, [1, 2])
    ours = deeplift_rescale(model, values, [1, 2]).numpy()
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-6)


def test_relevance_in_tf_function_and_under_mixed_precision():
    """Oracle: the eager float32 map of the same weights (`tf.function` must
    give it exactly, mixed_float16 within float16 rounding)."""
    model = _text_model(mask_zero=True)
    ids = _ids(8)
    ids[:, 4:] = 0
    targets = np.array([0, 1, 2, 1])
    eager = epsilon_lrp(model, ids, targets).numpy()
    compiled = tf.function(lambda i: epsilon_lrp(model, i, targets))(ids).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-7)
    assert np.all(eager[:, 4:] == 0) and np.abs(eager).max() > 1e-4
    half = _text_model(dtype="mixed_float16", mask_zero=True)
    half.set_weights(model.get_weights())
    ours = epsilon_lrp(half, ids, targets).numpy()
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, eager, rtol=0.1, atol=0.05 * np.abs(eager).max())


def test_fbi_trains_a_text_transformer_in_a_compiled_step():
    """Oracle: the same compiled `fit` step with lam = 0 (the task loss only)
    from the same weights: with lam > 0 the FBI loss is logged and finite and
    the query kernel, which the FBI loss reaches through the attention
    probabilities, moves beyond the task part of the step: SGD moves it by
    -(1 - lam) dL_task/dW - lam dL_FBI/dW, so step - (1 - lam) task_step is
    the FBI part and must not vanish."""
    ids, y = _ids(9), np.array([0, 1, 2, 1])
    ids[:, 5:] = 0
    steps = []
    for lam in (0.0, 0.5):
        model = _text_model(mask_zero=True)
        query = model.get_layer("mha0").query_dense.kernel
        start = query.numpy().copy()
        wrapped = AttributionRegularizedModel(model, FBILoss(lam=lam))
        wrapped.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        logs = wrapped.fit(ids, y, batch_size=4, epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0]) and np.isfinite(logs["fbi_loss"][0])
        steps.append(query.numpy() - start)
    assert logs["fbi_loss"][0] > 0
    fbi_part = steps[1] - 0.5 * steps[0]
    assert np.abs(fbi_part).max() > 1e-3 * np.abs(steps[0]).max()


@pytest.mark.slow
def test_fbi_through_attention_under_mirrored_strategy_matches_one_device():
    """Two logical CPUs, one global batch: a text transformer (masked
    attention, LayerNorm, a learned position term) trained one SGD step with
    FBI. Oracle: the same model on one device: the logged loss and FBI loss
    and the weight change (= lr x gradient) agree within float tolerance."""
    script = textwrap.dedent(
        """
        import json, numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras_attreg as kar
        L = keras.layers

        def build():
            ids = keras.Input((6,), dtype="int32")
            e = L.Embedding(20, 8, mask_zero=True)(ids)
            h = L.MultiHeadAttention(2, 4)(e, e)
            x = L.LayerNormalization()(L.Add()([e, h]))
            f = L.Dense(8, activation="relu")(L.Dense(16, activation="relu")(x))
            x = L.LayerNormalization()(L.Add()([x, f]))
            return keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(x)))

        def run(strategy):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                base = build()
                model = kar.AttributionRegularizedModel(base, kar.FBILoss(0.5))
                model.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            rng = np.random.default_rng(0)
            ids = rng.integers(1, 20, size=(8, 6))
            ids[:, 4:] = 0
            y = rng.integers(0, 2, 8)
            before = [w.copy() for w in base.get_weights()]
            logs = model.fit(ids, y, batch_size=8, shuffle=False, verbose=0).history
            steps = [b - a for a, b in zip(base.get_weights(), before)]
            return {k: v[0] for k, v in logs.items()}, steps

        single_logs, single = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        mirrored_logs, mirrored = run(
            tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        print(json.dumps({
            "single": single_logs, "mirrored": mirrored_logs,
            "step_diff": max(float(np.abs(a - b).max())
                             for a, b in zip(single, mirrored)),
            "step_max": max(float(np.abs(a).max()) for a in single)}))
        """
    )
    result = run_json(script)
    for key in ("loss", "fbi_loss"):
        np.testing.assert_allclose(
            result["mirrored"][key], result["single"][key], rtol=1e-5
        )
    assert result["step_max"] > 1e-3
    assert result["step_diff"] < 1e-5
