"""The strata of a stratified design: one label per candidate of a store, by ``structure``
(as ``generate`` writes), by ``source`` (the input file of each candidate: one file per MD
run, temperature or defect) or by any extxyz/ASE info key of the pool's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlpdesign.errors import MlpdesignError

#: strata keys that need no reading of the pool's frames
STORE_KEYS = ("structure", "source")


def _source_labels(store, store_path) -> np.ndarray:
    files = store.source_file
    if files is None:
        raise MlpdesignError(
            f"{store_path}: the store does not record each candidate's input file "
            "(described before sources were kept); describe it again to stratify by source"
        )
    names = np.array([Path(p).name for p in store.pool_files], dtype=object)
    return names[np.asarray(files, dtype=np.int64)].astype(str)


def _info_labels(store, store_path, key: str) -> np.ndarray:
    """The info key ``key`` of every frame of the pool's input files (read now)."""
    from mlpdesign.io.frames import open_pool

    pool = open_pool(store.pool_files)
    if pool.checksum() != store.pool_sha256 or pool.n_configs != store.n_configs:
        raise MlpdesignError(
            f"{store_path}: its pool files {store.pool_files} changed since it was described "
            f"(checksums differ); --stratify-by {key} reads the key from them"
        )
    values = [a.info.get(key) for a in pool.atoms(range(pool.n_configs))]
    if all(v is None for v in values):
        raise MlpdesignError(
            f"{store_path}: no frame of {', '.join(store.pool_files)} has the info key "
            f"{key!r} to stratify by (or use --stratify-by structure or source)"
        )
    return np.array(["" if v is None else str(v) for v in values])


def labels_by(store, store_path, key: str = "structure") -> np.ndarray:
    """One stratum label per candidate of ``store`` by ``key`` (see the module doc)."""
    if key == "structure":
        return np.asarray(store.structure)
    if key == "source":
        return _source_labels(store, store_path)
    return _info_labels(store, store_path, key)


def strata_labels(
    store, store_path, stratify: bool | None = None, key: str = "structure"
) -> np.ndarray | None:
    """The strata of ``select --stratify`` by ``key``, or None for a plain design
    (``stratify`` False; or None and fewer than two distinct labels)."""
    if stratify is False:
        return None
    labels = labels_by(store, store_path, key)
    named = labels[labels != labels[:0].dtype.type()]
    if stratify is None:
        return labels if len(np.unique(named)) >= 2 else None
    if len(named) == 0:
        raise MlpdesignError(
            f"{store_path}: the pool has no {key} labels to stratify by "
            "(extxyz info key 'structure', as generate writes)"
        )
    return labels
