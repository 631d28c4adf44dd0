"""Text models (token ids): attributions, Sensitivity-n and the L1 penalty at the
Embedding output, each against the test's own computation (its own tape on the
embedding, naive loops zeroing embedding rows, completeness)."""

import functools
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar
from keras_attreg.attributions import (
    gradient_x_input,
    integrated_gradients,
    occlusion,
    saliency,
    smoothgrad,
)
from keras_attreg.evaluation import sensitivity_n
from keras_attreg.evaluation.sensitivity_n import token_subsets

VOCABULARY, LENGTH, DIM = 30, 9, 4


def _ids(count=5, seed=0):
    """Token ids with trailing padding (0); sample 1 has 3 tokens, sample 2 all."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCABULARY, (count, LENGTH)).astype("int32")
    lengths = rng.integers(4, LENGTH, count)
    lengths[1], lengths[2] = 3, LENGTH
    for row, length in zip(ids, lengths, strict=True):
        row[length:] = 0
    return ids, np.arange(count) % 2


def _text_cnn(softmax=False, dtype="float64", smooth=False):
    """Embedding -> Conv1D -> global pooling -> Dense (ReLU and max pooling, or
    tanh and average pooling when `smooth`)."""
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, DIM, dtype=dtype, name="embedding")(inputs)
    h = keras.layers.Conv1D(6, 3, activation="tanh" if smooth else "relu", dtype=dtype)(
        h
    )
    pooling = (
        keras.layers.GlobalAveragePooling1D
        if smooth
        else keras.layers.GlobalMaxPooling1D
    )
    h = pooling(dtype=dtype)(h)
    outputs = keras.layers.Dense(
        2, activation="softmax" if softmax else None, dtype=dtype
    )(h)
    return keras.Model(inputs, outputs)


def _recurrent(kind="lstm"):
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(
        VOCABULARY, DIM, mask_zero=True, dtype="float64", name="embedding"
    )(inputs)
    cells = {
        "lstm": lambda: keras.layers.LSTM(5, dtype="float64"),
        "gru": lambda: keras.layers.GRU(5, dtype="float64"),
        "bidirectional": lambda: keras.layers.Bidirectional(
            keras.layers.LSTM(3, dtype="float64"), dtype="float64"
        ),
    }
    h = cells[kind]()(h)
    return keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(h))


def _own_logits(model, ids, e):
    """The model's logits with Embedding output e, by the test's own walk:
    the layers after the Embedding called in order, the mask passed by hand."""
    mask = tf.not_equal(ids, 0)
    h = e
    for layer in model.layers[2:]:
        if isinstance(layer, keras.layers.Dense) and layer.activation is not None:
            h = tf.matmul(h, layer.kernel) + layer.bias
        elif getattr(layer, "supports_masking", False) and isinstance(
            layer, (keras.layers.RNN, keras.layers.Bidirectional)
        ):
            h = layer(h, mask=mask)
        else:
            h = layer(h)
    return h


def _own_gradient(model, ids, targets, e=None):
    """(e, dS_c/de) by the test's own tape."""
    if e is None:
        e = tf.gather(model.get_layer("embedding").embeddings, ids)
    with tf.GradientTape() as tape:
        tape.watch(e)
        scores = tf.gather(_own_logits(model, ids, e), targets, batch_dims=1)
    return e.numpy(), tape.gradient(scores, e).numpy()


def _own_score(model, ids, targets, e):
    logits = _own_logits(model, ids, tf.constant(e)).numpy()
    return logits[np.arange(len(targets)), targets]


@pytest.mark.parametrize(
    "build",
    [
        functools.partial(_text_cnn, softmax=True),
        functools.partial(_recurrent, "lstm"),
        functools.partial(_recurrent, "gru"),
        functools.partial(_recurrent, "bidirectional"),
    ],
    ids=["cnn_softmax", "lstm", "gru", "bidirectional"],
)
def test_saliency_and_gradient_x_input_per_token_equal_own_tape(build):
    model = build()
    ids, targets = _ids()
    e, gradient = _own_gradient(model, ids, targets)
    padding = ids == 0
    expected_saliency = np.where(padding, 0.0, np.abs(gradient).sum(-1))
    expected_gxi = np.where(padding, 0.0, (e * gradient).sum(-1))
    ours = saliency(model, ids, targets).numpy()
    assert ours.shape == ids.shape
    np.testing.assert_allclose(ours, expected_saliency, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        gradient_x_input(model, ids, targets), expected_gxi, rtol=1e-9, atol=1e-12
    )


