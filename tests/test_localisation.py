"""Localisation scores against naive per-pixel loops and hand-derived cases."""

import numpy as np
import pytest

from keras_attreg.evaluation.localisation import mass_in_box, pointing_game


def _naive_mass(maps, boxes):
    shares = []
    for attribution, (y0, x0, y1, x1) in zip(maps, boxes, strict=True):
        inside = total = 0.0
        for row in range(attribution.shape[0]):
            for column in range(attribution.shape[1]):
                value = float(np.abs(attribution[row, column]).sum())
                total += value
                if y0 <= row < y1 and x0 <= column < x1:
                    inside += value
        shares.append(inside / total)
    return np.array(shares)


def _naive_pointing(maps, boxes, tolerance):
    hits = []
    for attribution, (y0, x0, y1, x1) in zip(maps, boxes, strict=True):
        magnitude = np.abs(attribution).sum(axis=-1)
        best, point = -1.0, None
        for row in range(magnitude.shape[0]):
            for column in range(magnitude.shape[1]):
                if magnitude[row, column] > best:
                    best, point = magnitude[row, column], (row, column)
        row, column = point
        hits.append(
            y0 - tolerance <= row < y1 + tolerance
            and x0 - tolerance <= column < x1 + tolerance
        )
    return np.array(hits)


def _random_case(seed, n=12, size=9, channels=3):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(n, size, size, channels))
    y0, x0 = rng.integers(0, size - 1, (2, n))
    y1 = y0 + 1 + rng.integers(0, size - y0)
    x1 = x0 + 1 + rng.integers(0, size - x0)
    return maps, np.stack([y0, x0, y1, x1], axis=1)


def test_mass_in_box_matches_naive_loop_on_signed_multichannel_maps():
    maps, boxes = _random_case(0)
    np.testing.assert_allclose(mass_in_box(maps, boxes), _naive_mass(maps, boxes))


def test_mass_in_box_hand_case_uses_magnitude_summed_over_channels():
    maps = np.zeros((1, 4, 4, 2))
    maps[0, 1, 1] = [-2.0, 1.0]  # inside: |R| = 3
    maps[0, 3, 0] = [0.5, -0.5]  # outside: |R| = 1
    assert mass_in_box(maps, np.array([[0, 0, 2, 2]]))[0] == pytest.approx(0.75)


def test_mass_in_box_is_one_for_whole_image_box_and_nan_for_empty_map():
    maps = np.ones((2, 5, 5))
    maps[1] = 0.0
    shares = mass_in_box(maps, np.array([[0, 0, 5, 5], [0, 0, 5, 5]]))
    assert shares[0] == pytest.approx(1.0)
    assert np.isnan(shares[1])


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_pointing_game_matches_naive_loop(tolerance):
    maps, boxes = _random_case(1, n=40)
    np.testing.assert_array_equal(
        pointing_game(maps, boxes, tolerance), _naive_pointing(maps, boxes, tolerance)
    )


def test_pointing_game_hand_case_with_tolerance():
    maps = np.zeros((3, 6, 6))
    maps[0, 2, 2] = 1.0  # inside [1, 3) x [1, 3)
    maps[1, 3, 3] = 1.0  # one pixel below-right of the box (exclusive end)
    maps[2, 5, 5] = 1.0  # three pixels away
    boxes = np.array([[1, 1, 3, 3]] * 3)
    np.testing.assert_array_equal(pointing_game(maps, boxes), [True, False, False])
    np.testing.assert_array_equal(
        pointing_game(maps, boxes, tolerance=1), [True, True, False]
    )


def test_scores_on_cluttered_mnist_ground_truth_masks():
    from keras_attreg.datasets import load_mnist_sample, make_cluttered_mnist

    x, y = load_mnist_sample("test")
    data = make_cluttered_mnist(x[:10], y[:10], canvas_size=40, seed=3)
    # A map equal to the digit's own ink lies entirely inside its box.
    ink = data.masks.astype(float)
    np.testing.assert_allclose(mass_in_box(ink, data.boxes), 1.0)
    assert pointing_game(ink, data.boxes).all()


@pytest.mark.parametrize(
    "boxes, match",
    [
        (np.array([[0, 0, 2, 2]]), "boxes"),
        (np.array([[0, 0, 2, 2], [2, 2, 2, 4]]), "non-empty"),
        (np.array([[0, 0, 2, 9], [0, 0, 1, 1]]), "x1 <= 4"),
        (np.array([[0.0, 0, 2, 2], [0, 0, 1, 1]]), "integer"),
    ],
)
def test_bad_boxes_raise_naming_the_argument(boxes, match):
    with pytest.raises(ValueError, match=match):
        mass_in_box(np.ones((2, 4, 4)), boxes)
    with pytest.raises(ValueError, match="boxes"):
        pointing_game(np.ones((2, 4, 4)), boxes)


def test_bad_maps_and_tolerance_raise():
    with pytest.raises(ValueError, match="attributions"):
        mass_in_box(np.ones((2, 4)), np.array([[0, 0, 1, 1]] * 2))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(np.ones((1, 4, 4)), np.array([[0, 0, 1, 1]]), tolerance=-1)
