"""The select stage on a store: options, ``--continue``, ``--given``, the engine's space
(in memory, or streamed blocks over MPI ranks), the selection file. Front door:
:func:`mlpdesign.select.run`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError
from mlpdesign.io.atomic import check_output, file_sha256
from mlpdesign.io.selection import Selection, load_selection, write_selection
from mlpdesign.io.store import open_store
from mlpdesign.kernels.blocks import (
    BLOCK_ROWS,
    Comm,
    PoolShard,
    blas_one_thread,
    parse_memory,
    reference_kernel,
)
from mlpdesign.kernels.core import KernelData, StoreKernel, all_cpus
from mlpdesign.select.engine import Design, MemorySpace, ShardSpace, Strata, criterion, greedy
from mlpdesign.select.exchange import Exchange, check_refine, exchange_space
from mlpdesign.select.strata import strata_labels  # noqa: F401  (re-exported)


def _same_kernel_specs(a, b) -> bool:
    return [(s.name, s.descriptor, s.kernel) for s in a] == [
        (s.name, s.descriptor, s.kernel) for s in b
    ]


def is_store(path) -> bool:
    """Whether ``path`` is an HDF5 file (a descriptor store), by its signature."""
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def stands_alone(files: list, matches: list, kind: str, what: str, hint: str) -> None:
    """Refuse ``matches`` (files of one ``kind``: a store, a selection) mixed with other
    files in one ``what``: such a file is a whole set by itself."""
    if matches and len(files) > 1:
        raise MlpdesignError(
            f"{matches[0]}: a {kind} cannot be combined with other files in one {what}; {hint}"
        )


def given_store(paths, store, tmpdir: str, progress_factory=None, what: str = "given set"):
    """The store of a given set (``--given``, ``score --train/--test``), opened, and its
    provenance: ``paths`` one store described with the pool's gap string, or frames of
    any format ASE reads (files, glob patterns; several are one set, described together
    into ``tmpdir`` with the pool's gap string). Provenance: ``path``, ``sha256`` (the
    inputs' :func:`~mlpdesign.io.frames.pool_checksum`), ``kind``, ``n_configs`` and
    ``files`` (path and sha256 of each input)."""
    from mlpdesign.io.frames import EXTXYZ, expand_inputs, input_format, pool_checksum

    files = expand_inputs(paths, what)
    h5 = [p for p in files if is_store(p)]
    stands_alone(
        files, h5, "store", what, "give the store alone, or the frames it was described from"
    )
    if h5:
        gstore, kind = open_store(files[0]), "store"
    else:
        from mlpdesign.describe.runner import describe

        kind = "extxyz" if all(input_format(p) == EXTXYZ for p in files) else "frames"
        out = Path(tmpdir) / "given.h5"
        bar = None
        if progress_factory is not None:  # describe's (total, initial) -> (total, desc)

            def bar(total: int, initial: int):
                return progress_factory(total, f"describe {what}", initial=initial)

        describe(_own_ids(files, tmpdir, what), out, gap=store.gap, progress=bar)
        gstore = open_store(out)
    name = " ".join(str(p) for p in files)
    if not _same_kernel_specs(gstore.descriptors, store.descriptors):
        gstore.close()
        raise MlpdesignError(
            f"{name}: described with another gap string than the pool store "
            f"({gstore.gap!r} vs {store.gap!r}); describe it with the "
            "pool's --gap, or pass the frames"
        )
    if gstore.n_configs == 0:
        gstore.close()
        raise MlpdesignError(f"{name}: the {what} holds no configurations")
    info = {
        "path": str(paths) if isinstance(paths, (str, Path)) else name,
        "sha256": pool_checksum(files),
        "n_configs": int(gstore.n_configs),
        "kind": kind,
        "files": [{"path": str(p), "sha256": file_sha256(p)} for p in files],
    }
    return gstore, info


def _own_ids(files: list, tmpdir: str, what: str):
    """``files``, or, when their candidate ids repeat (an old training set's ids beside
    MD frames without any), the same frames in one temporary ``.traj`` (exact) with their
    positions as ids: a given set's ids are its own."""
    from mlpdesign.io.frames import open_pool

    pool = open_pool(files, species=False, what=what, unique_ids=False)
    if len(np.unique(pool.candidate_id)) == pool.n_configs:
        return files
    from ase.io import write

    frames = []
    for k, a in enumerate(pool.atoms(range(pool.n_configs))):
        a = a.copy()  # no calculator, no info but the id: only the structure is described
        a.info = {"candidate_id": k}
        frames.append(a)
    path = Path(tmpdir) / "given.traj"
    write(path, frames, format="traj")
    return [path]


def given_kernel(path, store, kd: KernelData, tmpdir: str, progress_factory=None, what="given set"):
    """A KernelData for ``--given`` (:func:`given_store`: a store with the same gap string,
    or frames described now) like ``kd``, and its provenance."""
    gstore, info = given_store(path, store, tmpdir, progress_factory, what)
    with gstore:
        gk = StoreKernel(gstore, **{k: v for k, v in kd.options.items()}, like=kd)
    return gk, info


def selection_attrs(
    store,
    store_path,
    kd: KernelData,
    design: Design,
    opts: Options,
    method: str,
    n: int,
    given: list,
    stratify: bool | str = False,
    command: str = "",
) -> dict:
    """The attributes a selection file records: method, pool checksum, gap string, kernel
    (options and terms), seed and first pick (of ``opts``), request, given sets, strata and
    command line."""
    first, seed = opts.first, opts.seed
    how = design.first
    if first not in (None, "random") and method == "maxmin":
        how = f"candidate_id:{int(first)}"
    terms = [
        {
            "name": t.name,
            "kind": t.kind,
            "delta": t.delta,
            "zeta": t.zeta,
            "length": t.length,
            **({"embedding": t.meta} if t.meta else {}),
        }
        for t in kd.terms
    ]
    return {
        "method": method,
        "pool_sha256": store.pool_sha256,
        "store_path": str(store_path),
        "gap": store.gap,
        "kernel": {**kd.options, "terms": terms},
        "seed": int(seed),
        "first": how,
        "n_requested": int(n),
        "stopped_early": bool(design.stopped_early),
        "given": given,
        "distance": "D2",
        "command": command,
        **(
            {
                "stratify": "structure" if stratify is True else stratify,
                "strata": design.stats.get("strata", {}),
            }
            if stratify
            else {}
        ),
    }


@dataclasses.dataclass
class Options:
    """What a selection is made with; ``--continue`` restores them from the file."""

    criterion: object = "maxmin"  # a name of engine.CRITERIA, or a Criterion
    strata_key: str = "structure"  # stratify by: structure, source, or a frames' info key
    strata_share: str = "pool"  # each stratum's share of the picks: "pool" or "equal"
    first: object = None  # None (extreme), a candidate_id, or "random"
    seed: int = 1
    normalize: bool = True
    per_atom: bool = False
    balance: bool = False
    dtype: str = "float64"
    stratify: bool | None = None
    until_psi: float | None = None  # stop when the next pick's Psi would fall below it
    until_var: float | None = None  # the same with σ² (--criterion maxent)
    max_atoms: int | None = None  # leave out candidates with more atoms
    jitter: float | None = None  # maxent's λ (None: its default)
    refine: str | None = None  # "exchange": Fedorov exchange after the greedy design
    tol: float | None = None  # the exchange's least gain (None: 0)
    max_swaps: int | None = None  # the exchange's most swaps (None: -n)
    refine_cache: int | None = None  # bytes of kernel values it keeps (None: see below)

    @property
    def kernel(self) -> dict:
        return dict(
            normalize=self.normalize, per_atom=self.per_atom, balance=self.balance, dtype=self.dtype
        )


def continued(path, n: int, opts: Options):
    """The saved selection ``path`` and the options it was made with."""
    prev = load_selection(path)
    if not prev.ordered:
        raise MlpdesignError(
            f"{path} is an unordered set (select --refine exchange), not a greedy design: "
            "--continue extends greedy designs; continue the design it was refined from"
        )
    kern = prev.attrs.get("kernel") or "{}"
    try:
        kern = json.loads(kern) if isinstance(kern, str) else dict(kern)
    except json.JSONDecodeError:
        raise MlpdesignError(f"{path}: unreadable kernel attribute") from None
    f = str(prev.attrs.get("first", ""))
    first = (
        None
        if f in ("", "extreme", "conditional")
        else ("random" if f == "random" else int(f.split(":")[-1]))
    )
    opts = dataclasses.replace(
        opts,
        criterion=prev.method or opts.criterion,
        seed=int(prev.attrs.get("seed", opts.seed)),
        first=first,
        normalize=bool(kern.get("normalize", opts.normalize)),
        per_atom=bool(kern.get("per_atom", opts.per_atom)),
        balance=bool(kern.get("balance", opts.balance)),
        dtype=str(kern.get("dtype", opts.dtype)),
        stratify=bool(prev.attrs.get("stratify", "")),  # files without it: plain
        jitter=float(prev.attrs["jitter"]) if "jitter" in prev.attrs else opts.jitter,
    )
    if n < prev.n:
        raise MlpdesignError(
            f"-n {n} is smaller than the {prev.n} picks of {path}; take a prefix instead"
        )
    if "max_atoms" in prev.attrs:
        opts = dataclasses.replace(opts, max_atoms=int(prev.attrs["max_atoms"]))
    key = str(prev.attrs.get("stratify", ""))
    share = str(prev.attrs.get("strata_share", "pool"))
    if key not in ("", "True", "False"):
        opts = dataclasses.replace(opts, strata_key=key, strata_share=share)
    return prev, opts


def _check_store(store, store_path, n: int, prev, continue_from) -> None:
    if store.n_configs == 0:
        raise MlpdesignError(f"{store_path}: the pool is empty")
    if prev is not None and prev.pool_sha256 != store.pool_sha256:
        raise MlpdesignError(
            f"{continue_from} was made for another pool than {store_path} (pool checksums differ)"
        )
    if prev is not None and prev.attrs.get("gap", store.gap) != store.gap:
        raise MlpdesignError(f"{continue_from} was made with another gap string")
    if n < 1:
        raise MlpdesignError(f"-n must be at least 1, got {n}")
    if n > store.n_configs:
        raise MlpdesignError(f"-n {n} is larger than the pool ({store.n_configs} candidates)")


def _first_position(store, store_path, first):
    if first in (None, "random"):
        return first
    hit = np.flatnonzero(np.asarray(store.candidate_id) == int(first))
    if len(hit) == 0:
        raise MlpdesignError(
            f"--first {first}: no candidate with that candidate_id in {store_path}"
        )
    return int(hit[0])


def _given(c: Comm, path, store, like):
    """The given set's KernelData (built on rank 0, sent to all) and its provenance."""

    def build():
        if c.rank != 0:
            return None
        with tempfile.TemporaryDirectory(prefix="mlpdesign-given-") as tmp:
            return given_kernel(path, store, like, tmp)

    return c.bcast(c.agree(build), root=0)


def _check_given(prev, continue_from, ginfo) -> None:
    saved = json.loads(prev.attrs.get("given") or "[]")
    now = [ginfo["sha256"]] if ginfo is not None else []
    if [g.get("sha256") for g in saved] != now:
        raise MlpdesignError(
            f"{continue_from} was made with --given "
            f"{[g.get('path') for g in saved] or 'nothing'}; pass the "
            "same --given to continue it"
        )


def open_space(stack, store, opts: Options, given, n: int, *, limit, comm, block_rows):
    """(space, kernel of record, given provenance): in memory when no limit, no
    communicator and no block size is asked for, else a :class:`ShardSpace`."""
    c = Comm(comm)
    if limit is None and comm is None and block_rows is None:
        kd = StoreKernel(store, **opts.kernel)
        gk, ginfo = _given(c, given, store, kd) if given is not None else (None, None)
        if gk is not None:
            kd.compatible(gk)
        return MemorySpace(kd, gk), kd, ginfo
    ref = reference_kernel(store, opts.kernel, c)
    gk, ginfo = _given(c, given, store, ref) if given is not None else (None, None)
    shard = PoolShard(
        store,
        opts.kernel,
        memory_limit=limit,
        comm=comm,
        block_rows=block_rows or BLOCK_ROWS,
        n_design=n + (gk.n if gk is not None else 0),
        given=gk,
        ref=ref,
    )
    stack.enter_context(contextlib.closing(shard))
    stack.enter_context(blas_one_thread())
    return ShardSpace(shard, shard.global_eps(gk), gk), ref, ginfo


def _design(store, store_path, n, opts, given, prev, continue_from, engine: dict, bar, bars=None):
    """The design (the greedy one; and its exchange, if asked for) and what its file
    records (every rank alike)."""
    c = Comm(engine["comm"])
    crit = criterion(opts.criterion, opts.seed, jitter=opts.jitter)  # checked by run
    first = c.agree(_first_position, store, store_path, opts.first)
    labels = None
    if crit.stratified:
        labels = c.agree(strata_labels, store, store_path, opts.stratify, opts.strata_key)
    left_out = None if opts.max_atoms is None else store.n_atoms > opts.max_atoms
    cache, engine = _exchange_budget(opts, engine)
    t0 = time.monotonic()
    refined = None
    with contextlib.ExitStack() as stack:
        space, kd, ginfo = c.agree(open_space, stack, store, opts, given, n, **engine)
        if prev is not None:
            _check_given(prev, continue_from, ginfo)
        if engine["comm"] is None:  # serial: D² on every CPU (one per MPI rank)
            stack.enter_context(all_cpus())
        design = c.agree(
            greedy,
            space,
            crit,
            n,
            first=first,
            seed=opts.seed,
            strata=None if labels is None else Strata(labels, opts.strata_share),
            progress=bar,
            until=_budget(opts, crit),
            left_out=left_out,
        )
        if opts.refine is not None:
            refined = _refine(c, space, crit, design, opts, labels, left_out, cache, bars)
    if isinstance(space, ShardSpace):
        design.stats["wall_s"] = time.monotonic() - t0
    given_info = [ginfo] if ginfo is not None else []
    stratify = opts.strata_key if labels is not None else False
    attrs = selection_attrs(store, store_path, kd, design, opts, crit.name, n, given_info, stratify)
    var = _more_attrs(attrs, opts, labels, store, design, crit)
    if refined is not None:
        attrs.update(refined_attrs(refined, store.candidate_id))
        var = refined.var
        design.stats["exchange"] = {**refined.stats, **attrs_summary(attrs)}
    n_atoms = np.asarray(store.n_atoms, dtype=np.float64)[_final(design, refined)]
    attrs.update(total_atoms=int(n_atoms.sum()), dft_cost=float((n_atoms**3).sum()))
    return design, attrs, var, refined


def _final(design: Design, refined: Exchange | None) -> np.ndarray:
    return design.index if refined is None else refined.index


def _more_attrs(attrs: dict, opts: Options, labels, store, design: Design, crit):
    """The options' attributes (share, budgets, --max-atoms, jitter); σ² at pick time."""
    if labels is not None and opts.strata_share != "pool":
        attrs["strata_share"] = opts.strata_share
    for key in ("until_psi", "until_var"):
        if getattr(opts, key) is not None:
            attrs[key] = float(getattr(opts, key))
    if opts.max_atoms is not None:
        attrs["max_atoms"] = int(opts.max_atoms)
    var = getattr(crit, "var", None)
    if var is not None:
        attrs["jitter"] = float(crit.jitter)
        var = np.asarray(var, dtype=np.float64)[: len(design.index)]  # a budget's last try
    return var


def _exchange_budget(opts: Options, engine: dict) -> tuple[int | None, dict]:
    """Bytes the exchange may keep of candidate-by-design kernel values (a quarter of
    ``--memory-limit``, taken from the shard's share; None: no limit; ``refine_cache``
    says otherwise, 0: recomputed in blocks), and the engine's options with the rest."""
    limit = engine["limit"]
    if opts.refine is None or limit is None:
        return opts.refine_cache, engine
    if opts.refine_cache is not None:
        return opts.refine_cache, engine
    return limit // 4, {**engine, "limit": limit - limit // 4}


def _refine(c: Comm, space, crit, design: Design, opts: Options, labels, left_out, cache, bars):
    """The exchange of the greedy design (every rank alike)."""
    most = len(design.index) if opts.max_swaps is None else int(opts.max_swaps)
    bar = bars(most, "exchange") if (bars is not None and c.rank == 0) else None
    try:
        return c.agree(
            exchange_space,
            space,
            design.index,
            crit.name,
            jitter=float(getattr(crit, "jitter", 1.0)),
            tol=0.0 if opts.tol is None else float(opts.tol),
            max_swaps=most,
            strata=labels,
            allowed=None if left_out is None else ~np.asarray(left_out, dtype=bool),
            cache_bytes=cache,
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()


def refined_attrs(refined: Exchange, candidate_id) -> dict:
    """What a selection file records of an exchange: it is a set (``ordered: false``),
    the method, tolerance, most swaps, the swaps ``[out, in, gain]`` (candidate ids) and
    the objective before and after."""
    cid = np.asarray(candidate_id)

    def num(x: float):
        return float(x) if np.isfinite(x) else None

    return {
        "ordered": False,
        "refine": "exchange",
        "refine_tol": float(refined.tol),
        "max_swaps": int(refined.max_swaps),
        "n_swaps": len(refined.swaps),
        "objective": refined.objective,
        "objective_before": num(refined.before),
        "objective_after": num(refined.after),
        "swaps": [[int(cid[t]), int(cid[x]), float(g)] for t, x, g in refined.swaps],
    }


def attrs_summary(attrs: dict) -> dict:
    """The exchange's line items for ``select``'s summary."""
    keys = ("n_swaps", "objective", "objective_before", "objective_after", "max_swaps")
    return {k: attrs.get(k) for k in keys}


def _budget(opts: Options, crit) -> float | None:
    """The budget of this criterion: ``--until-psi`` for max-min and random, ``--until-var``
    for MaxEnt; the other one is refused."""
    mine, other = (
        ("until_var", "until_psi") if crit.budget_name == "var" else ("until_psi", "until_var")
    )
    if getattr(opts, other) is not None:
        raise MlpdesignError(
            f"--{other.replace('_', '-')} is not a budget of --criterion {crit.name}; "
            f"use --{mine.replace('_', '-')}"
        )
    value = getattr(opts, mine)
    if value is not None and not value >= 0:
        raise MlpdesignError(f"--{mine.replace('_', '-')} must be >= 0, got {value}")
    return value


def _check_options(opts: Options) -> None:
    """Refuse option combinations before any work: ``--jitter`` without maxent, a bad
    jitter, the other criterion's budget or a negative one."""
    if opts.jitter is not None and crit_name(opts.criterion) != "maxent":
        raise MlpdesignError("--jitter is for --criterion maxent")
    _budget(opts, criterion(opts.criterion, opts.seed, jitter=opts.jitter))
    if opts.refine is None:
        if opts.tol is not None or opts.max_swaps is not None:
            raise MlpdesignError("--tol and --max-swaps are for --refine exchange")
        return
    if opts.refine != "exchange":
        raise MlpdesignError(f"--refine must be exchange, got {opts.refine!r}")
    most = 0 if opts.max_swaps is None else opts.max_swaps
    check_refine(crit_name(opts.criterion), 0.0 if opts.tol is None else opts.tol, most)


def crit_name(c) -> str:
    """The name of a criterion given by name or as an object."""
    return c if isinstance(c, str) else str(getattr(c, "name", ""))


def _check_prefix(prev, continue_from, cids, design: Design) -> None:
    k = min(prev.n, len(design.index))
    if k < prev.n or not np.array_equal(cids[design.index[:k]], prev.candidate_id[:k]):
        raise MlpdesignError(
            f"{continue_from} is not reproduced by this store and options "
            "(was it made from another store?)"
        )


def run(
    store_path,
    n: int,
    output=None,
    *,
    given=None,
    continue_from=None,
    fmt: str | None = None,
    force: bool = False,
    command: str = "",
    memory_limit=None,
    comm=None,
    block_rows: int | None = None,
    progress_factory=None,
    **options,
) -> tuple[Selection, Design]:
    """Select ``n`` candidates of a descriptor store and write the selection file.

    ``options``: the fields of :class:`Options` (``criterion`` a name or a Criterion;
    ``first`` None, a candidate_id or ``"random"``; ``stratify`` None: stratified when the
    pool has two or more structure labels). ``given``: an existing training set (a store
    with the same gap string, or frames described here: a path, a glob or a list of
    them, any format ASE reads; see :func:`given_store`). ``continue_from``: a saved
    selection of this store, extended to ``n`` picks with its own options; it must be
    reproduced as the prefix. ``refine="exchange"`` (``tol``, ``max_swaps``): a Fedorov
    exchange of the greedy design (:mod:`mlpdesign.select.exchange`); the file is then a
    set (``ordered: false``) and records the swaps. ``memory_limit`` (bytes or ``"4G"``),
    ``comm`` (mpi4py) or ``block_rows``: streamed blocks over ranks, the same picks (and
    swaps); rank 0 writes ``output``
    (None: nothing written). ``progress_factory(total, desc, initial=0)`` makes a progress
    bar: of picks (``select``), swaps (``exchange``), a given set's configs (``describe ...``).
    """
    c = Comm(comm)
    limit = c.agree(parse_memory, memory_limit)
    if output is not None and str(output) != "-":  # "-": the text on standard output
        c.agree(check_output, output, force)
    opts, prev = Options(**options), None
    if continue_from is not None:
        prev, opts = c.agree(continued, continue_from, n, opts)
    c.agree(_check_options, opts)  # before the store is read
    engine = dict(limit=limit, comm=comm, block_rows=block_rows)
    in_memory = limit is None and comm is None and block_rows is None
    # in memory the kernel's load checks the values as it reads them (one read, not two)
    with c.agree(open_store, store_path, check=not in_memory) as store:
        c.agree(_check_store, store, store_path, n, prev, continue_from)
        bar = progress_factory(n, "select") if (progress_factory and c.rank == 0) else None
        try:
            design, attrs, var, refined = _design(
                store,
                store_path,
                n,
                opts,
                given,
                prev,
                continue_from,
                {**engine},
                bar,
                progress_factory,
            )
        finally:
            if bar is not None:
                bar.close()
        attrs["command"] = command
        cids = np.asarray(store.candidate_id)
        if prev is not None:
            c.agree(_check_prefix, prev, continue_from, cids, design)
        idx = _final(design, refined)
        psi = design.psi if refined is None else refined.psi
        sel = Selection(cids[idx], idx, psi, attrs, var)
    if output is not None:
        c.agree(lambda: write_selection(output, sel, fmt, force) if c.rank == 0 else None)
    return sel, design