def test_lstm_mask_reaches_the_lstm_padding_has_no_influence():
    model = _recurrent("lstm")
    ids, targets = _ids()
    _, gradient = _own_gradient(model, ids, targets)
    assert np.all(gradient[ids == 0] == 0)  # the mask (not only our zeroing)
    signed = saliency(model, ids, targets, absolute=False).numpy()
    np.testing.assert_allclose(signed, np.where(ids == 0, 0, gradient.sum(-1)))


@pytest.mark.parametrize(
    "build",
    [functools.partial(_text_cnn, smooth=True), functools.partial(_recurrent, "lstm")],
    ids=["smooth_cnn", "lstm"],
)
@pytest.mark.parametrize("baseline_token", [None, 1])
def test_integrated_gradients_on_tokens_is_complete(build, baseline_token):
    """sum_t R_t = S_c(e) - S_c(b), b the baseline with padding kept as e
    (smooth models: the midpoint rule's error is O(1/steps^2))."""
    model = build()
    ids, targets = _ids()
    weights = model.get_layer("embedding").embeddings.numpy()
    e = weights[ids]
    reference = np.zeros(DIM) if baseline_token is None else weights[baseline_token]
    b = np.where((ids == 0)[..., None], e, reference)
    maps = integrated_gradients(
        model, ids, targets, steps=400, baseline_token=baseline_token
    ).numpy()
    expected = _own_score(model, ids, targets, e) - _own_score(model, ids, targets, b)
    np.testing.assert_allclose(maps.sum(1), expected, rtol=1e-4, atol=1e-6)
    assert np.all(maps[ids == 0] == 0)


@pytest.mark.parametrize("baseline_token", [None, 1])
def test_occlusion_on_tokens_equals_a_loop_replacing_embedding_rows(baseline_token):
    model = _text_cnn()
    ids, targets = _ids()
    weights = model.get_layer("embedding").embeddings.numpy()
    e = weights[ids]
    full = _own_score(model, ids, targets, e)
    expected = np.zeros(ids.shape)
    for t in range(LENGTH):
        hidden = e.copy()
        hidden[:, t] = 0 if baseline_token is None else weights[baseline_token]
        expected[:, t] = full - _own_score(model, ids, targets, hidden)
    expected[ids == 0] = 0
    ours = occlusion(model, ids, targets, baseline_token=baseline_token)
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_baseline_token_is_checked():
    ids, targets = _ids()
    with pytest.raises(ValueError, match=r"baseline_token.*\[0, 30\)"):
        integrated_gradients(_text_cnn(), ids, targets, baseline_token=30)
    image_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="baseline_token=1"):
        occlusion(image_model, np.ones((2, 3)), [0, 1], 1, baseline_token=1)


def test_smoothgrad_saliency_of_a_linear_text_model_is_its_saliency():
    """dS/de is constant for Embedding -> Flatten -> Dense: noise changes nothing."""
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, DIM, dtype="float64")(inputs)
    h = keras.layers.Flatten(dtype="float64")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(h))
    ids, targets = _ids()
    kernel = model.layers[-1].kernel.numpy().reshape(LENGTH, DIM, 2)
    expected = np.abs(kernel[..., targets].transpose(2, 0, 1)).sum(-1)
    expected[ids == 0] = 0
    ours = smoothgrad(model, ids, targets, samples=6, noise=0.5)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_smoothgrad_without_noise_equals_its_method_on_an_lstm():
    model = _recurrent("lstm")
    ids, targets = _ids()
    for method in (saliency, functools.partial(integrated_gradients, steps=4)):
        np.testing.assert_allclose(
            smoothgrad(model, ids, targets, samples=3, noise=0.0, method=method),
            method(model, ids, targets),
            rtol=1e-10,
            atol=1e-13,
        )


