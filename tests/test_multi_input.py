"""Models with several inputs (an image and a metadata vector): each input's
map against the test's own `tf.GradientTape` (and its own midpoint-rule loop
for integrated gradients); list, tuple, dict and dataset forms agree."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from _imputation import dense_imputation

import keras_attreg as kar
from keras_attreg.attributions import (
    deeplift_rescale,
    epsilon_lrp,
    gradient_x_input,
    integrated_gradients,
    occlusion,
    saliency,
    smoothgrad,
)
from keras_attreg.evaluation import deletion, infidelity, road, sensitivity_n
from keras_attreg.relevance import relevance_map

RNG = np.random.default_rng(0)


def _image_meta_model(dict_inputs=False, activation="tanh", use_bias=True):
    """An image + metadata classifier ending in a softmax; returns the model
    and its logits model (same layers)."""
    image = keras.Input((5, 5, 2), name="image", dtype="float64")
    meta = keras.Input((3,), name="meta", dtype="float64")
    options = {"activation": activation, "use_bias": use_bias, "dtype": "float64"}
    h = keras.layers.Conv2D(3, 3, **options)(image)
    h = keras.layers.Flatten(dtype="float64")(h)
    m = keras.layers.Dense(4, **options)(meta)
    h = keras.layers.Concatenate(dtype="float64")([h, m])
    h = keras.layers.Dense(6, **options)(h)
    logits = keras.layers.Dense(3, use_bias=use_bias, dtype="float64")(h)
    outputs = keras.layers.Softmax(dtype="float64")(logits)
    inputs = {"meta": meta, "image": image} if dict_inputs else [image, meta]
    return keras.Model(inputs, outputs), keras.Model(inputs, logits)


def _batch(count=4):
    image = RNG.normal(size=(count, 5, 5, 2))
    meta = RNG.normal(size=(count, 3))
    return image, meta, np.arange(count) % 3


def _tape_gradients(logits_model, image, meta, targets):
    """The test's own dS_c/dx_k for both inputs."""
    image, meta = tf.constant(image), tf.constant(meta)
    with tf.GradientTape() as tape:
        tape.watch([image, meta])
        z = logits_model([image, meta])
        score = tf.reduce_sum(tf.gather(z, targets, axis=1, batch_dims=1))
    return [g.numpy() for g in tape.gradient(score, [image, meta])]


