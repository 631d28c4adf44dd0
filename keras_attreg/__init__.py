"""keras-attreg: attribution-regularised training and faithful attribution evaluation."""
