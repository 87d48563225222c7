"""``mlpdesign info``: what a descriptor store holds."""

from __future__ import annotations

import json

import click


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


@click.command("info")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def command(store, as_json) -> None:
    """Show what a descriptor store holds: sizes, GAP string, kernels, provenance.

    \b
    Examples:
      mlpdesign info pool.h5
      mlpdesign info pool.h5 --json | python -m json.tool
    """
    from mlpdesign.io.store import open_store

    with open_store(store) as s:
        summary = s.summary()
    click.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))
