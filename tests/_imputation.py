"""The tests' own noisy-linear-imputation solver (no code of the package)."""

import numpy as np


def dense_imputation(image, mask):
    """The test's own solver: one equation per removed pixel,

        sum_j w_ij * x_i - sum_{j removed} w_ij * x_j = sum_{j kept} w_ij * x_j

    over the 8 neighbours j inside the image (1/6 direct, 1/12 diagonal),
    written with Python loops and solved densely by `np.linalg.solve`.
    `image` is (H, W, C), `mask` (H, W); returns a float64 copy."""
    image = np.asarray(image, np.float64)
    height, width, channels = image.shape
    removed = [(r, c) for r in range(height) for c in range(width) if mask[r, c]]
    position = {pixel: n for n, pixel in enumerate(removed)}
    matrix = np.zeros((len(removed), len(removed)))
    rhs = np.zeros((len(removed), channels))
    for n, (r, c) in enumerate(removed):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr, dc) == (0, 0):
                    continue
                rr, cc = r + dr, c + dc
                if not (0 <= rr < height and 0 <= cc < width):
                    continue
                weight = 1 / 6 if dr == 0 or dc == 0 else 1 / 12
                matrix[n, n] += weight
                if mask[rr, cc]:
                    matrix[n, position[(rr, cc)]] -= weight
                else:
                    rhs[n] += weight * image[rr, cc]
    out = image.copy()
    if removed:
        solution = np.linalg.solve(matrix, rhs)
        for n, (r, c) in enumerate(removed):
            out[r, c] = solution[n]
    return out