def test_embedding_inside_a_nested_sequential_and_named_embedding():
    inner = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, DIM, dtype="float64", name="words"),
            keras.layers.Conv1D(4, 3, activation="tanh", dtype="float64"),
            keras.layers.GlobalAveragePooling1D(dtype="float64"),
        ]
    )
    inputs = keras.Input((LENGTH,), dtype="int32")
    outputs = keras.layers.Dense(2, dtype="float64")(inner(inputs))
    model = keras.Model(inputs, outputs)
    ids, targets = _ids()
    e = tf.gather(inner.get_layer("words").embeddings, ids)
    with tf.GradientTape() as tape:
        tape.watch(e)
        h = e
        for layer in inner.layers[1:]:
            h = layer(h)
        scores = tf.gather(model.layers[-1](h), targets, batch_dims=1)
    expected = np.where(ids == 0, 0, (e * tape.gradient(scores, e)).numpy().sum(-1))
    np.testing.assert_allclose(gradient_x_input(model, ids, targets), expected)
    named = gradient_x_input(model, ids, targets, embedding_layer="words")
    np.testing.assert_allclose(named, expected)


def test_integer_model_without_embedding_raises_and_says_how_to_fix():
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Lambda(lambda t: tf.cast(t, "float32"))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    ids, targets = _ids()
    with pytest.raises(ValueError, match="no `keras.layers.Embedding`.*Add an"):
        saliency(model, ids, targets)


def test_several_embeddings_ask_for_a_name_and_a_wrong_name_is_listed():
    ids_in = keras.Input((LENGTH,), dtype="int32")
    a = keras.layers.Embedding(VOCABULARY, DIM, name="a")(ids_in)
    b = keras.layers.Embedding(VOCABULARY, DIM, name="b")(ids_in)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Concatenate()([a, b]))
    model = keras.Model(ids_in, keras.layers.Dense(2)(h))
    ids, targets = _ids()
    with pytest.raises(ValueError, match="several Embedding layers.*embedding_layer"):
        saliency(model, ids, targets)
    with pytest.raises(ValueError, match=r"embedding_layer.*\['a', 'b'\]"):
        saliency(model, ids, targets, embedding_layer="c")
    assert saliency(model, ids, targets, embedding_layer="b").shape == ids.shape


def test_wrapper_attributions_are_taken_at_its_embedding_layer(tmp_path):
    """A wrapper given `embedding_layer` attributes at that Embedding: the same
    maps as the base model with the name given, not the other Embedding's."""
    keras.utils.set_random_seed(3)
    ids_in = keras.Input((LENGTH,), dtype="int32")
    a = keras.layers.Embedding(VOCABULARY, DIM, name="a")(ids_in)
    b = keras.layers.Embedding(VOCABULARY, DIM, name="b")(ids_in)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Concatenate()([a, b]))
    base = keras.Model(ids_in, keras.layers.Dense(2)(h))
    wrapper = kar.AttributionRegularizedModel(
        base, kar.L1GradientPenalty(0.1), embedding_layer="b"
    )
    ids, targets = _ids()
    at_b = gradient_x_input(base, ids, targets, embedding_layer="b")
    at_a = gradient_x_input(base, ids, targets, embedding_layer="a")
    assert np.abs(at_b.numpy() - at_a.numpy()).max() > 1e-3
    np.testing.assert_array_equal(gradient_x_input(wrapper, ids, targets), at_b)
    noisy = functools.partial(smoothgrad, samples=3, method="saliency", seed=1)
    np.testing.assert_array_equal(
        noisy(wrapper, ids, targets), noisy(base, ids, targets, embedding_layer="b")
    )
    options = {"n_values": [1, 4], "num_subsets": 4, "verbose": 0, "seed": 0}
    np.testing.assert_array_equal(
        sensitivity_n(wrapper, (ids, targets), "saliency", **options).correlation,
        sensitivity_n(
            base, (ids, targets), "saliency", embedding_layer="b", **options
        ).correlation,
    )
    # A method that cannot be told the Embedding layer is refused, not run at
    # another one.
    with pytest.raises(ValueError, match="must take `embedding_layer`"):
        sensitivity_n(wrapper, (ids, targets), lambda *a: saliency(*a), **options)
    # The monitor's maps and scalars are taken there too.
    monitor = kar.callbacks.AttributionMonitor(
        ids,
        targets,
        methods=("saliency",),
        output_dir=str(tmp_path),
        sensitivity_n_values=[1, 4],
        num_subsets=4,
    )
    wrapper.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    wrapper.fit(ids, targets, epochs=1, verbose=0, callbacks=[monitor])
    norm = monitor.history["attributions/mean_l1_input_gradient"]
    at_b_norm = saliency(base, ids, targets, embedding_layer="b").numpy()
    np.testing.assert_allclose(norm[-1][1], at_b_norm.sum(1).mean(), rtol=1e-6)


