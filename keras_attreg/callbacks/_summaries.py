"""TensorBoard summaries written without TensorBoard installed, and the display
normalisation of attribution maps (private to the callbacks)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework.summary_pb2 import SummaryMetadata

from keras_attreg.plotting import map_image


def normalized_maps(attributions) -> np.ndarray:
    """Display maps in [0, 1]: mean_c |R_{h,w,c}|, divided by each map's maximum.

    Args:
        attributions: array of shape (samples, H, W[, C]).

    Returns:
        Array of shape (samples, H, W, 1) (all zero for an all-zero map).
    """
    maps = np.stack([map_image(a) for a in np.asarray(attributions, "float64")])
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return (maps / np.where(peaks > 0, peaks, 1.0))[..., None]


def metadata(plugin: str) -> SummaryMetadata:
    return SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=plugin))


def write_images(tag: str, images: np.ndarray, step: int) -> None:
    """Writes images in [0, 1], shape (n, H, W, 1), as a TensorBoard image summary.

    The tensor TensorBoard's image plugin reads: `[width, height, png_1, ...]`,
    the PNGs 8-bit (v -> round(255 v)). Written with `tf.summary.write`, so no
    TensorBoard install is needed to log (only to view).
    """
    pixels = np.round(np.clip(images, 0.0, 1.0) * 255).astype("uint8")
    height, width = pixels.shape[1:3]
    encoded = [tf.io.encode_png(image) for image in pixels]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), *encoded])
    tf.summary.write(tag, tensor, step=step, metadata=metadata("images"))


def write_scalar(tag: str, value: float, step: int) -> None:
    """Writes a float32 scalar summary (TensorBoard's scalars plugin)."""
    tf.summary.write(
        tag, tf.constant(value, "float32"), step=step, metadata=metadata("scalars")
    )
