"""ROAD (noisy linear imputation, MoRF/LeRF curves) against the test's own
dense solver and per-example loop, and a linear model with a known ranking."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from _imputation import dense_imputation as _dense_imputation

import keras_attreg as kar
from keras_attreg.attributions import gradient_x_input
from keras_attreg.evaluation.road import ROADResult, noisy_linear_imputation, road

L = keras.layers
FRACTIONS = (0.2, 0.5, 0.8)


def _mask_5x5():
    mask = np.zeros((5, 5), bool)
    # A corner pixel, an edge pixel and a 3x3-ish block whose centre (2, 2)
    # has no kept neighbour at all.
    mask[0, 0] = mask[0, 3] = mask[4, 1] = True
    mask[1:4, 1:4] = True
    mask[2, 3] = False
    return mask


def test_imputation_matches_a_dense_solve_of_the_neighbour_equations():
    """Oracle: `_dense_imputation` (the linear system built pixel by pixel in
    this test, solved with np.linalg.solve); plus the defining property read
    off the output: each removed pixel equals the renormalised weighted mean
    of its neighbours in the imputed image."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 5, 3)).astype("float32")
    mask = _mask_5x5()
    out = noisy_linear_imputation(image[None], mask[None], noise=0.0)[0]
    expected = _dense_imputation(image, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # Kept pixels are unchanged, bit for bit.
    np.testing.assert_array_equal(out[~mask], image[~mask])
    # The mean equation holds at every removed pixel (float64 re-check).
    padded = np.pad(expected, ((1, 1), (1, 1), (0, 0)))
    inside = np.pad(np.ones((5, 5)), 1)
    for r, c in zip(*np.nonzero(mask), strict=True):
        total, weights = 0.0, 0.0
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr, dc) != (0, 0):
                    weight = (1 / 6 if dr == 0 or dc == 0 else 1 / 12) * inside[
                        r + 1 + dr, c + 1 + dc
                    ]
                    total = total + weight * padded[r + 1 + dr, c + 1 + dc]
                    weights += weight
        np.testing.assert_allclose(expected[r, c], total / weights, atol=1e-10)
    # (batch, H, W) input: the same values as a single channel.
    gray = noisy_linear_imputation(image[None, ..., 0], mask[None], noise=0.0)[0]
    np.testing.assert_allclose(gray, expected[..., 0], rtol=1e-5, atol=1e-6)


def test_imputation_noise_has_the_right_std_and_is_seeded():
    """Oracle: the noise-free solution (`_dense_imputation`); the difference
    on removed pixels is N(0, noise^2): sample std within 10% of `noise`
    (about 1800 draws, so > 4 standard errors), mean within 0.1 noise; kept
    pixels untouched; the same seed gives the same images, another seed not,
    and image b's noise is the documented `default_rng([seed, b])` stream."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 20, 20, 3)).astype("float64")
    mask = rng.random((2, 20, 20)) < 0.75
    noise = 0.5
    out = noisy_linear_imputation(images, mask, noise=noise, seed=7)
    clean = np.stack(
        [_dense_imputation(i, m) for i, m in zip(images, mask, strict=True)]
    )
    difference = (out - clean)[mask]
    assert difference.size > 1500
    assert abs(difference.std() - noise) < 0.1 * noise
    assert abs(difference.mean()) < 0.1 * noise
    np.testing.assert_array_equal(out[~mask], images[~mask])
    again = noisy_linear_imputation(images, mask, noise=noise, seed=7)
    np.testing.assert_array_equal(out, again)
    other = noisy_linear_imputation(images, mask, noise=noise, seed=8)
    assert not np.allclose(other[mask], out[mask])
    for b in range(2):
        stream = np.random.default_rng([7, b]).normal(0, noise, (int(mask[b].sum()), 3))
        np.testing.assert_allclose((out - clean)[b][mask[b]], stream, atol=1e-9)


def test_every_pixel_removed_is_imputed_as_zero_plus_noise():
    """Oracle: the documented fallback for the one singular system (no kept
    pixel): the minimum-norm solution 0, then noise from the image's stream."""
    image = np.full((1, 3, 4, 2), 5.0, "float32")
    mask = np.ones((1, 3, 4), bool)
    out = noisy_linear_imputation(image, mask, noise=0.0)
    np.testing.assert_array_equal(out, np.zeros_like(image))
    noisy = noisy_linear_imputation(image, mask, noise=0.1, seed=3)
    stream = np.random.default_rng([3, 0]).normal(0, 0.1, (12, 2))
    np.testing.assert_allclose(noisy[0].reshape(12, 2), stream, rtol=1e-6)