def test_a_method_without_embedding_layer_runs_at_the_only_embedding():
    """A wrapper naming the model's only Embedding still takes custom
    methods that cannot be given the name: they find that layer themselves."""
    base = _text_cnn(smooth=True)
    wrapper = kar.AttributionRegularizedModel(
        base, kar.L1GradientPenalty(0.1), embedding_layer="embedding"
    )
    ids, targets = _ids()
    options = {"n_values": [1, 4], "num_subsets": 4, "verbose": 0, "seed": 0}

    def own(model, x, t):
        return saliency(model, x, t)

    np.testing.assert_array_equal(
        sensitivity_n(wrapper, (ids, targets), own, **options).correlation,
        sensitivity_n(base, (ids, targets), "saliency", **options).correlation,
    )


def test_method_names_resolve_and_a_wrong_name_lists_the_valid_ones():
    model = _text_cnn()
    ids, targets = _ids()
    named = sensitivity_n(
        model, (ids, targets), "saliency", n_values=[1], num_subsets=4, verbose=0
    )
    direct = sensitivity_n(
        model, (ids, targets), saliency, n_values=[1], num_subsets=4, verbose=0
    )
    np.testing.assert_array_equal(named.per_sample, direct.per_sample)
    with pytest.raises(ValueError, match="attributions.*'gradient_x_input'.*salency"):
        sensitivity_n(model, (ids, targets), "salency", verbose=0)
    with pytest.raises(ValueError, match="method.*'occlusion'"):
        smoothgrad(model, ids, targets, method="nope")


# Sensitivity-n over tokens ----------------------------------------------------


def test_token_subsets_draw_n_real_tokens_uniformly_never_padding():
    real = tf.constant([[True] * 5 + [False] * 3, [False, True, True, False] * 2])
    rows = 4000
    masks = token_subsets(
        3,
        tf.repeat(tf.constant([0, 1]), rows),
        tf.tile(tf.range(rows), [2]),
        tf.repeat(real, rows, axis=0),
        tf.fill([2 * rows], 2),
    ).numpy()
    first, second = masks[:rows], masks[rows:]
    assert np.all(masks.sum(1) == 2)
    assert not first[:, 5:].any() and not second[:, ~real.numpy()[1]].any()
    # 5 choose 2 = 10 subsets, each with probability 1/10.
    counts = np.unique(first[:, :5], axis=0, return_counts=True)[1]
    assert len(counts) == 10 and np.all(np.abs(counts / rows - 0.1) < 0.02)


@pytest.mark.parametrize("baseline_token", [None, 1])
def test_sensitivity_n_over_tokens_equals_a_naive_loop_replacing_embeddings(
    baseline_token,
):
    model = _text_cnn()
    ids, targets = _ids()
    n_values, subsets, seed = [1, 2, 4], 6, 5
    maps = gradient_x_input(model, ids, targets).numpy()
    result = sensitivity_n(
        model,
        (ids, targets),
        maps,
        n_values=n_values,
        num_subsets=subsets,
        seed=seed,
        batch_size=3,
        verbose=0,
        baseline_token=baseline_token,
    )
    weights = model.get_layer("embedding").embeddings.numpy()
    removal = 0 if baseline_token is None else weights[baseline_token]
    e = weights[ids]
    expected = np.full((len(ids), len(n_values)), np.nan)
    for b, (k, n) in itertools.product(range(len(ids)), enumerate(n_values)):
        real = ids[b] != 0
        if real.sum() < n:
            continue
        items = k * subsets + np.arange(subsets)
        masks = token_subsets(
            seed,
            tf.fill([subsets], b),
            tf.constant(items),
            tf.constant(np.repeat(real[None], subsets, 0)),
            tf.fill([subsets], n),
        ).numpy()
        assert not masks[:, ~real].any()
        r_n, s_n = [], []
        for mask in masks:
            removed = e[b].copy()
            removed[mask] = removal
            r_n.append(maps[b][mask].sum())
            full = _own_score(model, ids[b : b + 1], targets[b : b + 1], e[b : b + 1])
            cut = _own_score(model, ids[b : b + 1], targets[b : b + 1], removed[None])
            s_n.append((full - cut)[0])
        if np.std(r_n) > 1e-9 and np.std(s_n) > 1e-9:
            expected[b, k] = np.corrcoef(r_n, s_n)[0, 1]
    np.testing.assert_allclose(result.per_sample, expected, atol=1e-9)
    # Sample 1 has 3 tokens: skipped at n = 4 and counted, not undefined.
    assert np.isnan(result.per_sample[1, 2])
    assert list(result.too_short) == [0, 0, 1]
    assert result.undefined[2] == np.isnan(expected[:, 2]).sum() - 1


