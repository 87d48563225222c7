"""``mlpdesign generate``: write a pool of deformed crystals as extxyz."""

from __future__ import annotations

import click

from mlpdesign.generate.pool import (
    PoolSpec,
    eigen_bounds,
    generate,
    lattice_for,
    parse_structures,
    parse_supercell,
    shard_range,
)
from mlpdesign.progress import progress

from .options import (
    float_option,
    force_option,
    int_option,
    output_option,
    quiet_option,
    seed_option,
    shard_option,
)


@click.command("generate")
@click.option("-n", "n", type=int, required=True, help="Number of candidates in the whole pool.")
@output_option("Output extxyz file.")
@seed_option()
@click.option(
    "--structures",
    default="hcp:1,fcc:1,bcc:1",
    show_default=True,
    help="Structures and their weights, e.g. hcp:2,fcc:1,bcc:1.",
)
@click.option("--element", default="Zr", show_default=True, help="Chemical element.")
@float_option(
    "--max-strain",
    default=0.05,
    help="eps: strain eigenvalues are drawn uniformly from [1-eps, 1+eps].",
)
@float_option("--min-eigenvalue", help="Lower bound of the eigenvalues (overrides 1-eps).")
@float_option("--max-eigenvalue", help="Upper bound of the eigenvalues (overrides 1+eps).")
@float_option("--hcp-a", help="hcp a in Angstrom (Zr: 3.232).")
@float_option("--hcp-c", help="hcp c in Angstrom (Zr: 5.147).")
@float_option("--fcc-a", help="fcc a in Angstrom (default: same atomic volume as hcp).")
@float_option("--bcc-a", help="bcc a in Angstrom (default: same atomic volume as hcp).")
@click.option(
    "--supercell",
    default="1x1x1",
    show_default=True,
    help="Repeat of the primitive cell, e.g. 2x2x2.",
)
@int_option(
    "--start", default=0, help="Index of the first candidate to write (for splitting a pool)."
)
@int_option("--count", help="Write only this many candidates from --start (default: up to -n).")
@shard_option
@force_option
@quiet_option
def command(
    n,
    output,
    seed,
    structures,
    element,
    max_strain,
    min_eigenvalue,
    max_eigenvalue,
    hcp_a,
    hcp_c,
    fcc_a,
    bcc_a,
    supercell,
    start,
    count,
    shard,
    force,
    quiet,
) -> None:
    """Generate a pool of elastically deformed hcp/fcc/bcc crystals (extxyz).

    Each candidate is a primitive cell deformed by F = R diag(l1,l2,l3) R^T, with
    eigenvalues uniform in [1-eps, 1+eps] and R uniform on SO(3). Candidate i depends
    only on (seed, i): splitting a pool with --start/--count or --shard and concatenating
    the parts gives the same bytes as making it in one go.

    \b
    Examples:
      mlpdesign generate -n 100000 --seed 1 -o pool.xyz
      mlpdesign generate -n 5000 --structures hcp:2,fcc:1,bcc:1 --max-strain 0.05 -o pool.xyz
      mlpdesign generate -n 100000 --shard $SLURM_ARRAY_TASK_ID/16 -o pool-$SLURM_ARRAY_TASK_ID.xyz
    """
    from mlpdesign.errors import MlpdesignError

    if n <= 0:
        raise MlpdesignError(f"-n must be a positive number of candidates, got {n}")
    lo, hi = eigen_bounds(max_strain, min_eigenvalue, max_eigenvalue)
    spec = PoolSpec(
        element=element,
        structures=parse_structures(structures),
        lattice=lattice_for(element, hcp_a, hcp_c, fcc_a, bcc_a),
        supercell=parse_supercell(supercell),
        eig_min=lo,
        eig_max=hi,
        seed=seed,
    )
    empty = ""
    if shard is not None:
        if start or count is not None:
            raise MlpdesignError("--shard cannot be combined with --start/--count")
        start, count = shard_range(n, *shard)
        if count == 0:  # more shards than candidates: this one is empty, and that is fine
            empty = f" (shard {shard[0]}/{shard[1]} of {n} candidates is empty)"
    if empty:
        written = generate(output, 0, spec, start=start, force=force)
        if not quiet:
            click.echo(f"wrote 0 candidates{empty} to {output}", err=True)
        return
    if start < 0 or start >= n:
        raise MlpdesignError(f"--start must be in [0, {n}), got {start}")
    count = n - start if count is None else count
    if count <= 0 or start + count > n:
        raise MlpdesignError(
            f"--count must be in [1, {n - start}] for --start {start}, got {count}"
        )
    bar = progress(count, "generate", unit="cand", enabled=not quiet)
    written = generate(output, count, spec, start=start, force=force, progress=bar)
    bar.close()
    if not quiet:
        click.echo(
            f"wrote {written} candidates ({start}..{start + written - 1}) to {output}", err=True
        )
