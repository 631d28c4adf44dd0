"""Evaluation of attribution maps: faithfulness (Sensitivity-n, deletion and
insertion, ROAD, infidelity, the randomisation test), localisation, the
wrong-reason score, the BatchNorm probe."""

from keras_attreg.evaluation.bn_probe import ZeroPixelProbeResult, zero_pixel_probe
from keras_attreg.evaluation.deletion import (
    PerturbationCurveResult,
    deletion,
    insertion,
)
from keras_attreg.evaluation.infidelity import InfidelityResult, infidelity
from keras_attreg.evaluation.localisation import mass_in_box, pointing_game
from keras_attreg.evaluation.randomisation import (
    RandomisationResult,
    model_randomisation,
)
from keras_attreg.evaluation.road import ROADResult, noisy_linear_imputation, road
from keras_attreg.evaluation.sensitivity_n import SensitivityNResult, sensitivity_n
from keras_attreg.evaluation.wrong_reason import WrongReasonResult, wrong_reason_score

__all__ = [
    "InfidelityResult",
    "PerturbationCurveResult",
    "ROADResult",
    "RandomisationResult",
    "SensitivityNResult",
    "WrongReasonResult",
    "ZeroPixelProbeResult",
    "deletion",
    "infidelity",
    "insertion",
    "mass_in_box",
    "model_randomisation",
    "noisy_linear_imputation",
    "pointing_game",
    "road",
    "sensitivity_n",
    "wrong_reason_score",
    "zero_pixel_probe",
]
