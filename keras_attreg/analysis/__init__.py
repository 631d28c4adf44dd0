"""Layer-wise activation analysis of trained models (Yoo et al., CVPR-W 2019).

Table 1 statistics (maximum, two skewness definitions), activation densities
(Fig. 3) and per-filter mean activation heatmaps (Fig. 2).
"""

from keras_attreg.analysis.plots import (
    plot_activation_densities,
    plot_filter_heatmaps,
    tile_filters,
)
from keras_attreg.analysis.statistics import (
    ActivationStatistics,
    activation_statistics,
    energy_skewness,
    layer_activations,
    statistics_table,
)

__all__ = [
    "ActivationStatistics",
    "activation_statistics",
    "energy_skewness",
    "layer_activations",
    "plot_activation_densities",
    "plot_filter_heatmaps",
    "statistics_table",
    "tile_filters",
]