def test_sensitivity_n_over_tokens_from_a_dataset_and_independent_of_batch_size():
    model = _recurrent("lstm")
    ids, targets = _ids(8)
    dataset = tf.data.Dataset.from_tensor_slices((ids, targets)).batch(3)
    options = {"n_values": [1, 3], "num_subsets": 5, "verbose": 0}
    from_data = sensitivity_n(model, dataset, "integrated_gradients", **options)
    from_arrays = sensitivity_n(
        model, (ids, targets), integrated_gradients, batch_size=2, **options
    )
    np.testing.assert_allclose(from_data.per_sample, from_arrays.per_sample)
    assert np.isfinite(from_data.correlation).all()


# L1 gradient penalty on text models -----------------------------------------


@pytest.mark.parametrize(
    ("build", "reaches_embedding"),
    [
        (_text_cnn, False),
        (functools.partial(_text_cnn, smooth=True), True),
        (functools.partial(_recurrent, "lstm"), True),
    ],
    ids=["relu_cnn", "smooth_cnn", "lstm"],
)
def test_l1_penalty_sgd_step_on_a_text_model_equals_own_step(build, reaches_embedding):
    """Penalty sum_{t real, d} |dS_c/de_{t,d}| (padding left out). Its gradient
    reaches the embedding weights where dS_c/de depends on e (not for ReLU +
    max pooling: dS_c/de is piecewise constant)."""
    base = build()
    ids, y = _ids(6)
    alpha, rate = 0.3, 0.1
    variables = base.trainable_variables
    before = [v.numpy() for v in variables]

    def own_step(weight):
        with tf.GradientTape() as tape:
            e = tf.gather(base.get_layer("embedding").embeddings, ids)
            with tf.GradientTape() as inner:
                inner.watch(e)
                logits = _own_logits(base, ids, e)
                scores = tf.gather(logits, y, batch_dims=1)
            gradient = inner.gradient(scores, e) * (ids != 0)[..., None]
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True
                )
            ) + weight * tf.reduce_mean(tf.reduce_sum(tf.abs(gradient), [1, 2]))
        grads = tape.gradient(loss, variables)
        return [
            w - rate * tf.convert_to_tensor(g).numpy()
            for w, g in zip(before, grads, strict=True)
        ]

    expected, plain = own_step(alpha), own_step(0.0)
    embedding = [i for i, v in enumerate(variables) if v.path.endswith("embeddings")]
    moved = not np.allclose(expected[embedding[0]], plain[embedding[0]], atol=0)
    assert moved == reaches_embedding
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(alpha))
    model.compile(
        optimizer=keras.optimizers.SGD(rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(ids, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    for variable, value in zip(variables, expected, strict=True):
        # The wrapper reduces the penalty in float32 (its loss dtype).
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6, atol=1e-9)


# AttributionMonitor on a text model -------------------------------------------


def test_monitor_logs_token_heatmaps_of_the_own_tape_maps(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from keras_attreg.plotting import token_heatmap_figure

    base = _text_cnn(smooth=True, dtype="float32")
    ids, y = _ids(8)
    vocabulary = [f"w{i}" for i in range(VOCABULARY)]
    weights_at_end = []
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights_at_end.append(base.get_weights())
    )
    monitor = kar.callbacks.AttributionMonitor(
        ids[:3],
        y[:3],
        methods=("gradient_x_input",),
        log_dir=str(tmp_path / "logs"),
        output_dir=str(tmp_path / "png"),
        vocabulary=vocabulary,
    )
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(0.1))
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(ids, y, epochs=2, batch_size=4, verbose=0, callbacks=[snapshot, monitor])
    images, scalars = {}, {}
    for path in (tmp_path / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.tag == "attributions/tokens":
                    images[event.step] = tf.io.decode_png(tensor[2]).numpy()
                else:
                    scalars[(value.tag, event.step)] = float(tensor)
    assert sorted(images) == [0, 1]
    assert (tmp_path / "png" / "tokens_epoch_2.png").exists()
    base.set_weights(weights_at_end[-1])
    e, gradient = _own_gradient(base, ids[:3], y[:3])
    real = ids[:3] != 0
    words = [
        [vocabulary[t] for t in row[keep]]
        for row, keep in zip(ids[:3], real, strict=True)
    ]
    maps = [(e * gradient).sum(-1)[i][real[i]] for i in range(3)]
    canvas = FigureCanvasAgg(token_heatmap_figure(words, {"gradient_x_input": maps}))
    canvas.draw()
    expected = np.asarray(canvas.buffer_rgba())[..., :3]
    assert images[1].shape == expected.shape
    assert np.abs(images[1].astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_allclose(
        scalars[("attributions/mean_l1_input_gradient", 1)],
        np.abs(gradient[real]).sum() / 3,
        rtol=1e-5,
    )


# IMDB loader -----------------------------------------------------------------


def _own_ids(text: bytes, vocabulary, length):
    """The test's own vectorisation: lower-case, <br /> to space, punctuation
    out, split on whitespace, ids from the vocabulary (1 when unknown), padded."""
    import re
    import string

    words = re.sub(r"<br\s*/?>", " ", text.decode().lower())
    words = words.translate(str.maketrans("", "", string.punctuation)).split()
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = [index.get(word, 1) for word in words][:length]
    return np.array(ids + [0] * (length - len(ids)))


def _stack(dataset):
    """A batched dataset of (ids, labels) as two arrays."""
    pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
    return tuple(np.concatenate(a) for a in zip(*pairs, strict=True))


def _raw(data_dir, split, count):
    spec = {
        "text": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    records = tf.data.TFRecordDataset(
        str(data_dir / f"imdb_reviews-{split}.tfrecord.gz"), compression_type="GZIP"
    ).take(count)
    parsed = [tf.io.parse_single_example(r, spec) for r in records]
    return [p["text"].numpy() for p in parsed], [int(p["label"]) for p in parsed]


def test_load_imdb_vectorises_like_an_own_tokenizer_with_a_train_vocabulary(data_dir):
    train, vectorizer = kar.datasets.load_imdb(
        "train", data_dir=data_dir, limit=5, adapt_limit=300, sequence_length=40
    )
    test, same = kar.datasets.load_imdb(
        "test",
        data_dir=data_dir,
        limit=6,
        adapt_limit=300,
        sequence_length=40,
        batch_size=4,
    )
    vocabulary = vectorizer.get_vocabulary()
    assert same.get_vocabulary() == vocabulary  # adapted on train, not test
    texts, labels = _raw(data_dir, "train", 5)
    assert vocabulary[:2] == ["", "[UNK]"]
    assert "br" not in vocabulary  # <br /> is frequent in the reviews
    for (ids, label), text, expected_label in zip(train, texts, labels, strict=False):
        np.testing.assert_array_equal(ids, _own_ids(text, vocabulary, 40))
        assert int(label) == expected_label
    test_texts, test_labels = _raw(data_dir, "test", 6)
    ids, labels = _stack(test)
    assert ids.shape == (6, 40) and ids.dtype == np.int64
    np.testing.assert_array_equal(labels, test_labels)
    np.testing.assert_array_equal(
        ids, np.stack([_own_ids(t, vocabulary, 40) for t in test_texts])
    )


def test_load_imdb_vocabulary_is_the_most_frequent_training_words(data_dir):
    import collections
    import re
    import string

    _, vectorizer = kar.datasets.load_imdb(
        "test", data_dir=data_dir, adapt_limit=200, vocabulary_size=50
    )
    texts, _ = _raw(data_dir, "train", 200)
    counts = collections.Counter()
    for text in texts:
        words = re.sub(r"<br\s*/?>", " ", text.decode().lower())
        counts.update(
            words.translate(str.maketrans("", "", string.punctuation)).split()
        )
    words = [str(w) for w in vectorizer.get_vocabulary()[2:]]
    assert len(words) == 48
    # Most frequent first (ties in any order), and no word left out is more
    # frequent than one kept.
    kept = [counts[w] for w in words]
    assert kept == sorted(kept, reverse=True)
    assert max(c for w, c in counts.items() if w not in words) <= min(kept)


def test_load_imdb_reuses_a_given_vectorizer_and_rejects_bad_arguments(data_dir):
    _, vectorizer = kar.datasets.load_imdb(
        "train", data_dir=data_dir, limit=2, adapt_limit=100, sequence_length=12
    )
    test, returned = kar.datasets.load_imdb(
        "test", data_dir=data_dir, limit=2, vectorizer=vectorizer
    )
    assert returned is vectorizer
    assert next(iter(test))[0].shape == (12,)
    with pytest.raises(ValueError, match="vectorizer.*TextVectorization"):
        kar.datasets.load_imdb("test", data_dir=data_dir, vectorizer="words")
    with pytest.raises(ValueError, match="sequence_length"):
        kar.datasets.load_imdb("test", data_dir=data_dir, sequence_length=0)
    with pytest.raises(ValueError, match="split"):
        kar.datasets.load_imdb("unsup", data_dir=data_dir)


def test_load_imdb_from_tfds_vectorises_the_mocked_reviews(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=7):
        raw = tfds.load(
            "imdb_reviews",
            split="test",
            as_supervised=True,
            data_dir=str(tmp_path),
            download=False,
        )
        texts, labels = zip(*[(t.numpy(), int(y)) for t, y in raw], strict=True)
        dataset, vectorizer = kar.datasets.load_imdb(
            "test", data_dir=tmp_path, source="tfds", sequence_length=16, batch_size=3
        )
        ids, ours = _stack(dataset)
    vocabulary = vectorizer.get_vocabulary()
    assert len(vocabulary) > 2
    np.testing.assert_array_equal(ours, labels)
    np.testing.assert_array_equal(
        ids, np.stack([_own_ids(t, vocabulary, 16) for t in texts])
    )


def test_vectorizer_in_front_of_a_text_model_serves_raw_strings(data_dir, tmp_path):
    _, vectorizer = kar.datasets.load_imdb(
        "train",
        data_dir=data_dir,
        adapt_limit=100,
        sequence_length=LENGTH,
        vocabulary_size=VOCABULARY,
    )
    model = _text_cnn(dtype="float32")
    strings = keras.Input((), dtype="string")
    serving = keras.Model(strings, model(vectorizer(strings)))
    texts = tf.constant(["A great film!<br />Loved it.", "the worst"])
    expected = model(vectorizer(texts)).numpy()
    np.testing.assert_allclose(serving(texts).numpy(), expected, rtol=1e-6)
    path = str(tmp_path / "serving.keras")
    serving.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(texts).numpy(), expected, rtol=1e-6)


@pytest.mark.slow
def test_text_cnn_on_real_imdb_learns_and_gradient_x_input_beats_saliency(data_dir):
    keras.utils.set_random_seed(0)
    train, vectorizer = kar.datasets.load_imdb(
        "train",
        data_dir=data_dir,
        limit=8000,
        adapt_limit=8000,
        vocabulary_size=8000,
        sequence_length=200,
        batch_size=64,
        shuffle=True,
        seed=0,
    )
    test, _ = kar.datasets.load_imdb(
        "test", data_dir=data_dir, vectorizer=vectorizer, limit=1000, batch_size=250
    )
    inputs = keras.Input((200,), dtype="int32")
    h = keras.layers.Embedding(8000, 32)(inputs)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.Dropout(0.5)(keras.layers.GlobalMaxPooling1D()(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, epochs=3, verbose=0)
    assert model.evaluate(test, verbose=0)[1] > 0.8
    options = {"n_values": [1, 4, 16], "num_subsets": 16, "verbose": 0}
    reviews = test.unbatch().take(24).batch(24)
    gxi = sensitivity_n(model, reviews, "gradient_x_input", **options)
    plain = sensitivity_n(model, reviews, "saliency", **options)
    assert np.all(gxi.correlation > plain.correlation + 0.2)


def test_wrapped_text_model_round_trips_with_its_embedding_layer(tmp_path):
    base = _text_cnn(smooth=True)
    ids, y = _ids(6)
    model = kar.AttributionRegularizedModel(
        base, kar.L1GradientPenalty(0.1), embedding_layer="embedding"
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(ids, y, epochs=1, verbose=0)
    path = tmp_path / "text.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.embedding_layer == "embedding"
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), model.predict(ids, verbose=0)
    )
    expected = model.evaluate(ids, y, return_dict=True, verbose=0)
    again = loaded.evaluate(ids, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(
        again["attribution_penalty"], expected["attribution_penalty"], rtol=1e-6
    )