# ----------------------------------------------------------------------------
# road against a per-example loop


def _cnn(softmax=False, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(4, 3, activation="relu"),
            L.Flatten(),
            L.Dense(3, activation="softmax" if softmax else None),
        ]
    )


def _images(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, 3, n)


def _naive_road(model, x, y, maps, fractions, order, noise, seed, score, logits):
    """The test's own loop: per sample i, rank the pixels by attribution
    summed over channels (stable sort, ties to the lower index), remove the
    top (morf) or bottom (lerf) round(f * H * W), impute with
    `_dense_imputation` plus noise from `default_rng([seed, i, k])`, call
    `logits` (a model returning pre-softmax scores) on that one image and
    score it in NumPy."""
    rows = []
    for i, (image, target, m) in enumerate(zip(x, y, maps, strict=True)):
        relevance = m.sum(-1).ravel()
        ranking = np.argsort(
            -relevance if order == "morf" else relevance, kind="stable"
        )
        row = []
        for k, f in enumerate(fractions):
            chosen = np.zeros(relevance.size, bool)
            chosen[ranking[: int(round(f * relevance.size))]] = True
            chosen = chosen.reshape(image.shape[:-1])
            imputed = _dense_imputation(image, chosen)
            draws = np.random.default_rng([seed, i, k]).normal(
                0, noise, (int(chosen.sum()), image.shape[-1])
            )
            imputed[chosen] += draws
            z = logits(imputed[None].astype("float32")).numpy()[0].astype(np.float64)
            if score == "accuracy":
                row.append(float(np.argmax(z) == target))
            elif score == "probability":
                p = np.exp(z - z.max())
                row.append(p[target] / p.sum())
            else:
                row.append(z[target])
        rows.append(row)
    return np.array(rows)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, index):
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part], self.y[part]


def _forms(x, y):
    return {
        "arrays": lambda: (x, y),
        "tf.data": lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(3),
        "PyDataset": lambda: _Batches(x, y, 2),
        "generator": lambda: ((x[s : s + 4], y[s : s + 4]) for s in (0, 4)),
    }


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_matches_a_naive_per_example_loop_for_every_data_form(order):
    """Oracle: `_naive_road` (own ranking, own dense imputation and noise
    stream, one model call per image) for arrays, tf.data, a PyDataset and a
    generator, with batch_size=2 (several data batches, several model chunks
    per batch)."""
    model = _cnn()
    x, y = _images()
    maps = np.asarray(gradient_x_input(model, x, y))
    expected = {
        score: _naive_road(model, x, y, maps, FRACTIONS, order, 0.05, 4, score, model)
        for score in ("logit", "probability", "accuracy")
    }
    for name, data in _forms(x, y).items():
        for score in ("logit", "probability", "accuracy"):
            result = road(
                model,
                data(),
                maps,
                fractions=FRACTIONS,
                order=order,
                noise=0.05,
                score=score,
                seed=4,
                batch_size=2,
            )
            np.testing.assert_allclose(
                result.per_sample,
                expected[score],
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{name}, {score}",
            )
            np.testing.assert_allclose(result.curve, expected[score].mean(0), atol=1e-5)
            assert result.order == order and result.score == score


