"""``mlpdesign describe``: QUIP descriptors of a pool into an HDF5 store."""

from __future__ import annotations

import shlex

import click

from .inputs import MIN_DISTANCE, min_distance_option
from .options import (
    dtype_option,
    force_option,
    gap_option,
    int_option,
    jobs_option,
    output_option,
    quiet_option,
    shard_option,
)


def _command_line(
    pool, output: str, gap: str | None, shard, chunk_size, dtype, min_distance=MIN_DISTANCE
) -> str:
    """The command recorded in the store: what defines its content, not -j/-q/--force."""
    parts = ["mlpdesign", "describe", *pool, "-o", output]
    if gap is not None:
        parts += ["--gap", gap]
    if shard:
        parts += ["--shard", f"{shard[0]}/{shard[1]}"]
    if chunk_size:
        parts += ["--chunk-size", str(chunk_size)]
    if dtype != "float64":
        parts += ["--dtype", dtype]
    if min_distance != MIN_DISTANCE:
        parts += ["--min-distance", f"{min_distance:g}"]
    return " ".join(shlex.quote(p) for p in parts)


@click.command("describe")
@click.argument("pool", nargs=-1, required=True)
@output_option("Output store (HDF5), e.g. pool.h5.")
@gap_option(
    "GAP string: descriptors and their kernels, separated by ' : ', exactly as "
    "for gap_fit's gap={...}. Default: the paper's model (distance_2b 7 A + "
    "SOAP 6.8 A, l_max=n_max=10), with SOAP's Z set to the pool's elements.",
)
@jobs_option
@shard_option
@dtype_option("Storage type of descriptor rows (float32: half size).", ("float64", "float32"))
@int_option(
    "--chunk-size", min=1, help="Configs per resumable chunk (default: pool/64, at most 256)."
)
@click.option(
    "--restart",
    is_flag=True,
    help="Discard the saved chunks of an interrupted run instead of resuming.",
)
@min_distance_option
@force_option
@quiet_option
def command(
    pool, output, gap, jobs, shard, dtype, chunk_size, restart, min_distance, force, quiet
) -> None:
    """Compute QUIP descriptors of every configuration of POOL... into an HDF5 store.

    POOL: any file ASE reads (extxyz, plain XYZ, .traj, OUTCAR, vasprun.xml, LAMMPS
    dumps, ...), several files or quoted glob patterns, read as one pool in the order
    given; frames without a lattice or with pbc F are isolated configurations. Each
    candidate keeps its candidate_id (the frame's own, else its position in the pool) and
    its source (input, frame) in the store; the store's pool checksum covers every input.
    Every frame is checked before any work (finite positions, a non-singular periodic
    cell, no atoms closer than --min-distance).

    Descriptors and kernels come from one GAP string, the same you give gap_fit: the
    descriptor keys go to quippy, the kernel keys (covariance_type, delta, zeta,
    theta_uniform, ...) are stored beside them for 'select' and 'gap-command'. The
    string is checked before quippy sees it, so a typo costs one line, not a crash.

    Rows are stored per atom (SOAP) or per ordered pair (distance_2b), with QUIP's
    covariance-cutoff weights and per-config offsets. A killed run keeps its finished
    chunks in OUTPUT.partial/; running the same command again continues it and ends with
    the same file as an uninterrupted run. --shard i/n describes part i of n (SLURM arrays);
    'mlpdesign merge' joins the parts into the store an unsharded run would write.
    Under mpiexec/srun each rank describes a contiguous part and rank 0 merges them into
    OUTPUT: the same store as a serial run.

    \b
    Examples:
      mlpdesign describe pool.xyz -o pool.h5 --jobs 2
      mlpdesign describe md/run1.traj 'md/hot-*.xyz' vac/OUTCAR -o pool.h5
      mlpdesign describe pool.xyz -o pool.h5 --gap "distance_2b cutoff=7.0 \\
          covariance_type=ard_se delta=0.8 theta_uniform=0.3 : soap cutoff=6.8 l_max=10 \\
          n_max=10 normalize=T atom_sigma=0.15 n_Z=1 Z={40} covariance_type=dot_product \\
          zeta=4 delta=0.3"
      mlpdesign describe pool.xyz -o part-3.h5 --shard 3/16     # one SLURM array task
      mlpdesign merge part-*.h5 -o pool.h5
      mpiexec -n 4 mlpdesign describe pool.xyz -o pool.h5        # or srun: one store
      mlpdesign info pool.h5
    """
    from mlpdesign.describe import run
    from mlpdesign.progress import progress

    def log(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    from mlpdesign.mpi import world

    comm = world()
    cmd = _command_line(pool, output, gap, shard, chunk_size, dtype, min_distance)
    kwargs = dict(
        gap=gap,
        min_distance=min_distance,
        jobs=jobs,
        chunk_size=chunk_size,
        dtype=dtype,
        force=force,
        restart=restart,
        command=cmd,
        log=log,
        progress=lambda total, initial: progress(
            total, "describe", unit="cfg", enabled=not quiet, initial=initial
        ),
    )
    out = run(list(pool), output, comm=comm, shard=shard, **kwargs)
    if out is None:  # an MPI rank other than 0
        return
    if not quiet:
        from mlpdesign.io.store import open_store

        with open_store(out, check=False) as s:  # just written
            rows = ", ".join(
                f"{d.name}: {s.n_rows(k)} x {d.dim}" for k, d in enumerate(s.descriptors)
            )
            click.echo(f"wrote {s.n_configs} configs ({rows}) to {out}", err=True)
