"""GAP: descriptor strings, gap_fit, gap.xml models, stand-in labels, cross-validation."""
