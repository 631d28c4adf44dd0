"""Attribution methods, one function each: `method(model, x, targets, **options)`.

Every method takes a batch (array, tensor, or a `tf.data.Dataset` of
`(x, labels)` batches) and returns attributions of the shape of `x`, computed
on S_c(x), the pre-softmax logit of the target class c.
"""

from keras_attreg.attributions.gradient import (
    gradient_x_input,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from keras_attreg.attributions.modified_gradient import deeplift_rescale, epsilon_lrp
from keras_attreg.attributions.occlusion import occlusion

__all__ = [
    "deeplift_rescale",
    "epsilon_lrp",
    "gradient_x_input",
    "integrated_gradients",
    "occlusion",
    "saliency",
    "smoothgrad",
]
