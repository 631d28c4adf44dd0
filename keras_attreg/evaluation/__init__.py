"""Evaluation of attribution maps."""

from keras_attreg.evaluation.sensitivity_n import SensitivityNResult, sensitivity_n

__all__ = ["SensitivityNResult", "sensitivity_n"]
