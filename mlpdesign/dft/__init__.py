"""DFT: VASP inputs (vasp) and outputs (collect)."""