def test_road_with_a_softmax_model_method_and_wrapper():
    """Oracle: `_naive_road` on a twin model with the same weights ending in
    logits (its logits and softmax give S_c and the probability); the
    attributions as a method, a method's name and the wrapped model all give
    the same curve, independent of batch_size."""
    model = _cnn(softmax=True)
    twin = _cnn(softmax=False)
    twin.set_weights(model.get_weights())
    x, y = _images(4, seed=2)
    maps = np.asarray(gradient_x_input(model, x, y))
    for score in ("probability", "logit"):
        expected = _naive_road(
            model, x, y, maps, FRACTIONS, "morf", 0.01, 0, score, twin
        )
        result = road(model, (x, y), gradient_x_input, FRACTIONS, score=score)
        np.testing.assert_allclose(result.per_sample, expected, rtol=1e-4, atol=1e-5)
        assert result.label == "gradient_x_input"
    by_name = road(model, (x, y), "gradient_x_input", FRACTIONS, batch_size=1)
    wrapped = kar.AttributionRegularizedModel(model, kar.L1GradientPenalty(0.1))
    by_wrapper = road(wrapped, (x, y), maps, FRACTIONS, batch_size=3)
    np.testing.assert_array_equal(by_name.per_sample, by_wrapper.per_sample)


def _gray_and_channel_twins():
    """A model on (8, 8) images and its twin on (8, 8, 1) with the same weights."""
    keras.utils.set_random_seed(3)
    gray = keras.Sequential(
        [keras.Input((8, 8)), L.Reshape((8, 8, 1)), L.Conv2D(2, 3), L.Flatten()]
        + [L.Dense(3)]
    )
    channel = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Conv2D(2, 3), L.Flatten(), L.Dense(3)]
    )
    channel.set_weights(gray.get_weights())
    return gray, channel


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("layout", ["exact in float32", "float64 sums", "grayscale"])
def test_tied_relevance_goes_to_the_lower_index(order, layout):
    """Oracle: `_naive_road` (NumPy's stable argsort of the channel sums, where
    -0.0 == 0.0) on maps full of ties: integers in -2..2 with zeros of both
    signs, on 9 fractions whose cuts fall inside the tie groups. Channel sums
    that float32 holds exactly take ROAD's integer-key sort; a second channel
    of 2**-30 makes them need float64 and takes its other path; grayscale
    (H, W) maps reach the ranking unsummed, signed zeros and all (scored
    against the (H, W, 1) twin of the model)."""
    rng = np.random.default_rng(9)
    values = rng.integers(-2, 3, size=(4, 8, 8)).astype("float32")
    signs = np.where(rng.random((4, 8, 8)) < 0.5, -1.0, 1.0).astype("float32")
    values = np.where(values == 0, np.copysign(np.float32(0), signs), values)
    fractions = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))
    if layout == "grayscale":
        model, twin = _gray_and_channel_twins()
        x, y = _images(4, seed=8)
        x, maps, naive_x, naive_maps = x[..., 0], values, x[..., :1], values[..., None]
    else:
        model = twin = _cnn()
        x, y = _images(4, seed=8)
        second = (
            np.copysign(np.float32(0), signs)
            if layout == "exact in float32"
            else np.full((4, 8, 8), 2.0**-30, "float32")
        )
        maps = naive_maps = np.stack([values, second], axis=-1)
        naive_x = x
    expected = _naive_road(
        twin, naive_x, y, naive_maps, fractions, order, 0.0, 0, "logit", twin
    )
    result = road(model, (x, y), maps, fractions, order=order, noise=0.0, score="logit")
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-4, atol=1e-5)


def test_fixed_imputation_matches_a_naive_loop():
    """Oracle: the test's own loop setting the removed pixels to the baseline
    (a non-zero array) and calling the model per image."""
    model = _cnn()
    x, y = _images(3, seed=5)
    maps = np.asarray(gradient_x_input(model, x, y))
    baseline = np.random.default_rng(6).normal(size=(8, 8, 2)).astype("float32")
    result = road(
        model,
        (x, y),
        maps,
        FRACTIONS,
        order="lerf",
        imputation="fixed",
        baseline=baseline,
        score="logit",
    )
    rows = []
    for image, target, m in zip(x, y, maps, strict=True):
        ranking = np.argsort(m.sum(-1).ravel(), kind="stable")
        row = []
        for f in FRACTIONS:
            chosen = np.zeros(64, bool)
            chosen[ranking[: int(round(f * 64))]] = True
            perturbed = np.where(chosen.reshape(8, 8, 1), baseline, image)
            row.append(model(perturbed[None]).numpy()[0, target])
        rows.append(row)
    np.testing.assert_allclose(result.per_sample, rows, rtol=1e-4, atol=1e-5)
    assert result.imputation == "fixed"


