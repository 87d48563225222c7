"""The report stage: label-free quality of designs, metrics and figures."""
