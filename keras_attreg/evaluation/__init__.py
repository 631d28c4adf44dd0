"""Evaluation of attribution maps: Sensitivity-n, localisation, the BatchNorm probe."""

from keras_attreg.evaluation.bn_probe import ZeroPixelProbeResult, zero_pixel_probe
from keras_attreg.evaluation.localisation import mass_in_box, pointing_game
from keras_attreg.evaluation.sensitivity_n import SensitivityNResult, sensitivity_n

__all__ = [
    "SensitivityNResult",
    "ZeroPixelProbeResult",
    "mass_in_box",
    "pointing_game",
    "sensitivity_n",
    "zero_pixel_probe",
]
