"""``mlpdesign info``: what a pool, a descriptor store or a selection holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import print_format_option

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def format_summary(s: dict) -> str:
    """The summary of :meth:`mlpdesign.io.store.Store.summary` in words."""
    lines = [
        f"{s['path']}: mlpdesign descriptor store (format {s['format_version']}), "
        f"{_size(s['file_bytes'])}"
    ]
    if not s["shard"]:
        part = ""
    elif s["n_configs"]:
        a, b = s["config_start"], s["config_start"] + s["n_configs"] - 1
        part = f", shard {s['shard']} (configs {a}..{b} of {s['pool_n_configs']})"
    else:
        part = f", shard {s['shard']} (none of the pool's {s['pool_n_configs']} configs)"
    lines.append(f"  configs:     {s['n_configs']}{part}, {s['n_atoms']} atoms")
    if s["structures"]:
        lines.append("  structures:  " + ", ".join(f"{k} {v}" for k, v in s["structures"].items()))
    if s["candidate_id_range"]:
        lo, hi = s["candidate_id_range"]
        lines.append(f"  candidates:  ids {lo}..{hi}")
    lines.append(f"  pool:        {s['pool_path']} (sha256 {s['pool_sha256'][:16]}…)")
    lines.append(f"  rows dtype:  {s['dtype']}")
    lines.append(f"  gap:         {s['gap']}")
    for d in s["descriptors"]:
        kern = " ".join(f"{k}={v}" for k, v in d["kernel"].items())
        lines.append(
            f"  [{d['index']}] {d['name']}: {d['n_rows']} rows x dim {d['dim']} "
            f"({d['rows_per_config']:.1f} per config, {_size(d['bytes'])})"
        )
        lines.append(f"      descriptor: {d['descriptor']}")
        lines.append(f"      kernel:     {kern}")
    v = s["versions"]
    if v:
        lines.append("  versions:    " + ", ".join(f"{k} {v[k]}" for k in sorted(v)))
    if s["command"]:
        lines.append(f"  command:     {s['command']}")
    return "\n".join(lines)


def kind_of(path: Path) -> str:
    """``store``, ``selection`` or ``pool``, from the file's content (not its name)."""
    from mlpdesign.io.atomic import require_file

    require_file(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_HDF5_MAGIC):
        import h5py

        try:
            with h5py.File(path, "r") as h:
                fmt = h.attrs.get("format")
        except OSError:
            return "store"  # open_store says how it is damaged
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        return "selection" if fmt == "mlpdesign-selection" else "store"
    return "selection" if head.lstrip()[:1] in (b"{", b"#") else "pool"


def pool_summary(path: Path) -> dict:
    """Configurations, atoms and elements of an extxyz pool (one quick scan)."""
    from mlpdesign.describe.runner import index_pool
    from mlpdesign.io.atomic import file_sha256

    idx = index_pool(path)
    return {
        "path": str(path),
        "kind": "pool",
        "file_bytes": path.stat().st_size,
        "n_configs": idx.n_configs,
        "n_atoms": int(idx.n_atoms.sum()),
        "atoms_per_config": [int(idx.n_atoms.min()), int(idx.n_atoms.max())],
        "elements": idx.symbols,
        "sha256": file_sha256(path),
    }


def selection_summary(path: Path) -> dict:
    """What a selection file holds: picks, method, pool and how it was made."""
    import math

    from mlpdesign.io.selection import load_selection

    sel = load_selection(path)
    psi = [float(x) for x in sel.psi if math.isfinite(x)]
    keep = ("method", "seed", "first", "n_requested", "stopped_early", "store_path", "command")
    keep += ("refine", "n_swaps", "objective", "objective_before", "objective_after")
    return {
        "path": str(path),
        "kind": "selection",
        "n": sel.n,
        "ordered": sel.ordered,
        "pool_sha256": sel.pool_sha256,
        "psi_range": [min(psi), max(psi)] if psi else [],
        **{k: sel.attrs.get(k) for k in keep if k in sel.attrs},
    }


def format_other(s: dict) -> str:
    """A pool's or a selection's summary in words."""
    if s["kind"] == "pool":
        lo, hi = s["atoms_per_config"]
        return "\n".join(
            [
                f"{s['path']}: extxyz pool, {_size(s['file_bytes'])}",
                f"  configs:     {s['n_configs']}, {s['n_atoms']} atoms ({lo}..{hi} per config)",
                f"  elements:    {', '.join(s['elements']) or '?'}",
                f"  sha256:      {s['sha256']}",
            ]
        )
    if s.get("ordered", True):
        lines = [f"{s['path']}: mlpdesign selection, {s['n']} picks"]
    else:  # select --refine exchange: its prefixes are not designs (write -n K refuses)
        lines = [f"{s['path']}: mlpdesign selection, a set of {s['n']} (not ordered)"]
    for k in ("method", "seed", "first", "n_requested", "stopped_early", "store_path"):
        if k in s:
            lines.append(f"  {k + ':':<13}{s[k]}")
    if "refine" in s:
        before, after = s.get("objective_before"), s.get("objective_after")
        lines.append(
            f"  {'refine:':<13}{s['refine']}, {s.get('n_swaps')} swaps, "
            f"{s.get('objective')} {before:.6g} -> {after:.6g}"
        )
    if s["psi_range"]:
        lines.append(f"  psi:         {s['psi_range'][0]:.6g} .. {s['psi_range'][1]:.6g}")
    lines.append(f"  pool:        sha256 {s['pool_sha256'][:16]}…")
    if s.get("command"):
        lines.append(f"  command:     {s['command']}")
    return "\n".join(lines)


def summary_of(path: Path) -> tuple[dict, str]:
    """The summary of any file ``info`` reads, and its text form."""
    kind = kind_of(path)
    if kind == "store":
        from mlpdesign.io.store import open_store

        with open_store(path) as s:
            summary = s.summary()
        return summary, format_summary(summary)
    summary = pool_summary(path) if kind == "pool" else selection_summary(path)
    return summary, format_other(summary)


@click.command("info")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE..."
)
@print_format_option(help="What to print: text, JSON, or nothing (only check every FILE).")
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Old spelling of --format json.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing (as --format none).")
def command(files, fmt, as_json, quiet) -> None:
    """Show what a pool (extxyz), a descriptor store or a selection file holds.

    The kind is told from the content. A store: sizes, GAP string, kernels, provenance
    (every value is checked once: a damaged store is reported as damaged). A pool:
    configurations, atoms, elements, SHA-256. A selection: picks, method, seed, psi range.

    \b
    Examples:
      mlpdesign info pool.h5
      mlpdesign info pool.xyz selection.h5
      mlpdesign info pool.h5 --format json | python -m json.tool
      mlpdesign info pool.h5 --format none && echo sound
    """
    fmt = "none" if quiet else "json" if as_json else fmt
    out = [summary_of(Path(f)) for f in files]
    if fmt == "json":
        docs = [s for s, _ in out]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=1))
    elif fmt == "text":
        click.echo("\n".join(t for _, t in out))
