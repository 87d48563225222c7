"""The generate stage: pools of deformed crystals."""
