"""The grid of ``mlpdesign tune``: ``--vary`` options parsed into full GAP strings.

``--vary NAME:KEY=V1,V2,...`` varies one key of one descriptor of the starting GAP string;
``NAME`` is the descriptor's name (``soap``, ``distance_2b``) or its 1-based position in the
string, ``KEY`` any of its descriptor keys (``cutoff``, ``atom_sigma``, ``l_max``, ...) or kernel
keys (``theta_uniform``, ``delta``, ``zeta``, ...). ``NAME:KEY1,KEY2=V1,V2`` moves several keys in
lock step (``soap:l_max,n_max=6,8,10``). The grid is the Cartesian product of all ``--vary``
options in the order given (the last one varies fastest). Every setting is rendered as a full
GAP string and validated by :func:`mlpdesign.gap.strings.parse_gap` and by the kernel plans of
``select`` before any work, so a bad key or value costs one line and nothing is written.

Settings that differ only in kernel keys share their descriptor rows: :func:`descriptor_groups`
puts them in one group, described once.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import (
    KERNEL_KEYS,
    DescriptorSpec,
    parse_gap,
    render_gap,
    render_value,
)


@dataclass(frozen=True)
class Vary:
    """One ``--vary`` option: descriptor position, keys (lock step) and raw values."""

    text: str
    position: int  # 0-based descriptor position in the GAP string
    name: str  # descriptor name at that position
    keys: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name}:{','.join(self.keys)}"


@dataclass
class Setting:
    """One point of the grid: its varied values, full GAP string and parsed specs."""

    index: int
    values: dict[str, str]  # "soap:atom_sigma" -> raw value
    specs: list[DescriptorSpec] = field(repr=False)
    changed: int = 0  # keys that differ from the starting string

    @property
    def gap(self) -> str:
        return render_gap(self.specs)

    @property
    def descriptor_key(self) -> tuple[str, ...]:
        """What the descriptor rows depend on (kernel keys excluded)."""
        return tuple(s.descriptor for s in self.specs)

    @property
    def label(self) -> str:
        return " ".join(f"{k.split(':', 1)[1]}={v}" for k, v in self.values.items()) or "start"


_VARY = re.compile(r"^\s*([^:=\s]+)\s*:\s*([^=]+?)\s*=(.*)$")


def parse_vary(text: str, specs: list[DescriptorSpec]) -> Vary:
    """Parse one ``NAME:KEY[,KEY...]=V1,V2,...`` against the starting ``specs``."""
    where = f"--vary {text!r}"
    m = _VARY.match(text)
    if not m:
        raise MlpdesignError(f"{where}: expected NAME:KEY=V1,V2,... (e.g. soap:atom_sigma=0.1,0.3)")
    who, keys_text, values_text = m.group(1), m.group(2), m.group(3)
    names = [s.name for s in specs]
    if who.isdigit():
        pos = int(who) - 1
        if not 0 <= pos < len(specs):
            raise MlpdesignError(
                f"{where}: the gap string has no descriptor {who} (1..{len(specs)})"
            )
    elif names.count(who) == 1:
        pos = names.index(who)
    elif who in names:
        raise MlpdesignError(
            f"{where}: the gap string has several {who} descriptors; name one by its position "
            f"(1..{len(specs)}) instead"
        )
    else:
        raise MlpdesignError(
            f"{where}: the gap string has no descriptor {who!r} (it has {', '.join(names)})"
        )
    keys = tuple(k.strip() for k in keys_text.split(","))
    if any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in keys):
        raise MlpdesignError(f"{where}: malformed key list {keys_text!r}")
    if len(set(keys)) != len(keys):
        raise MlpdesignError(f"{where}: a key is given twice")
    values = tuple(v.strip() for v in values_text.split(","))
    if not values or any(not v for v in values):
        raise MlpdesignError(f"{where}: empty value (give V1,V2,... after '=')")
    if len(set(values)) != len(values):
        raise MlpdesignError(f"{where}: a value is given twice")
    return Vary(text, pos, specs[pos].name, keys, values)


def _set_keys(spec: DescriptorSpec, updates: dict[str, str]) -> str:
    """``spec`` as a GAP-string segment with ``updates`` (raw text) replacing or adding keys."""
    desc = {k: render_value(v) for k, v in spec.params.items()}
    kern = {k: render_value(v) for k, v in spec.kernel.items()}
    for key, raw in updates.items():
        if key in KERNEL_KEYS:
            kern[KERNEL_KEYS[key]] = raw
        else:
            desc[key] = raw
    parts = [spec.name] + [f"{k}={v}" for k, v in desc.items()]
    parts += [f"{k}={v}" for k, v in kern.items()]
    return " ".join(parts)


def _check_kernel(specs: list[DescriptorSpec], where: str) -> None:
    """The kernel checks ``select`` makes, before any descriptor is computed."""
    from mlpdesign.kernels.core import term_plans

    try:
        term_plans(specs)
    except MlpdesignError as e:
        raise MlpdesignError(f"{where}: {e}") from None


def build_grid(base: list[DescriptorSpec], varies: list[Vary]) -> list[Setting]:
    """Every setting of the grid (Cartesian product, last ``--vary`` fastest), validated."""
    labels = [v.label for v in varies]
    seen: dict[tuple[int, str], str] = {}
    for v in varies:
        for k in v.keys:
            canon = (v.position, KERNEL_KEYS.get(k, k))
            if canon in seen:
                raise MlpdesignError(f"--vary {v.text!r}: {v.name}:{k} is already varied")
            seen[canon] = v.text
    _check_kernel(base, "--gap")
    out = []
    for i, combo in enumerate(itertools.product(*(v.values for v in varies))):
        updates: dict[int, dict[str, str]] = {}
        for v, val in zip(varies, combo, strict=True):
            updates.setdefault(v.position, {}).update({k: val for k in v.keys})
        segs = [
            _set_keys(s, updates[p]) if p in updates else s.render() for p, s in enumerate(base)
        ]
        values = dict(zip(labels, combo, strict=True))
        where = "--vary " + " ".join(f"{k}={val}" for k, val in values.items())
        try:
            specs = parse_gap(" : ".join(segs))
        except MlpdesignError as e:
            raise MlpdesignError(f"{where}: {e}") from None
        _check_kernel(specs, where)
        changed = sum(_differences(a, b) for a, b in zip(base, specs, strict=True))
        out.append(Setting(i, values, specs, changed))
    return out


def _differences(a: DescriptorSpec, b: DescriptorSpec) -> int:
    """How many descriptor and kernel keys differ between two specs."""
    out = 0
    for x, y in ((a.params, b.params), (a.kernel, b.kernel)):
        out += sum(x.get(k) != y.get(k) for k in set(x) | set(y))
    return out


def descriptor_groups(settings: list[Setting]) -> list[list[Setting]]:
    """Settings grouped by their descriptor part, in order of first appearance."""
    groups: dict[tuple[str, ...], list[Setting]] = {}
    for s in settings:
        groups.setdefault(s.descriptor_key, []).append(s)
    return list(groups.values())