def test_saliency_and_gradient_x_input_match_the_tape_per_input():
    """Oracle: the test's own tape, dS_c/dx_k and x_k * dS_c/dx_k."""
    model, logits = _image_meta_model()
    image, meta, targets = _batch()
    d_image, d_meta = _tape_gradients(logits, image, meta, targets)
    assert np.abs(d_meta).min() > 0  # the metadata input matters
    signed = saliency(model, [image, meta], targets, absolute=False)
    np.testing.assert_allclose(signed[0], d_image, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(signed[1], d_meta, rtol=1e-9, atol=1e-12)
    absolute = saliency(model, [image, meta], targets)
    np.testing.assert_allclose(absolute[1], np.abs(d_meta), rtol=1e-9)
    maps = gradient_x_input(model, [image, meta], targets)
    np.testing.assert_allclose(maps[0], image * d_image, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(maps[1], meta * d_meta, rtol=1e-9, atol=1e-12)


def test_list_tuple_dict_and_dataset_forms_agree_and_keep_their_structure():
    """Oracle: the list form's maps (themselves checked against the tape
    above); each form comes back in its own structure."""
    model, _ = _image_meta_model()
    image, meta, targets = _batch(5)
    as_list = gradient_x_input(model, [image, meta], targets, batch_size=2)
    as_tuple = gradient_x_input(model, (image, meta), targets, batch_size=3)
    as_dict = gradient_x_input(model, {"meta": meta, "image": image}, targets)
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": image, "meta": meta}, targets)
    ).batch(2)
    from_dataset = gradient_x_input(model, dataset)
    assert isinstance(as_list, list) and isinstance(as_tuple, tuple)
    assert list(as_dict) == ["meta", "image"]
    for maps in (as_tuple, [as_dict["image"], as_dict["meta"]]):
        np.testing.assert_allclose(maps[0], as_list[0], rtol=1e-12)
        np.testing.assert_allclose(maps[1], as_list[1], rtol=1e-12)
    np.testing.assert_allclose(from_dataset["image"], as_list[0], rtol=1e-12)
    np.testing.assert_allclose(from_dataset["meta"], as_list[1], rtol=1e-12)


def test_a_model_built_on_a_dict_takes_lists_in_input_order():
    """Oracle: the test's own tape on the dict-built model (its inputs are
    ordered by name: image, meta)."""
    model, logits = _image_meta_model(dict_inputs=True)
    image, meta, targets = _batch()
    z_grads = _tape_gradients(
        keras.Model([logits.inputs[0], logits.inputs[1]], logits.outputs),
        image,
        meta,
        targets,
    )
    maps = saliency(model, [image, meta], targets, absolute=False)
    named = saliency(model, {"image": image, "meta": meta}, targets, absolute=False)
    for index, name in enumerate(("image", "meta")):
        np.testing.assert_allclose(maps[index], z_grads[index], rtol=1e-9)
        np.testing.assert_allclose(named[name], z_grads[index], rtol=1e-9)


@pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict")
def test_a_model_built_on_a_dict_is_fed_by_its_own_keys():
    """Oracle: the test's own tape; the keys of the dict the model was built
    on ("pix", "tab") differ from its inputs' names, and are what `fit` and
    the attributions take (a list follows the sorted keys)."""
    _, logits = _image_meta_model()
    image, meta = logits.inputs
    keyed = keras.Model({"tab": meta, "pix": image}, logits.outputs)
    x_image, x_meta, targets = _batch(2)
    d_image, d_meta = _tape_gradients(logits, x_image, x_meta, targets)
    maps = saliency(keyed, {"tab": x_meta, "pix": x_image}, targets, absolute=False)
    listed = saliency(keyed, [x_image, x_meta], targets, absolute=False)
    np.testing.assert_allclose(maps["pix"], d_image, rtol=1e-9)
    np.testing.assert_allclose(maps["tab"], d_meta, rtol=1e-9)
    np.testing.assert_allclose(listed[1], d_meta, rtol=1e-9)


def test_integrated_gradients_with_a_baseline_per_input():
    """Oracle: the test's own midpoint-rule sum of tape gradients along the
    straight path from (b_image, b_meta) to (image, meta)."""
    model, logits = _image_meta_model()
    image, meta, targets = _batch(3)
    b_image, b_meta = 0.0, np.array([0.5, -1.0, 2.0])
    steps = 8
    total = [np.zeros_like(image), np.zeros_like(meta)]
    for k in range(steps):
        alpha = (k + 0.5) / steps
        grads = _tape_gradients(
            logits,
            b_image + alpha * (image - b_image),
            b_meta + alpha * (meta - b_meta),
            targets,
        )
        total = [t + g for t, g in zip(total, grads, strict=True)]
    expected = [
        (image - b_image) * total[0] / steps,
        (meta - b_meta) * total[1] / steps,
    ]
    maps = integrated_gradients(
        model,
        {"image": image, "meta": meta},
        targets,
        baseline={"image": b_image, "meta": b_meta},
        steps=steps,
        batch_size=5,
    )
    np.testing.assert_allclose(maps["image"], expected[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(maps["meta"], expected[1], rtol=1e-9, atol=1e-12)
    listed = integrated_gradients(
        model, [image, meta], targets, baseline=[b_image, b_meta], steps=steps
    )
    np.testing.assert_allclose(listed[1], expected[1], rtol=1e-9, atol=1e-12)


def test_smoothgrad_per_input_on_a_linear_model():
    """Oracle: on a linear model dS_c/dx_k is the constant weight vector, so
    the signed SmoothGrad of saliency is the test's own tape gradient for any
    noise; gradient x input with no noise is x_k * dS_c/dx_k."""
    image = keras.Input((4, 4, 1), name="image", dtype="float64")
    meta = keras.Input((3,), name="meta", dtype="float64")
    h = keras.layers.Concatenate(dtype="float64")(
        [keras.layers.Flatten(dtype="float64")(image), meta]
    )
    model = keras.Model([image, meta], keras.layers.Dense(2, dtype="float64")(h))
    x_image, x_meta = RNG.normal(size=(3, 4, 4, 1)), RNG.normal(size=(3, 3))
    targets = np.array([0, 1, 1])
    d_image, d_meta = _tape_gradients(model, x_image, x_meta, targets)
    signed = functools.partial(saliency, absolute=False)
    maps = smoothgrad(model, [x_image, x_meta], targets, samples=4, method=signed)
    np.testing.assert_allclose(maps[0], d_image, rtol=1e-9)
    np.testing.assert_allclose(maps[1], d_meta, rtol=1e-9)
    noiseless = smoothgrad(
        model,
        {"meta": x_meta, "image": x_image},
        targets,
        samples=2,
        noise=0.0,
        method=gradient_x_input,
    )
    np.testing.assert_allclose(noiseless["meta"], x_meta * d_meta, rtol=1e-9)
    np.testing.assert_allclose(noiseless["image"], x_image * d_image, rtol=1e-9)


def test_smoothgrad_adds_noise_to_every_input():
    """Oracle: the noise-free gradient x input (the test's own tape): with
    noise, each input's map moves away from it, and list and dict agree."""
    model, logits = _image_meta_model()
    image, meta, targets = _batch(2)
    d_image, d_meta = _tape_gradients(logits, image, meta, targets)
    listed = smoothgrad(
        model, [image, meta], targets, samples=3, method=gradient_x_input
    )
    named = smoothgrad(
        model,
        {"image": image, "meta": meta},
        targets,
        samples=3,
        method=gradient_x_input,
    )
    assert not np.allclose(listed[0], image * d_image, rtol=1e-3)
    assert not np.allclose(listed[1], meta * d_meta, rtol=1e-3)
    np.testing.assert_allclose(named["image"], listed[0], rtol=1e-12)
    np.testing.assert_allclose(named["meta"], listed[1], rtol=1e-12)


def test_occlusion_of_each_input_matches_a_naive_loop():
    """Oracle: the test's own loop of forward passes: each 2x2 image patch,
    then each metadata feature alone, set to its baseline with the other
    input held; the drop of S_c is the map there (the patches tile the
    image, so each pixel has one)."""
    base = _dense_image_meta_model()
    logits = keras.Model(base.inputs, base.layers[-1].output)
    image, meta, targets = _float_batch(3)
    b_meta = np.array([0.5, -1.0, 2.0], "float32")

    def score(image, meta):
        logits.layers[-1].activation = keras.activations.linear
        z = logits([image, meta]).numpy()
        logits.layers[-1].activation = keras.activations.softmax
        return z[np.arange(3), targets]

    full = score(image, meta)
    expected_image, expected_meta = np.zeros_like(image), np.zeros_like(meta)
    for row in range(0, 4, 2):
        for col in range(0, 4, 2):
            hidden = image.copy()
            hidden[:, row : row + 2, col : col + 2] = 0.0
            drop = full - score(hidden, meta)
            expected_image[:, row : row + 2, col : col + 2] = drop[:, None, None, None]
    for feature in range(3):
        hidden = meta.copy()
        hidden[:, feature] = b_meta[feature]
        expected_meta[:, feature] = full - score(image, hidden)
    maps = occlusion(
        base,
        {"image": image, "meta": meta},
        targets,
        patch_size={"image": 2},
        baseline={"image": 0.0, "meta": b_meta},
        batch_size=5,
    )
    np.testing.assert_allclose(maps["image"], expected_image, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps["meta"], expected_meta, rtol=1e-4, atol=1e-5)
    assert np.abs(expected_meta).max() > 1e-3


def test_epsilon_lrp_and_deeplift_equal_gradient_x_input_on_a_bias_free_relu_net():
    """Oracle: the test's own tape, x_k * dS_c/dx_k: epsilon-LRP (and
    relevance_map) at eps -> 0 and DeepLIFT-Rescale from a zero baseline
    (z_ref = 0 at every unit, so f(z)/z = f'(z)) both equal it on a
    bias-free ReLU network."""
    model, logits = _image_meta_model(activation="relu", use_bias=False)
    image, meta, targets = _batch()
    d_image, d_meta = _tape_gradients(logits, image, meta, targets)
    assert np.abs(meta * d_meta).max() > 0
    lrp = epsilon_lrp(model, {"image": image, "meta": meta}, targets, epsilon=1e-12)
    lift = deeplift_rescale(model, [image, meta], targets)
    mapped = relevance_map(model, (image, meta), targets, epsilon=1e-12)
    assert isinstance(mapped, tuple)
    for maps in ([lrp["image"], lrp["meta"]], lift, mapped):
        np.testing.assert_allclose(maps[0], image * d_image, rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(maps[1], meta * d_meta, rtol=1e-6, atol=1e-10)


def test_deeplift_sums_to_delta_over_both_inputs():
    """Oracle: summation to delta, S_c(x) - S_c(b) from the test's own forward
    passes, with a different baseline per input and biases."""
    model, logits = _image_meta_model(activation="relu")
    image, meta, targets = _batch(3)
    b_image, b_meta = np.full((5, 5, 2), 0.3), np.array([1.0, -0.5, 0.0])
    maps = deeplift_rescale(model, [image, meta], targets, baseline=(b_image, b_meta))
    rows = np.arange(3)
    delta = (
        logits([image, meta]).numpy()[rows, targets]
        - logits(
            [np.broadcast_to(b_image, image.shape), np.broadcast_to(b_meta, meta.shape)]
        ).numpy()[rows, targets]
    )
    total = maps[0].numpy().sum(axis=(1, 2, 3)) + maps[1].numpy().sum(axis=1)
    np.testing.assert_allclose(total, delta, rtol=1e-9, atol=1e-12)
    assert np.abs(maps[1]).max() > 0


def test_single_array_missing_key_and_token_input_are_refused_by_name():
    """Oracle: the hand-written expectation of each refusal."""
    model, _ = _image_meta_model()
    image, meta, targets = _batch(2)
    with pytest.raises(ValueError, match=r"2 inputs \['image', 'meta'\]"):
        saliency(model, image, targets)
    with pytest.raises(ValueError, match="keyed by the input names"):
        saliency(model, {"image": image}, targets)
    with pytest.raises(ValueError, match=r"baseline\['meta'\]"):
        integrated_gradients(model, [image, meta], targets, baseline=[0.0, np.ones(5)])
    with pytest.raises(ValueError, match="keyed by input names"):
        occlusion(model, [image, meta], targets, patch_size={"text": 2})
    ids = keras.Input((4,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(9, 3)(ids))
    text = keras.Model(
        [ids, values], keras.layers.Dense(2)(keras.layers.Concatenate()([h, values]))
    )
    with pytest.raises(ValueError, match=r"Cannot attribute input\(s\) \['ids'\]"):
        occlusion(text, [np.ones((2, 4)), np.ones((2, 2))], [0, 1])


def _dense_image_meta_model():
    """image (4, 4, 1) and meta (3,), flattened and concatenated, then two
    Dense layers: a model with a single-input functional twin."""
    image = keras.Input((4, 4, 1), name="image")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
    h = keras.layers.Dense(5, activation="tanh")(h)
    return keras.Model([image, meta], keras.layers.Dense(3, activation="softmax")(h))


def _float_batch(count=6):
    image = RNG.normal(size=(count, 4, 4, 1)).astype("float32")
    meta = RNG.normal(size=(count, 3)).astype("float32")
    return image, meta, np.arange(count) % 3


@pytest.mark.parametrize("names", [None, ["meta"], ["meta", "image"]])
def test_l1_penalty_over_named_inputs_matches_the_tape(names):
    """Oracle: the test's own tape on the logits before the step:
    penalty = mean_b sum_{k in names} ||dS_c/dx_k||_1 (every float input by
    default), and loss = cross-entropy + alpha * penalty; list and dict feed
    the same numbers."""
    base = _dense_image_meta_model()
    image, meta, targets = _float_batch()
    logits = keras.Model(base.inputs, base.layers[-1].output)
    logits.layers[-1].activation = keras.activations.linear
    x = [tf.constant(image), tf.constant(meta)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = logits(x)
        score = tf.reduce_sum(tf.gather(z, targets, axis=1, batch_dims=1))
    grads = dict(zip(("image", "meta"), tape.gradient(score, x), strict=True))
    logits.layers[-1].activation = keras.activations.softmax
    chosen = names or ["image", "meta"]
    per_sample = sum(
        np.abs(grads[k].numpy()).reshape(len(targets), -1).sum(axis=1) for k in chosen
    )
    expected = per_sample.mean()
    probabilities = base([image, meta]).numpy()
    cross_entropy = -np.log(probabilities[np.arange(6), targets]).mean()
    logs = []
    for x_fed in ([image, meta], {"meta": meta, "image": image}):
        model = kar.AttributionRegularizedModel(
            keras.models.clone_model(base),
            kar.L1GradientPenalty(alpha=0.5, inputs=names),
        )
        model.base_model.set_weights(base.get_weights())
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        logs.append(model.fit(x_fed, targets, batch_size=6, verbose=0).history)
    for history in logs:
        np.testing.assert_allclose(
            history["attribution_penalty"][0], expected, rtol=1e-5
        )
        np.testing.assert_allclose(
            history["loss"][0], cross_entropy + 0.5 * expected, rtol=1e-5
        )


def test_fbi_on_a_multi_input_model_equals_fbi_on_its_single_input_twin():
    """Oracle: the FBI loss of the functional twin on one input (the image
    flattened and concatenated with the metadata, same Dense weights),
    checked by the single-input FBI tests."""
    base = _dense_image_meta_model()
    vector = keras.Input((19,))
    h = keras.layers.Dense(5, activation="tanh")(vector)
    twin = keras.Model(vector, keras.layers.Dense(3, activation="softmax")(h))
    twin.set_weights(base.get_weights())
    image, meta, targets = _float_batch()
    joined = np.concatenate([image.reshape(6, -1), meta], axis=1)
    losses = []
    for model, x_fed in (
        (base, [image, meta]),
        (base, {"image": image, "meta": meta}),
        (twin, joined),
    ):
        wrapper = kar.AttributionRegularizedModel(model, kar.FBILoss())
        wrapper.compile(loss="sparse_categorical_crossentropy")
        losses.append(wrapper.evaluate(x_fed, targets, verbose=0, return_dict=True))
    for logs in losses[:2]:
        np.testing.assert_allclose(logs["fbi_loss"], losses[2]["fbi_loss"], rtol=1e-5)
        np.testing.assert_allclose(logs["loss"], losses[2]["loss"], rtol=1e-5)


def _text_and_values_model():
    """Token ids (read by an Embedding) and a float vector; returns the
    model, its Embedding and its tail from the Embedding output on (the same
    layer objects), the test's own route to dS_c/de."""
    ids = keras.Input((5,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    embedding = keras.layers.Embedding(9, 3)
    pooling = keras.layers.GlobalAveragePooling1D()
    dense = keras.layers.Dense(4, activation="tanh")
    concat, head = keras.layers.Concatenate(), keras.layers.Dense(2)
    text = keras.Model(
        [ids, values], head(dense(concat([pooling(embedding(ids)), values])))
    )
    e_input = keras.Input((5, 3))
    tail = keras.Model(
        [e_input, values], head(dense(concat([pooling(e_input), values])))
    )
    return text, embedding, tail


_IDS = np.array([[3, 1, 4, 0, 0], [5, 0, 2, 6, 0], [7, 8, 1, 2, 3]], "int32")


def _tail_gradients(tail, e, values, targets):
    feed = [tf.constant(e), tf.constant(values)]
    with tf.GradientTape() as tape:
        tape.watch(feed)
        z = tail(feed)
        score = tf.reduce_sum(tf.gather(z, targets, axis=1, batch_dims=1))
    return [g.numpy() for g in tape.gradient(score, feed)]


def test_epsilon_lrp_takes_a_token_input_among_several_at_its_embedding():
    """Oracle: the test's own tape on the layers after the Embedding of a
    bias-free ReLU net, where epsilon-LRP at eps -> 0 is gradient x input:
    the token map sum_d e_td dS_c/de_td (0 at padding), the float input's map
    x * dS_c/dx; list and dict give the same maps."""
    keras.utils.set_random_seed(4)
    ids = keras.Input((5,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    embedding = keras.layers.Embedding(9, 3)
    pooling = keras.layers.GlobalAveragePooling1D()
    dense = keras.layers.Dense(4, activation="relu", use_bias=False)
    concat, head = keras.layers.Concatenate(), keras.layers.Dense(2, use_bias=False)
    text = keras.Model(
        [ids, values], head(dense(concat([pooling(embedding(ids)), values])))
    )
    e_input = keras.Input((5, 3))
    tail = keras.Model(
        [e_input, values], head(dense(concat([pooling(e_input), values])))
    )
    x_values = RNG.normal(size=(3, 2)).astype("float32")
    targets = np.array([1, 0, 1])
    e = embedding(_IDS).numpy()
    d_e, d_values = _tail_gradients(tail, e, x_values, targets)
    maps = epsilon_lrp(text, {"ids": _IDS, "values": x_values}, targets, epsilon=1e-9)
    expected_ids = np.where(_IDS == 0, 0.0, (e * d_e).sum(axis=-1))
    assert np.abs(expected_ids).max() > 1e-3
    np.testing.assert_allclose(maps["ids"], expected_ids, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        maps["values"], x_values * d_values, rtol=1e-4, atol=1e-6
    )
    as_list = epsilon_lrp(text, [_IDS, x_values], targets, epsilon=1e-9)
    np.testing.assert_allclose(as_list[0], maps["ids"], rtol=1e-6)


def test_deeplift_takes_a_token_input_among_several_at_its_embedding():
    """Oracle: DeepLIFT-Rescale by hand in NumPy on ids -> Embedding -> mean
    over positions, concatenated with values -> Dense(4, ReLU) -> Dense(2):
    with h = [mean_t e_t, values] and z = h W1 + b1 on x and on the baseline
    (0 embedding at real tokens, padding kept at its own embedding; values
    b), m_j = (relu(z_j) - relu(z_ref_j)) / (z_j - z_ref_j) (relu'(z_j) where
    they meet), the multiplier of h is W1 (m * W2[:, c]); a token's map is
    sum_d (e_td - e_ref_td) * mult_d / T, the values' (v - b) * mult. The
    maps sum to S_c(x) (the model's) - S_c(b) (by hand): summation to delta."""
    keras.utils.set_random_seed(6)
    ids = keras.Input((5,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    embedding = keras.layers.Embedding(9, 3)
    dense = keras.layers.Dense(4, activation="relu", bias_initializer="normal")
    head = keras.layers.Dense(2)
    pooled = keras.layers.GlobalAveragePooling1D()(embedding(ids))
    text = keras.Model(
        [ids, values], head(dense(keras.layers.Concatenate()([pooled, values])))
    )
    x_values = RNG.normal(size=(3, 2)).astype("float32")
    b_values = np.array([0.5, -0.25], "float32")
    targets = np.array([1, 0, 1])
    maps = deeplift_rescale(
        text, {"ids": _IDS, "values": x_values}, targets, baseline=[0.0, b_values]
    )
    e = embedding(_IDS).numpy().astype(np.float64)
    e_ref = np.where(_IDS[..., None] == 0, e, 0.0)
    w1, b1 = (w.astype(np.float64) for w in dense.get_weights())
    w2 = head.get_weights()[0].astype(np.float64)
    h = np.concatenate([e.mean(axis=1), x_values], axis=1)
    h_ref = np.concatenate([e_ref.mean(axis=1), np.broadcast_to(b_values, (3, 2))], 1)
    z, z_ref = h @ w1 + b1, h_ref @ w1 + b1
    close = np.abs(z - z_ref) < 1e-5
    slope = np.where(
        close,
        (z > 0).astype(np.float64),
        (np.maximum(z, 0) - np.maximum(z_ref, 0)) / np.where(close, 1.0, z - z_ref),
    )
    mult = (slope * w2[:, targets].T) @ w1.T  # (3, 3 + 2)
    expected_ids = ((e - e_ref) * mult[:, None, :3]).sum(axis=-1) / 5
    expected_values = (x_values - b_values) * mult[:, 3:]
    assert not close.all() and np.abs(expected_ids).max() > 1e-3
    np.testing.assert_allclose(maps["ids"], expected_ids, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps["values"], expected_values, rtol=1e-4, atol=1e-6)
    delta = text([_IDS, x_values]).numpy() - (
        np.maximum(z_ref, 0) @ w2 + head.get_weights()[1]
    )
    total = maps["ids"].numpy().sum(axis=1) + maps["values"].numpy().sum(axis=1)
    np.testing.assert_allclose(total, delta[np.arange(3), targets], rtol=1e-4)


def test_token_input_among_several_is_attributed_at_its_embedding():
    """Oracle: the test's own tape on the layers after the Embedding: the
    token map is sum_d e_td dS_c/de_td (sum_d |dS_c/de_td| for saliency), 0
    at padding; the float input's map x * dS_c/dx; integrated gradients from
    the zero embedding (padding kept) and zero values sum to the tail's own
    S_c(x) - S_c(b) (completeness, midpoint error). Inside a tf.function
    (the graph loop) the maps are the same."""
    text, embedding, tail = _text_and_values_model()
    values = RNG.normal(size=(3, 2)).astype("float32")
    targets = np.array([0, 1, 1])
    e = embedding(_IDS).numpy()
    d_e, d_values = _tail_gradients(tail, e, values, targets)
    padding = _IDS == 0
    maps = gradient_x_input(text, {"ids": _IDS, "values": values}, targets)
    expected_ids = np.where(padding, 0.0, (e * d_e).sum(axis=-1))
    np.testing.assert_allclose(maps["ids"], expected_ids, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps["values"], values * d_values, rtol=1e-5)
    traced = tf.function(lambda ids, v, t: gradient_x_input(text, [ids, v], t))
    in_graph = traced(tf.constant(_IDS), tf.constant(values), tf.constant(targets))
    np.testing.assert_allclose(in_graph[0], expected_ids, rtol=1e-5, atol=1e-7)
    salient = saliency(text, [_IDS, values], targets)
    expected_salient = np.where(padding, 0.0, np.abs(d_e).sum(axis=-1))
    np.testing.assert_allclose(salient[0], expected_salient, rtol=1e-5, atol=1e-7)
    assert np.abs(expected_ids).max() > 0
    ig = integrated_gradients(text, [_IDS, values], targets, steps=64)
    base_e = np.where(padding[..., None], e, 0.0)
    rows = np.arange(3)
    delta = (
        tail([e, values]).numpy()[rows, targets]
        - tail([base_e, np.zeros_like(values)]).numpy()[rows, targets]
    )
    total = ig[0].numpy().sum(axis=1) + ig[1].numpy().sum(axis=1)
    np.testing.assert_allclose(total, delta, rtol=1e-3, atol=1e-5)


def test_smoothgrad_with_a_token_input_among_several():
    """Oracle: the test's own tape on the layers after the Embedding. On a
    model linear in (e, values), dS_c/de and dS_c/dvalues are constant, so
    the signed SmoothGrad of saliency equals them (summed over the embedding
    axis, 0 at padding) for any noise; with no noise, SmoothGrad of gradient
    x input is gradient x input. Methods that cannot take the token input are
    refused by name."""
    ids = keras.Input((5,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    embedding = keras.layers.Embedding(9, 3)
    pooling, concat = keras.layers.GlobalAveragePooling1D(), keras.layers.Concatenate()
    head = keras.layers.Dense(2)
    linear = keras.Model([ids, values], head(concat([pooling(embedding(ids)), values])))
    e_input = keras.Input((5, 3))
    tail = keras.Model([e_input, values], head(concat([pooling(e_input), values])))
    x_values = RNG.normal(size=(3, 2)).astype("float32")
    targets = np.array([0, 1, 1])
    e = embedding(_IDS).numpy()
    d_e, d_values = _tail_gradients(tail, e, x_values, targets)
    padding = _IDS == 0
    signed = functools.partial(saliency, absolute=False)
    maps = smoothgrad(linear, [_IDS, x_values], targets, samples=4, method=signed)
    expected = np.where(padding, 0.0, d_e.sum(axis=-1))
    np.testing.assert_allclose(maps[0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[1], d_values, rtol=1e-5)
    quiet = smoothgrad(
        linear,
        {"ids": _IDS, "values": x_values},
        targets,
        samples=2,
        noise=0.0,
        method=gradient_x_input,
    )
    expected = np.where(padding, 0.0, (e * d_e).sum(axis=-1))
    np.testing.assert_allclose(quiet["ids"], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(quiet["values"], x_values * d_values, rtol=1e-5)
    with pytest.raises(ValueError, match="takes token ids among several inputs"):
        smoothgrad(linear, [_IDS, x_values], targets, method=occlusion)


def test_smoothgrad_of_lrp_and_deeplift_with_a_token_input_among_several():
    """Oracle: on a bias-free ReLU net, epsilon-LRP at eps -> 0 and
    DeepLIFT-Rescale from the zero baseline equal gradient x input at every
    point (Ancona et al. 2018), so with the same seed (the same noise on the
    Embedding output and on the float input) their SmoothGrad equals that of
    gradient x input, itself checked against the test's own tape above.
    Reviews without padding: DeepLIFT keeps a padding embedding on its
    baseline, where gradient x input has none."""
    keras.utils.set_random_seed(7)
    ids = keras.Input((5,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(9, 3)(ids))
    h = keras.layers.Concatenate()([h, values])
    h = keras.layers.Dense(6, activation="relu", use_bias=False)(h)
    net = keras.Model([ids, values], keras.layers.Dense(2, use_bias=False)(h))
    x = [RNG.integers(1, 9, size=(4, 5)), RNG.normal(size=(4, 2)).astype("float32")]
    targets = np.array([0, 1, 1, 0])
    options = {"samples": 6, "noise": 0.3, "seed": 3}
    expected = smoothgrad(net, x, targets, method=gradient_x_input, **options)
    assert np.abs(expected[0].numpy()).max() > 1e-3
    for method in (functools.partial(epsilon_lrp, epsilon=1e-9), deeplift_rescale):
        maps = smoothgrad(net, x, targets, method=method, **options)
        for ours, theirs in zip(maps, expected, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_penalty_on_a_token_input_is_taken_at_its_embedding():
    """Oracle: the test's own tape on the layers after the Embedding (the
    same layer objects, fed e = Embedding(ids) and the values): per sample
    ||dS_c/de||_1 over the real tokens (padding, id 0, left out) plus
    ||dS_c/dvalues||_1, averaged over the batch."""
    text, embedding, tail = _text_and_values_model()
    x_values = RNG.normal(size=(3, 2)).astype("float32")
    targets = np.array([0, 1, 1])
    d_e, d_values = _tail_gradients(tail, embedding(_IDS).numpy(), x_values, targets)
    d_e[_IDS == 0] = 0.0
    expected = (np.abs(d_e).sum(axis=(1, 2)) + np.abs(d_values).sum(axis=1)).mean()
    assert np.abs(d_e).sum() > 0
    model = kar.AttributionRegularizedModel(
        text, kar.L1GradientPenalty(alpha=0.1, inputs=["ids", "values"])
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logs = model.evaluate(
        {"ids": _IDS, "values": x_values}, targets, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(logs["attribution_penalty"], expected, rtol=1e-5)
    history = model.fit([_IDS, x_values], targets, verbose=0).history
    np.testing.assert_allclose(history["attribution_penalty"][0], expected, rtol=1e-5)


def test_penalty_refuses_unknown_or_integer_inputs_and_masks_by_name():
    """Oracle: the hand-written expectation of each refusal."""
    ids = keras.Input((4,), name="ids", dtype="int32")
    values = keras.Input((2,), name="values")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(9, 3)(ids))
    text = keras.Model(
        [ids, values], keras.layers.Dense(2)(keras.layers.Concatenate()([h, values]))
    )
    x = {"ids": np.ones((4, 4), "int32"), "values": np.ones((4, 2), "float32")}
    y = np.array([0, 1, 0, 1])
    default = kar.AttributionRegularizedModel(text, kar.L1GradientPenalty(alpha=0.1))
    default.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert np.isfinite(default.fit(x, y, verbose=0).history["attribution_penalty"][0])
    counts = keras.Input((2,), name="counts", dtype="int32")
    cast = keras.layers.Concatenate()([keras.ops.cast(counts, "float32"), values])
    tabular = keras.Model([counts, values], keras.layers.Dense(2)(cast))
    cases = (
        (text, ["text"], "no input is named"),
        (tabular, ["counts"], "no Embedding layer reads it"),
    )
    for base, names, match in cases:
        model = kar.AttributionRegularizedModel(
            base, kar.L1GradientPenalty(alpha=0.1, inputs=names)
        )
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        fed = x if base is text else {"counts": np.ones((4, 2)), "values": x["values"]}
        with pytest.raises(ValueError, match=match):
            model.fit(fed, y, verbose=0)
    with pytest.raises(ValueError, match="2 inputs"):
        default.fit(np.ones((4, 2)), y, verbose=0)
    masked = kar.AttributionRegularizedModel(text, kar.MaskedGradientPenalty(alpha=1.0))
    masked.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="masks are drawn on one input"):
        masked.fit(x, y, annotation_mask=np.ones((4, 2)), verbose=0)
    with pytest.raises(ValueError, match="list of input names"):
        kar.L1GradientPenalty(inputs="values")


_METRICS = {
    "sensitivity_n": (
        sensitivity_n,
        {"n_values": [1, 4, 12], "num_subsets": 8, "verbose": 0, "seed": 3},
    ),
    "infidelity": (infidelity, {"num_perturbations": 6, "seed": 3, "noise_std": 0.3}),
    "infidelity_square": (
        infidelity,
        {"num_perturbations": 6, "seed": 3, "perturbation": "square", "square_size": 2},
    ),
}


@pytest.mark.parametrize("metric", sorted(_METRICS))
def test_metric_over_a_named_input_equals_that_of_its_bound_twin(metric):
    """Oracle: for each sample j, the single-input metric of the twin
    image -> S_c(image, meta_j) (the metadata branch's output for meta_j
    frozen into a diagonal Dense layer, the other layers shared), run on the
    same images so sample j keeps its position and hence its random draws;
    the image and metadata interact through a product, so holding the wrong
    metadata fixed changes the scores."""
    function, options = _METRICS[metric]
    image = keras.Input((4, 4, 1), name="image")
    meta = keras.Input((3,), name="meta")
    flatten = keras.layers.Flatten()
    image_dense = keras.layers.Dense(4, activation="tanh")
    meta_dense = keras.layers.Dense(4, activation="tanh")
    head = keras.layers.Dense(3)
    both = keras.layers.Multiply()([image_dense(flatten(image)), meta_dense(meta)])
    model = keras.Model([image, meta], head(both))
    images, metas, targets = _float_batch(3)
    result = function(
        model,
        ({"image": images, "meta": metas}, targets),
        gradient_x_input,
        input_name="image",
        **options,
    )
    for j in range(3):
        gate = meta_dense(metas[j : j + 1]).numpy()[0]
        frozen = keras.layers.Dense(4, use_bias=False)
        twin_input = keras.Input((4, 4, 1))
        twin = keras.Model(twin_input, head(frozen(image_dense(flatten(twin_input)))))
        frozen.set_weights([np.diag(gate)])
        expected = function(twin, (images, targets), gradient_x_input, **options)
        np.testing.assert_allclose(
            result.per_sample[j], expected.per_sample[j], rtol=1e-4, atol=1e-6
        )
    assert np.all(np.isfinite(result.per_sample))
    with pytest.raises(ValueError, match=r"one of \['image', 'meta'\]"):
        function(model, ([images, metas], targets), gradient_x_input, **options)


def test_deletion_over_a_named_input_matches_a_naive_loop():
    """Oracle: the test's own loop: for each sample and fraction f, the
    round(f * 16) image pixels of highest given attribution set to 0, the
    metadata held at the sample's own values, the softmax probability of the
    target from the model's own forward pass."""
    model = _dense_image_meta_model()
    image, meta, targets = _float_batch(3)
    maps = RNG.normal(size=image.shape).astype("float32")
    result = deletion(
        model,
        ([image, meta], targets),
        maps,
        step=0.25,
        input_name="image",
    )
    expected = np.zeros((3, 5))
    for j in range(3):
        order = np.argsort(-maps[j].ravel())
        for k, fraction in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
            hidden = image[j].ravel().copy()
            hidden[order[: round(fraction * 16)]] = 0.0
            probabilities = model([hidden.reshape(1, 4, 4, 1), meta[j : j + 1]]).numpy()
            expected[j, k] = probabilities[0, targets[j]]
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="named by `input_name`"):
        deletion(model, ([image, meta], targets), maps)


@pytest.mark.parametrize("imputation", ["fixed", "linear"])
def test_road_over_a_named_input_matches_a_naive_loop(imputation):
    """Oracle: the test's own loop: per sample and fraction f, the round(f * 16)
    image pixels of highest given attribution (ties to the lower index) set to
    0.5 ("fixed") or filled by the test's own dense solve of the neighbour
    equations (noise 0), the metadata held at the sample's own values, the
    softmax probability of the target from the model's own forward pass; list
    and dict give the same curve."""
    model = _dense_image_meta_model()
    image, meta, targets = _float_batch(5)
    maps = RNG.normal(size=image.shape).astype("float32")
    fractions = (0.25, 0.5, 0.75)
    options = {
        "fractions": fractions,
        "imputation": imputation,
        "noise": 0.0,
        "score": "probability",
        "baseline": 0.5,
        "input_name": "image",
        "batch_size": 2,
    }
    result = road(model, ([image, meta], targets), maps, **options)
    expected = np.zeros((5, 3))
    for j in range(5):
        order = np.argsort(-maps[j].ravel(), kind="stable")
        for k, fraction in enumerate(fractions):
            removed = np.zeros(16, bool)
            removed[order[: round(fraction * 16)]] = True
            removed = removed.reshape(4, 4)
            if imputation == "fixed":
                filled = np.where(removed[..., None], 0.5, image[j])
            else:
                filled = dense_imputation(image[j], removed)
            probabilities = model(
                [filled[None].astype("float32"), meta[j : j + 1]]
            ).numpy()
            expected[j, k] = probabilities[0, targets[j]]
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-5, atol=1e-6)
    as_dict = road(model, ({"image": image, "meta": meta}, targets), maps, **options)
    np.testing.assert_allclose(as_dict.per_sample, result.per_sample)
    with pytest.raises(ValueError, match="named by `input_name`"):
        road(model, ([image, meta], targets), maps)


def test_the_penalty_checks_each_inputs_rank_by_name():
    """Oracle: the hand-written expectation: a metadata batch of rank 3 is
    refused naming that input."""
    model = kar.AttributionRegularizedModel(
        _dense_image_meta_model(), kar.L1GradientPenalty(alpha=0.1)
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    image, meta, targets = _float_batch(4)
    with pytest.raises(ValueError, match=r"x\['meta'\]: expected rank 2"):
        model.fit({"image": image, "meta": meta[:, :, None]}, targets, verbose=0)


def test_deletion_over_the_float_input_of_a_model_with_token_ids():
    """Oracle: the test's own loop of forward passes: for each sample the
    values of highest given attribution set to 0 (0, 1 then 2 of them), the
    token ids held, the target's softmax probability."""
    text, _, _ = _text_and_values_model()
    values = RNG.normal(size=(3, 2)).astype("float32")
    targets = np.array([0, 1, 1])
    maps = RNG.normal(size=(3, 2)).astype("float32")
    result = deletion(
        text, ([_IDS, values], targets), maps, step=0.5, input_name="values"
    )
    expected = np.zeros((3, 3))
    for j in range(3):
        order = np.argsort(-maps[j])
        for k in range(3):
            hidden = values[j].copy()
            hidden[order[:k]] = 0.0
            logits = text([_IDS[j : j + 1], hidden[None]]).numpy()[0]
            probabilities = np.exp(logits - logits.max())
            expected[j, k] = (probabilities / probabilities.sum())[targets[j]]
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-5, atol=1e-6)


def test_monitors_refuse_inputs_given_per_input_by_name():
    """Oracle: the hand-written expectation: the callbacks take one input's
    batch, and say so for a list or dict of a multi-input model's inputs."""
    image, meta, targets = _float_batch(2)
    for monitor in (
        kar.callbacks.AttributionMonitor,
        kar.callbacks.FaithfulnessMonitor,
    ):
        for x_val in ([image, meta], {"image": image, "meta": meta}):
            with pytest.raises(ValueError, match=f"{monitor.__name__} takes a batch"):
                monitor(x_val, targets)
