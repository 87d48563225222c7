"""An MD pool of Zr made with ASE + matscipy's EAM, and the picks of a design counted by origin.

Five short Langevin runs with the Mendelev-Ackland EAM (``Zr_mm.eam.fs``): hcp bulk at 300 K
and 1500 K, the same cell with a vacancy at both temperatures, and a (0001) slab at 300 K
(periodic in-plane, isolated along z: ``pbc="T T F"``). Each run is written as its own ASE
trajectory ``<origin>.traj``; every frame carries ``origin`` (also as ``config_type`` and
``structure``) and the EAM's energy, forces and stress.

    python md_pool.py pool --eam Zr_mm.eam.fs -o md       # md/bulk_300K.traj, ...
    python md_pool.py pool --eam Zr_mm.eam.fs -o md --repeat 4 2 3 --slab-size 4 4 --layers 5
                                                          # 95-96-atom bulk, 80-atom slab
    python md_pool.py count train.xyz                     # picks per origin

``run.sh`` beside this file is the whole worked example (pool -> describe -> select ->
write -> label -> fit); ``docs/md-pools.md`` explains it.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

#: hcp Zr (the paper's lattice)
A, C = 3.232, 5.147


def cells(
    repeat: tuple[int, int, int] = (2, 1, 2), layers: int = 4, slab_size: tuple[int, int] = (2, 2)
) -> dict:
    """The starting cells by origin: bulk (the 4-atom orthorhombic hcp cell times
    ``repeat``), a vacancy in it, and a (0001) slab of ``slab_size`` x ``layers`` atoms."""
    from ase.build import bulk, hcp0001

    b = bulk("Zr", "hcp", a=A, c=C, orthorhombic=True).repeat(repeat)
    vac = b.copy()
    del vac[0]
    slab = hcp0001("Zr", size=(*slab_size, layers), a=A, c=C, vacuum=6.0)
    slab.pbc = [True, True, False]
    slab.info.pop("adsorbate_info", None)  # ASE's build note: not a label, not for extxyz
    return {
        "bulk_300K": (b, 300),
        "bulk_1500K": (b, 1500),
        "vacancy_300K": (vac, 300),
        "vacancy_1500K": (vac, 1500),
        "slab_300K": (slab, 300),
    }


def run_md(atoms, calc, temperature: float, snapshots: int, every: int, seed: int) -> list:
    """Langevin MD (2 fs): ``every * 5`` steps to warm up, then ``snapshots`` frames
    ``every`` steps apart, each with the calculator's energy, forces and stress."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    try:  # ASE >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    a = atoms.copy()
    a.calc = calc
    a.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    thermalize_momenta(a, temperature_K=temperature, rng=rng)
    md = Langevin(a, 2 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    md.run(5 * every)
    frames = []
    for _ in range(snapshots):
        md.run(every)
        f = a.copy()
        f.set_constraint()  # the MD's constraint is not part of the configuration
        stress = a.get_stress() if all(a.pbc) else None
        f.calc = SinglePointCalculator(
            f, energy=a.get_potential_energy(), forces=a.get_forces(), stress=stress
        )
        frames.append(f)
    return frames


def make_pool(out: Path, eam: Path, snapshots: int = 20, every: int = 10, seed: int = 1, **kw):
    """Write ``out/<origin>.traj`` for every origin; return the paths (sorted, as a shell
    glob ``out/*.traj`` lists them)."""
    import ase.io

    from mlpdesign.gap.label import eam_calculator

    out.mkdir(parents=True, exist_ok=True)
    calc = eam_calculator(eam)
    paths = []
    for k, (origin, (atoms, temp)) in enumerate(cells(**kw).items()):
        frames = run_md(atoms, calc, temp, snapshots, every, seed + k)
        for f in frames:
            f.info.update(origin=origin, config_type=origin, structure=origin)
        ase.io.write(out / f"{origin}.traj", frames)
        paths.append(out / f"{origin}.traj")
    return sorted(paths)


def count_origins(path: Path) -> dict[str, int]:
    """Configurations per ``origin`` in an extxyz file (e.g. the written picks)."""
    import ase.io

    return dict(collections.Counter(a.info.get("origin", "?") for a in ase.io.read(path, ":")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pool", help="run the MD and write one .traj per origin")
    p.add_argument("--eam", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, default=Path("md"))
    p.add_argument("--snapshots", type=int, default=20, help="frames per run")
    p.add_argument("--every", type=int, default=10, help="MD steps between frames")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--repeat", type=int, nargs=3, default=(2, 1, 2), metavar=("NX", "NY", "NZ"),
        help="bulk cell: the 4-atom orthorhombic hcp cell times NX NY NZ (2 1 2: 16 atoms; "
        "4 2 3: 96)",
    )  # fmt: skip
    p.add_argument(
        "--slab-size", type=int, nargs=2, default=(2, 2), metavar=("NX", "NY"),
        help="slab: NX x NY atoms per (0001) layer (2 2)",
    )  # fmt: skip
    p.add_argument("--layers", type=int, default=4, help="slab layers (4)")
    c = sub.add_parser("count", help="picks per origin in an extxyz file")
    c.add_argument("file", type=Path)
    args = ap.parse_args()
    if args.what == "pool":
        cells = {"repeat": tuple(args.repeat), "layers": args.layers}
        cells["slab_size"] = tuple(args.slab_size)
        for path in make_pool(
            args.output, args.eam, args.snapshots, args.every, args.seed, **cells
        ):
            print(path)
    else:
        for origin, n in sorted(count_origins(args.file).items()):
            print(f"{origin:15s} {n}")


if __name__ == "__main__":
    main()
