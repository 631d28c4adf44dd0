"""Preprocessing and augmentation layers inside a model.

`Rescaling` and `Normalization` are fixed affine maps. Keras's image
preprocessing layers are the identity (the random ones) or a fixed
resize/crop at inference. In training mode each draws its parameters
(an angle, a zoom, a contrast factor...) once per call and then applies a map
that is affine in its input for those parameters,

    z = T_theta a + b_theta

(a flip or crop moves pixels, a rotation or zoom interpolates them, a contrast
or brightness change scales and shifts them, clipped to `value_range`). The
relevance goes back through exactly that map, by the epsilon rule at eps = 0
(the z rule) with `T_theta` the Jacobian recorded by the rule's tape around the
layer's one forward call:

    R_a = a * T_theta^T (R_z / z)      (0 where z = 0)

No stabiliser: these maps scale, move, interpolate and blend pixels rather
than detect features, so no relevance is absorbed on the way (a layer that is
the identity or a scaling passes R_a = R_z, and the maps at inference are
those of the model without the layer, on the rescaled input). Relevance
reaching a tensor is proportional to its value under the rules of the pass,
so a zero output has none to divide. The draw is the one whose output the
rest of the graph (and the task loss of the FBI step) sees: the layer runs
once per forward pass. An additive offset (a brightness shift, the fill of
an erased patch, the mean of `Normalization`) absorbs its share, as a bias
does; a clipped pixel passes none (its derivative is 0). The relevance is
a * dS_c/da wherever the relevance above is z * dS_c/dz (eps -> 0 in the
layers above), and flips, crops and zero-filled transforms without clipping
conserve it.

Token preprocessing (lookups, hashing, discretisation, category encoding)
maps to integers or counts of integers: relevance stops there, as at the
Embedding. Layers whose training-time map is not affine in the input are
refused in training mode (they are the identity at inference, where they pass
relevance on), with the reason in the error (and in docs/relevance.md).
"""

from __future__ import annotations

import keras

from keras_attreg.relevance.rules import EpsilonRule


def _layers(*names: str) -> tuple:
    return tuple(
        getattr(keras.layers, name) for name in names if hasattr(keras.layers, name)
    )


PREPROCESSING_LAYERS = _layers(
    "Rescaling",
    "Normalization",
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomShear",
    "RandomPerspective",
    "RandomElasticTransform",
    "RandomCrop",
    "CenterCrop",
    "Resizing",
    "RandomContrast",
    "RandomBrightness",
    "RandomGrayscale",
    "RandomColorDegeneration",
    "RandomSharpness",
    "RandomGaussianBlur",
    "RandomErasing",
    "RandomInvert",
)
"""Layers affine in their input (for the drawn parameters): rescaling and
normalisation, and the image layers (geometric
transforms with their interpolation, crops and resizes, and intensity maps:
scale, shift, blend with the grayscale or blurred image, blur, erasing,
inversion), each clipped to `value_range` where the layer clips."""

TOKEN_PREPROCESSING_LAYERS = _layers(
    "TextVectorization",
    "StringLookup",
    "IntegerLookup",
    "Hashing",
    "HashedCrossing",
    "Discretization",
    "CategoryEncoding",
)
"""Layers from strings, ids or buckets to integers (or counts of integers):
not differentiable, relevance stops at them."""

_NOT_AFFINE = "its training-time map is not affine in the input"
_REFUSED_IN_TRAINING = {
    "RandomHue": f"{_NOT_AFFINE} (a rotation of the hue in HSV space)",
    "RandomSaturation": f"{_NOT_AFFINE} (a scaling of the saturation in HSV space)",
    "RandomColorJitter": f"{_NOT_AFFINE} (it includes hue and saturation changes)",
    "RandomPosterization": f"{_NOT_AFFINE} (bits dropped: piecewise constant)",
    "Solarization": f"{_NOT_AFFINE} (pixels above a threshold of their own value "
    "are inverted)",
    "Equalization": f"{_NOT_AFFINE} (a histogram equalisation, piecewise constant)",
    "MixUp": "it mixes the examples of the batch, so one example's relevance "
    "would flow to another's input",
    "CutMix": "it mixes the examples of the batch, so one example's relevance "
    "would flow to another's input",
    "AugMix": f"{_NOT_AFFINE} (random chains that include posterization and "
    "equalisation)",
    "RandAugment": f"{_NOT_AFFINE} (random operations that include "
    "posterization, solarization and hue changes)",
}
_REFUSED = {
    "AutoContrast": "its map (a - min(a)) / (max(a) - min(a)) is not affine in "
    "the input (the range is the image's own), at inference as in training",
    "MelSpectrogram": "a log-mel power spectrum is not linear in the signal",
    "STFTSpectrogram": "a spectrogram's magnitude, power or angle is not linear "
    "in the signal",
}
_NO_GRADIENT = {"area"}
"""Resizing interpolations whose TensorFlow kernel has no gradient."""


REFUSED_LAYERS = _layers(*_REFUSED_IN_TRAINING, *_REFUSED)
"""The refused preprocessing layers: `PreprocessingRule` raises, naming the
reason (those that are the identity at inference in training mode only)."""


class PreprocessingRule(EpsilonRule):
    """The z rule through the map a preprocessing layer drew in this forward
    call (see the module docstring):

        R_a = a * T_theta^T (R_z / z),   z = T_theta a + b_theta

    The layer runs once, under the rule's tape; its output is what the rest of
    the graph reads, so the relevance, the task loss and the FBI penalty share
    one draw. Refused with a `ValueError` naming the layer and the reason: the
    layers whose map is not affine (`RandomHue`, `MixUp`...: in training mode
    only, as they are the identity at inference; `AutoContrast` and the
    spectrograms always) and `Resizing` with `interpolation="area"` (no
    gradient in TensorFlow).

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.RandomFlip(seed=0), keras.layers.Conv2D(2, 3),
    ...     keras.layers.GlobalAveragePooling2D()])
    >>> from keras_attreg.relevance import relevance_map
    >>> relevance_map(model, tf.ones((1, 8, 8, 3)), [0]).shape
    TensorShape([1, 8, 8, 3])
    """

    def __init__(self):
        super().__init__(0.0)

    def forward(self, call):
        layer = call.operation
        name = type(layer).__name__
        refused = {**_REFUSED, **(_REFUSED_IN_TRAINING if call.training else {})}
        reason = next(
            (refused[c.__name__] for c in type(layer).__mro__ if c.__name__ in refused),
            None,
        )
        interpolation = getattr(layer, "interpolation", None)
        if reason is None and interpolation in _NO_GRADIENT:
            reason = f"TensorFlow has no gradient for interpolation={interpolation!r}"
        if reason is not None:
            raise ValueError(
                f"The relevance pass refuses layer {layer.name!r} of type {name}"
                f"{' in training mode' if call.training else ''}: {reason}. "
                f"Received: training={call.training}"
            )
        return super().forward(call)
