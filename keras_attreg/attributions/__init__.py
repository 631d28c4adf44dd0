"""Attribution methods, one function each: `method(model, x, targets, **options)`.

Every method takes a batch (array, tensor, or a `tf.data.Dataset` of
`(x, labels)` batches) and returns attributions of the shape of `x`, computed
on S_c(x), the pre-softmax logit of the target class c. For models on token
ids the maps are taken at the Embedding output and summed per token: shape
(batch, seq_len). For a model with several inputs, x is a list or dict of arrays
(as `fit` takes it) and the maps come back in the same structure, one per input.
`get("name")` returns a method by name.
"""

from keras_attreg.attributions.gradient import (
    METHOD_NAMES,
    get,
    gradient_x_input,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from keras_attreg.attributions.modified_gradient import deeplift_rescale, epsilon_lrp
from keras_attreg.attributions.occlusion import occlusion

__all__ = [
    "METHOD_NAMES",
    "deeplift_rescale",
    "epsilon_lrp",
    "get",
    "gradient_x_input",
    "integrated_gradients",
    "occlusion",
    "saliency",
    "smoothgrad",
]