def test_grayscale_images_without_a_channel_axis():
    """Oracle: the same images with a channel axis of 1, scored by a model
    with the same weights on (H, W, 1) inputs: (batch, H, W) samples give the
    same curves for both imputations."""
    gray, channel = _gray_and_channel_twins()
    x, y = _images(3, seed=7)
    x = x[..., :1]
    maps = np.asarray(gradient_x_input(channel, x, y))
    for imputation in ("linear", "fixed"):
        args = dict(fractions=FRACTIONS, score="logit", imputation=imputation)
        expected = road(channel, (x, y), maps, baseline=0.5, **args)
        result = road(gray, (x[..., 0], y), maps[..., 0], baseline=0.5, **args)
        np.testing.assert_allclose(
            result.per_sample, expected.per_sample, rtol=1e-5, atol=1e-6
        )


# ----------------------------------------------------------------------------
# A linear model with a known ranking


def _linear_model(weights):
    model = keras.Sequential(
        [keras.Input((6, 6, 1)), L.Flatten(), L.Dense(2, use_bias=False)]
    )
    model.layers[-1].set_weights([np.stack([weights, -weights], axis=1)])
    return model


def test_linear_model_morf_falls_below_lerf():
    """Oracle: a hand-set linear model S_0(x) = sum_i w_i x_i (w = 1, x > 0),
    for which w*x is the exact contribution of each pixel: with a fixed zero
    baseline the curve is S_0 minus the sum of the removed contributions
    (top ones for MoRF, bottom ones for LeRF, derived here by sorting); with
    noisy linear imputation a removed peak (large w*x) is replaced by a mean
    of smaller neighbours, so the MoRF logit falls as pixels are removed and
    stays below LeRF's, which removes the troughs and rises."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    weights = np.ones(36, "float32")
    x = rng.uniform(0.1, 1.0, size=(4, 6, 6, 1)).astype("float32")
    y = np.zeros(4, "int64")
    maps = x * weights.reshape(6, 6, 1)
    fractions = (0.1, 0.3, 0.5, 0.7, 0.9)
    contributions = np.sort(maps.reshape(4, 36), axis=1)
    total = contributions.sum(1)
    counts = [int(round(f * 36)) for f in fractions]
    morf_fixed = np.stack(
        [total - contributions[:, ::-1][:, :n].sum(1) for n in counts], axis=1
    )
    lerf_fixed = np.stack([total - contributions[:, :n].sum(1) for n in counts], 1)
    model = _linear_model(weights)
    args = dict(fractions=fractions, score="logit", imputation="fixed")
    morf = road(model, (x, y), maps, order="morf", **args)
    lerf = road(model, (x, y), maps, order="lerf", **args)
    np.testing.assert_allclose(morf.per_sample, morf_fixed, rtol=1e-5)
    np.testing.assert_allclose(lerf.per_sample, lerf_fixed, rtol=1e-5)
    args = dict(fractions=fractions, score="logit", noise=0.0)
    morf = road(model, (x, y), maps, order="morf", **args)
    lerf = road(model, (x, y), maps, order="lerf", **args)
    assert np.all(np.diff(morf.curve) < 0), morf.curve
    assert np.all(morf.curve < lerf.curve), (morf.curve, lerf.curve)
    assert morf.curve[0] < total.mean() < lerf.curve[0]
    assert morf.area() < lerf.area()


# ----------------------------------------------------------------------------
# The result object


def test_result_statistics_dict_and_plot(tmp_path):
    """Oracle: np.std(ddof=1)/sqrt(m) and the trapezoid rule computed here;
    json round trip with NaN written as None; a PNG file on disk."""
    per_sample = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0], [1.0, 1.0, 0.0]])
    result = ROADResult(
        fractions=np.array([0.1, 0.5, 0.9]),
        curve=per_sample.mean(0),
        per_sample=per_sample,
        order="morf",
        score="accuracy",
        label="maps",
    )
    np.testing.assert_allclose(
        result.standard_error(), per_sample.std(0, ddof=1) / np.sqrt(3)
    )
    curve = per_sample.mean(0)
    trapezoid = 0.4 * (curve[0] + curve[1]) / 2 + 0.4 * (curve[1] + curve[2]) / 2
    assert result.area() == pytest.approx(trapezoid)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["area"] == pytest.approx(trapezoid)
    assert data["order"] == "morf" and data["num_samples"] == 3
    single = ROADResult(
        np.array([0.5]), np.array([np.nan]), np.array([[np.nan]]), "lerf", "logit"
    )
    data = json.loads(json.dumps(single.to_dict()))
    assert data["curve"] == [None] and data["standard_error"] == [None]
    path = tmp_path / "road.png"
    figure = result.plot(path, single, label="renamed")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels[0].startswith("renamed, MORF") and labels[1].startswith(
        "precomputed maps, LERF"
    )


# ----------------------------------------------------------------------------
# Bad arguments


def _token_model():
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            L.Embedding(10, 4),
            L.GlobalAveragePooling1D(),
            L.Dense(2),
        ]
    )


@pytest.mark.parametrize(
    "kwargs, name, received",
    [
        ({"fractions": (0.0, 0.5)}, "fractions", "0.0"),
        ({"fractions": (0.5, 1.0)}, "fractions", "1.0"),
        ({"fractions": 1.5}, "fractions", "1.5"),
        ({"fractions": ()}, "fractions", "()"),
        ({"order": "top"}, "order", "'top'"),
        ({"score": "loss"}, "score", "'loss'"),
        ({"noise": -1}, "noise", "noise=-1"),
        ({"imputation": "blur"}, "imputation", "'blur'"),
        ({"seed": -2}, "seed", "seed=-2"),
        ({"batch_size": 0}, "batch_size", "batch_size=0"),
        ({"imputation": "fixed", "baseline": np.zeros(3)}, "baseline", "(3,)"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, name, received):
    """Oracle: the Keras-style message 'Invalid value for argument <name>:
    ... Received: ...' with the value given."""
    model = _cnn()
    x, y = _images(2)
    with pytest.raises(ValueError, match=f"argument {name}") as error:
        road(model, (x, y), np.ones_like(x), **kwargs)
    assert received in str(error.value)


def test_bad_imputation_arguments_and_token_models():
    """Oracle: the Keras-style messages naming noise, x and mask, and the
    message that ROAD's imputation is defined for images."""
    x = np.zeros((1, 4, 4, 1), "float32")
    mask = np.zeros((1, 4, 4), bool)
    with pytest.raises(ValueError, match="argument noise") as error:
        noisy_linear_imputation(x, mask, noise=-1)
    assert "Received: noise=-1" in str(error.value)
    with pytest.raises(ValueError, match="argument mask"):
        noisy_linear_imputation(x, mask[:, :3])
    with pytest.raises(ValueError, match="argument mask"):
        noisy_linear_imputation(x, mask.astype(int))
    with pytest.raises(ValueError, match="argument x"):
        noisy_linear_imputation(x[0, 0], mask)
    ids = np.ones((2, 5), "int32")
    with pytest.raises(ValueError, match="defined for images"):
        road(_token_model(), (ids, np.zeros(2, "int64")), np.ones((2, 5)))
    vectors = keras.Sequential([keras.Input((6,)), L.Dense(2)])
    with pytest.raises(ValueError, match="defined for images"):
        road(vectors, (np.zeros((2, 6)), np.zeros(2, "int64")), np.ones((2, 6)))
