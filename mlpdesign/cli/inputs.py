"""Options of the commands that read configurations (written once, shared)."""

from __future__ import annotations

from .options import float_option

#: = mlpdesign.io.frames.MIN_DISTANCE (not imported: --help stays free of numpy)
MIN_DISTANCE = 0.5


def min_distance_option(f):
    """``--min-distance A``: the closest two atoms may be before a frame is refused."""
    return float_option(
        "--min-distance",
        default=MIN_DISTANCE,
        min=0,
        metavar="A",
        help="Refuse a frame with two atoms (or an atom and its periodic image) closer "
        "than this, in Angstrom (0: no check). Every frame is also checked for finite "
        "positions and a non-singular periodic cell.",
    )(f)
