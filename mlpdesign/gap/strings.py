"""GAP strings: the one source of truth for descriptors and kernels.

A GAP string is what ``gap_fit`` takes as ``gap={...}``: descriptor segments separated by
``:``, each a descriptor name followed by ``key=value`` pairs. Some keys configure the
descriptor (they go to quippy), the others configure the kernel of that descriptor
(``covariance_type``, ``delta``, ``zeta``, ``theta_uniform``, ``n_sparse``, ...; they go to
``select`` and back to ``gap_fit``). :func:`parse_gap` splits and validates a string before
quippy ever sees it, because QUIP aborts or silently ignores on many typos (it ignores any
unknown key), and :func:`render_gap` writes the specs back as a string for ``gap_fit``.

Validation is exact for ``soap`` and ``distance_2b`` (keys, types, required keys, taken from
QUIP's ``descriptors.F90`` as shipped in quippy-ase 0.10.3); any other QUIP descriptor
name is accepted and checked by :func:`probe_descriptor`, which initialises it in a child
process so that a crash in QUIP costs the child, not the caller.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from mlpdesign.errors import MlpdesignError

#: The paper's model (Barzdajn & Race 2024): a 2-body term plus SOAP on Zr.
DEFAULT_GAP = (
    "distance_2b cutoff=7.0 covariance_type=ard_se delta=0.8 theta_uniform=0.3 : "
    "soap cutoff=6.8 l_max=10 n_max=10 normalize=T atom_sigma=0.15 n_Z=1 Z={40} "
    "covariance_type=dot_product zeta=4 delta=0.3"
)

#: Descriptor types known to QUIP (``descriptor_initialise`` in descriptors.F90).
QUIP_DESCRIPTORS = (
    "bispectrum_so4",
    "bispectrum_so3",
    "behler",
    "distance_2b",
    "coordination",
    "angle_3b",
    "co_angle_3b",
    "co_distance_2b",
    "cosnx",
    "trihis",
    "water_monomer",
    "water_dimer",
    "A2_dimer",
    "AB_dimer",
    "bond_real_space",
    "atom_real_space",
    "power_so3",
    "power_so4",
    "soap",
    "AN_monomer",
    "general_monomer",
    "general_dimer",
    "general_trimer",
    "water_trimer",
    "rdf",
    "as_distance_2b",
    "molecule_lo_d",
    "alex",
    "com_dimer",
    "distance_Nb",
    "soap_express",
    "soap_turbo",
)

#: Kernel (gap-level) keys of ``gap_fit``'s gap string, with their canonical name.
#: gap_fit accepts both names of each alias pair; we store the canonical one.
KERNEL_KEYS: dict[str, str] = {
    "covariance_type": "covariance_type",
    "delta": "delta",
    "energy_scale": "delta",
    "zeta": "zeta",
    "soap_exponent": "zeta",
    "theta_uniform": "theta_uniform",
    "lengthscale_uniform": "theta_uniform",
    "theta_fac": "theta_fac",
    "lengthscale_factor": "theta_fac",
    "theta_file": "theta_file",
    "lengthscale_file": "theta_file",
    "f0": "f0",
    "n_sparse": "n_sparse",
    "config_type_n_sparse": "config_type_n_sparse",
    "sparse_method": "sparse_method",
    "sparse_file": "sparse_file",
    "mark_sparse_atoms": "mark_sparse_atoms",
    "add_species": "add_species",
    "print_sparse_index": "print_sparse_index",
    "unique_hash_tolerance": "unique_hash_tolerance",
    "unique_descriptor_tolerance": "unique_descriptor_tolerance",
}

COVARIANCE_TYPES = ("ard_se", "dot_product", "gaussian", "pp", "bond_real_space")
SPARSE_METHODS = (
    "random",
    "pivot",
    "cluster",
    "uniform",
    "kmeans",
    "covariance",
    "none",
    "fuzzy",
    "file",
    "index_file",
    "cur_covariance",
    "cur_points",
)

# Value kinds used for checking: "float+", "float", "int>=0", "int>=1", "bool", "ints", "str".
_KERNEL_TYPES = {
    "covariance_type": "str",
    "delta": "float+",
    "zeta": "float+",
    "theta_uniform": "float+",
    "theta_fac": "floats",
    "theta_file": "str",
    "f0": "float",
    "n_sparse": "int>=0",
    "config_type_n_sparse": "str",
    "sparse_method": "str",
    "sparse_file": "str",
    "mark_sparse_atoms": "bool",
    "add_species": "bool",
    "print_sparse_index": "str",
    "unique_hash_tolerance": "float",
    "unique_descriptor_tolerance": "float",
}

#: Keys QUIP's soap_initialise registers (quippy-ase 0.10.3), with their value kinds.
SOAP_KEYS = {
    "cutoff": "float+",
    "cutoff_transition_width": "float",
    "cutoff_dexp": "int>=0",
    "cutoff_scale": "float+",
    "cutoff_rate": "float",
    "l_max": "int>=0",
    "n_max": "int>=1",
    "atom_sigma": "float+",
    "atom_gaussian_width": "float+",
    "central_weight": "float",
    "central_reference_all_species": "bool",
    "average": "bool",
    "diagonal_radial": "bool",
    "covariance_sigma0": "float",
    "normalise": "bool",
    "normalize": "bool",
    "basis_error_exponent": "float+",
    "n_Z": "int>=1",
    "Z": "ints",
    "n_species": "int>=1",
    "species_Z": "ints",
    "xml_version": "int>=0",
    "nu_R": "int>=0",
    "nu_S": "int>=0",
    "Z_mix": "bool",
    "R_mix": "bool",
    "sym_mix": "bool",
    "coupling": "bool",
    "K": "int>=0",
    "mix_shift": "int>=0",
    "Z_map": "str",
    "radial_basis": "str",
    "compress_file": "str",
    "compress_mode": "str",
}
SOAP_REQUIRED = ("cutoff", "l_max", "n_max", ("atom_sigma", "atom_gaussian_width"))

#: Keys QUIP's distance_2b_initialise registers, with their value kinds.
DISTANCE_2B_KEYS = {
    "cutoff": "float+",
    "cutoff_transition_width": "float",
    "Z1": "int>=0",
    "Z2": "int>=0",
    "resid_name": "str",
    "only_intra": "bool",
    "only_inter": "bool",
    "n_exponents": "int>=1",
    "exponents": "ints",
    "tail_range": "float",
    "tail_exponent": "int>=0",
}
DISTANCE_2B_REQUIRED = ("cutoff",)

_STRICT = {
    "soap": (SOAP_KEYS, SOAP_REQUIRED),
    "distance_2b": (DISTANCE_2B_KEYS, DISTANCE_2B_REQUIRED),
}

_TRUE = ("t", "true")
_FALSE = ("f", "false")


@dataclass
class DescriptorSpec:
    """One descriptor of a GAP string.

    ``descriptor`` is the descriptor part exactly as quippy gets it (name first),
    ``kernel`` the kernel keys with typed values (canonical names, see :data:`KERNEL_KEYS`),
    ``segment`` the original text of this part of the GAP string, ``dim`` the descriptor
    dimension once known (from quippy).
    """

    name: str
    descriptor: str
    kernel: dict[str, Any] = field(default_factory=dict)
    segment: str = ""
    dim: int | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The descriptor keys (without the name) with typed values."""
        return {k: _typed(v) for k, v in _pairs(self.descriptor, self.name)[1]}

    def render(self) -> str:
        """This descriptor as a GAP-string segment: descriptor keys, then kernel keys."""
        kern = " ".join(f"{k}={render_value(v)}" for k, v in self.kernel.items())
        return f"{self.descriptor} {kern}".strip()

    def kernel_json(self) -> str:
        """The kernel dict as canonical JSON (sorted keys), as stored in HDF5 attributes."""
        return json.dumps(self.kernel, sort_keys=True)


# ---------------------------------------------------------------------------- tokenising


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside ``{}`` and quotes; raise on unbalanced brackets."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise MlpdesignError(f"unbalanced '}}' in gap string {text.strip()!r}")
        if ch == sep and depth == 0 or (sep == " " and ch.isspace() and depth == 0):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth or quote:
        raise MlpdesignError(
            f"unbalanced {'quote' if quote else '{'} in gap string {text.strip()!r}"
        )
    parts.append("".join(cur))
    return parts


def _pairs(segment: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    """``"soap a=1 b={2 3}"`` -> ``("soap", [("a", "1"), ("b", "{2 3}")])``."""
    tokens = [t for t in _split_top(segment, " ") if t]
    if not tokens:
        raise MlpdesignError(f"empty descriptor in gap string ({where})")
    name, pairs = tokens[0], []
    if "=" in name:
        raise MlpdesignError(
            f"{where}: expected a descriptor name first (e.g. soap, distance_2b), got {name!r}"
        )
    for tok in tokens[1:]:
        key, eq, value = tok.partition("=")
        if not eq or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise MlpdesignError(f"{where}: malformed {tok!r}, expected key=value")
        if value == "":
            raise MlpdesignError(f"{where}: {key}= has no value")
        pairs.append((key, value))
    return name, pairs


def _typed(value: str) -> Any:
    """Turn a QUIP value string into int / float / bool / str, or a list for ``{...}``."""
    v = value.strip()
    if v.startswith("{") and v.endswith("}"):
        inner = v[1:-1].strip()
        if ":" in inner:  # e.g. config_type_n_sparse={hcp:50:fcc:20}
            return v
        return [_typed(x) for x in inner.split()]
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    if re.fullmatch(r"[+-]?\d+", v):
        return int(v)
    try:
        return float(v)
    except ValueError:
        pass
    if v.lower() in _TRUE:
        return True
    if v.lower() in _FALSE:
        return False
    return v


def render_value(v: Any) -> str:
    """Inverse of :func:`_typed`: the text QUIP reads for a typed value."""
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, (list, tuple)):
        return "{" + " ".join(render_value(x) for x in v) + "}"
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    return f'"{s}"' if any(c.isspace() for c in s) else s


def _check_kind(where: str, key: str, raw: str, kind: str) -> None:
    """Raise a one-line error unless ``raw`` is a valid value of ``kind``."""
    val = _typed(raw)
    ok = True
    if kind == "float+":
        ok = isinstance(val, (int, float)) and not isinstance(val, bool) and val > 0
        want = "a positive number"
    elif kind == "float":
        ok = isinstance(val, (int, float)) and not isinstance(val, bool)
        want = "a number"
    elif kind.startswith("int>="):
        lo = int(kind[5:])
        ok = isinstance(val, int) and not isinstance(val, bool) and val >= lo
        want = f"an integer >= {lo}"
    elif kind == "bool":
        ok = isinstance(val, bool)
        want = "T or F"
    elif kind == "ints":
        vals = val if isinstance(val, list) else [val]
        ok = bool(vals) and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in vals
        )
        want = "non-negative integers, e.g. {40} or {40 72}"
    elif kind == "floats":
        vals = val if isinstance(val, list) else [val]
        ok = bool(vals) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals
        )
        want = "numbers"
    else:
        want = "a string"
    if not ok:
        raise MlpdesignError(f"{where}: {key}={raw} is not valid, expected {want}")


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# ---------------------------------------------------------------------------- parsing


def _strip_wrapper(text: str) -> str:
    t = text.strip()
    m = re.fullmatch(r"gap\s*=\s*\{(.*)\}", t, flags=re.S)
    return m.group(1) if m else t


def parse_segment(segment: str, index: int = 0) -> DescriptorSpec:
    """Parse and validate one ``name key=value ...`` segment of a GAP string."""
    where0 = f"descriptor {index + 1} of the gap string"
    name, pairs = _pairs(segment, where0)
    where = f"{where0} ({name})"
    if name not in QUIP_DESCRIPTORS:
        raise MlpdesignError(
            f"{where0}: unknown descriptor {name!r}{_suggest(name, QUIP_DESCRIPTORS)}"
            f"; QUIP knows {', '.join(sorted(QUIP_DESCRIPTORS))}"
        )
    pairs = [  # gap_fit's nested form {{...}} reads as {...}
        (k, v[1:-1] if v.startswith("{{") and v.endswith("}}") else v) for k, v in pairs
    ]
    desc_tokens, kernel, seen = [name], {}, set()
    for key, raw in pairs:
        canon = KERNEL_KEYS.get(key, key)
        if canon in seen:
            raise MlpdesignError(f"{where}: {key} given twice")
        seen.add(canon)
        if key in KERNEL_KEYS:
            _check_kind(where, key, raw, _KERNEL_TYPES[canon])
            kernel[canon] = _typed(raw)
        else:
            desc_tokens.append(f"{key}={raw}")
    descriptor = " ".join(desc_tokens)
    spec = DescriptorSpec(
        name=name, descriptor=descriptor, kernel=kernel, segment=" ".join(segment.split())
    )
    if name in _STRICT:
        _validate_strict(spec, where, pairs)
    _validate_kernel(spec, where)
    return spec


def _validate_kernel(spec: DescriptorSpec, where: str) -> None:
    k = spec.kernel
    if "covariance_type" not in k:
        raise MlpdesignError(
            f"{where}: missing covariance_type= (one of {', '.join(COVARIANCE_TYPES)})"
        )
    cov = str(k["covariance_type"]).lower()
    if cov not in COVARIANCE_TYPES:
        raise MlpdesignError(
            f"{where}: unknown covariance_type={k['covariance_type']}"
            f"{_suggest(cov, COVARIANCE_TYPES)} (one of "
            f"{', '.join(COVARIANCE_TYPES)})"
        )
    k["covariance_type"] = cov
    if "delta" not in k:
        raise MlpdesignError(f"{where}: missing delta= (the energy scale of this term)")
    if cov == "dot_product" and "zeta" not in k:
        raise MlpdesignError(f"{where}: covariance_type=dot_product needs zeta=")
    if cov in ("ard_se", "gaussian", "pp"):
        given = [t for t in ("theta_uniform", "theta_fac", "theta_file") if t in k]
        if not given:
            raise MlpdesignError(
                f"{where}: covariance_type={cov} needs one of theta_uniform=, "
                "theta_fac= or theta_file="
            )
        if len(given) > 1:
            raise MlpdesignError(f"{where}: give only one of {', '.join(given)}")
    if "sparse_method" in k:
        sm = str(k["sparse_method"]).lower()
        if sm not in SPARSE_METHODS:
            raise MlpdesignError(
                f"{where}: unknown sparse_method={k['sparse_method']}{_suggest(sm, SPARSE_METHODS)}"
            )


def _validate_strict(spec: DescriptorSpec, where: str, pairs: list[tuple[str, str]]) -> None:
    known, required = _STRICT[spec.name]
    given = {}
    for key, raw in pairs:
        if key in KERNEL_KEYS:
            continue
        if key not in known:
            raise MlpdesignError(
                f"{where}: unknown key {key!r}{_suggest(key, list(known) + list(KERNEL_KEYS))}"
            )
        _check_kind(where, key, raw, known[key])
        given[key] = _typed(raw)
    for req in required:
        alts = req if isinstance(req, tuple) else (req,)
        if not any(a in given for a in alts):
            raise MlpdesignError(f"{where}: missing required key {alts[0]}=")
    if spec.name == "soap":
        for a, b in (("normalise", "normalize"), ("atom_sigma", "atom_gaussian_width")):
            if a in given and b in given:
                raise MlpdesignError(f"{where}: give only one of {a}= and {b}=")
        z = given.get("Z", [0])
        z = z if isinstance(z, list) else [z]
        if len(z) != given.get("n_Z", 1):
            raise MlpdesignError(f"{where}: n_Z={given.get('n_Z', 1)} but Z has {len(z)} entries")
        if "species_Z" in given:
            sz = (
                given["species_Z"] if isinstance(given["species_Z"], list) else [given["species_Z"]]
            )
            if "n_species" not in given:
                raise MlpdesignError(f"{where}: species_Z= needs n_species= as well")
            if len(sz) != given["n_species"]:
                raise MlpdesignError(
                    f"{where}: n_species={given['n_species']} but species_Z has {len(sz)} entries"
                )
        elif given.get("n_species", 1) > 1:
            raise MlpdesignError(f"{where}: n_species={given['n_species']} needs species_Z=")
    if spec.name == "distance_2b":
        if given.get("only_intra") and given.get("only_inter"):
            raise MlpdesignError(f"{where}: only_intra and only_inter exclude each other")
        if (given.get("only_intra") or given.get("only_inter")) and "resid_name" not in given:
            raise MlpdesignError(f"{where}: only_intra/only_inter need resid_name=")
        ex = given.get("exponents")
        if ex is not None:
            n = len(ex) if isinstance(ex, list) else 1
            if n != given.get("n_exponents", 1):
                raise MlpdesignError(
                    f"{where}: n_exponents={given.get('n_exponents', 1)} but "
                    f"exponents has {n} entries"
                )


def parse_gap(text: str) -> list[DescriptorSpec]:
    """Split a GAP string (``"a ... : b ..."`` or ``"gap={...}"``) into validated specs.

    Raises :class:`MlpdesignError` with one line for any typo that QUIP would crash on
    or silently ignore: unknown descriptor, malformed ``key=value``, unknown key of
    ``soap``/``distance_2b``, missing required key, bad kernel settings.
    """
    if not isinstance(text, str) or not text.strip():
        raise MlpdesignError("empty gap string")
    body = _strip_wrapper(text)
    segments = _split_top(body, ":")
    specs = []
    for i, seg in enumerate(segments):
        if not seg.strip():
            raise MlpdesignError(
                f"descriptor {i + 1} of the gap string is empty (check the ' : ' separators)"
            )
        specs.append(parse_segment(seg, i))
    return specs


def render_gap(specs: list[DescriptorSpec]) -> str:
    """The specs back as a GAP string (segments joined by ``" : "``)."""
    return " : ".join(s.render() for s in specs)


def _nested(value: str) -> str:
    """A ``{...}`` value as gap_fit needs it inside ``gap={...}``: ``{{...}}``."""
    return "{" + value + "}" if value.startswith("{") and not value.startswith("{{") else value


def gap_fit_argument(specs: list[DescriptorSpec]) -> str:
    """The ``gap={...}`` argument of ``gap_fit`` for these specs.

    gap_fit strips one level of braces from the values inside ``gap={...}`` (``Z={29 40}``
    reaches QUIP as ``Z=29 40``: a parse error), so every ``{...}`` value is written
    ``{{...}}`` here, for one element and for several; :func:`parse_gap` reads both forms.
    Each segment also gets ``add_species=F`` unless it sets ``add_species``: gap_fit's
    default (T) would copy every term once per species or species pair (appending its
    own ``Z``/``Z1``/``Z2``), which is not the kernel the string describes.
    """
    segments = []
    for s in specs:
        name, pairs = _pairs(s.render(), s.name)
        if "add_species" not in s.kernel:
            pairs.append(("add_species", "F"))
        segments.append(" ".join([name] + [f"{k}={_nested(v)}" for k, v in pairs]))
    return "gap={" + " : ".join(segments) + "}"


# ---------------------------------------------------------------------------- species


def soap_species(spec: DescriptorSpec) -> list[int] | None:
    """Central-atom Z list of a SOAP spec (None = wildcard ``Z=0``); None for other types."""
    if spec.name != "soap":
        return None
    z = spec.params.get("Z", 0)
    z = z if isinstance(z, list) else [z]
    return None if z == [0] else [int(x) for x in z]


def with_species(specs: list[DescriptorSpec], numbers: list[int]) -> list[DescriptorSpec]:
    """Set SOAP's ``n_Z``/``Z`` (and ``n_species``/``species_Z`` when several) to ``numbers``.

    Used when the *default* GAP string (written for Zr) meets a pool of other elements:
    the paper's settings are kept, only the species lists follow the pool. An explicit
    ``--gap`` is never changed.
    """
    numbers = sorted(set(int(z) for z in numbers))
    out = []
    for s in specs:
        if s.name != "soap":
            out.append(s)
            continue
        params = [
            (k, v)
            for k, v in _pairs(s.descriptor, s.name)[1]
            if k not in ("n_Z", "Z", "n_species", "species_Z")
        ]
        params += [("n_Z", str(len(numbers))), ("Z", render_value(numbers))]
        if len(numbers) > 1:
            params += [("n_species", str(len(numbers))), ("species_Z", render_value(numbers))]
        desc = " ".join([s.name] + [f"{k}={v}" for k, v in params])
        new = replace(s, descriptor=desc, dim=None)
        new.segment = new.render()
        out.append(new)
    return out


def _with_params(s: DescriptorSpec, drop: tuple[str, ...], add: list[tuple[str, str]]):
    params = [(k, v) for k, v in _pairs(s.descriptor, s.name)[1] if k not in drop]
    desc = " ".join([s.name] + [f"{k}={v}" for k, v in params + add])
    new = replace(s, descriptor=desc, kernel=dict(s.kernel), dim=None)
    new.segment = new.render()
    return new


def alloy_specs(specs: list[DescriptorSpec], numbers: list[int]) -> list[DescriptorSpec]:
    """The default model for several elements, as GAP users write it for alloys (and as
    gap_fit's ``add_species`` would expand it): every ``distance_2b`` becomes one term per
    element pair (``Z1``, ``Z2``; z1 <= z2), every ``soap`` one term per centre species
    (``n_Z=1 Z={z}``) over all species as neighbours (``n_species``, ``species_Z``); each
    term keeps its kernel keys (its own ``delta``). One element: :func:`with_species`.

    Used only for the *default* GAP string; an explicit ``--gap`` is never changed.
    """
    numbers = sorted(set(int(z) for z in numbers))
    if len(numbers) < 2:
        return with_species(specs, numbers)
    allz = render_value(numbers)
    out = []
    for s in specs:
        if s.name == "distance_2b":
            for i, z1 in enumerate(numbers):
                for z2 in numbers[i:]:
                    out.append(_with_params(s, ("Z1", "Z2"), [("Z1", str(z1)), ("Z2", str(z2))]))
        elif s.name == "soap":
            for z in numbers:
                add = [("n_Z", "1"), ("Z", "{" + str(z) + "}")]
                add += [("n_species", str(len(numbers))), ("species_Z", allz)]
                out.append(_with_params(s, ("n_Z", "Z", "n_species", "species_Z"), add))
        else:
            out.append(s)
    return out


def covered_species(specs: list[DescriptorSpec]) -> set[int] | None:
    """The elements a GAP string can describe: the union of the SOAP centre lists (``Z``),
    limited to every SOAP's neighbour list (``species_Z``); None when any is a wildcard or
    the string has no SOAP."""
    centres: set[int] = set()
    neighbours: set[int] | None = None
    any_soap = False
    for s in specs:
        if s.name != "soap":
            continue
        any_soap = True
        z = soap_species(s)
        if z is None:
            return None
        centres |= set(z)
        sz = s.params.get("species_Z")
        if sz is not None:
            sz = set(sz if isinstance(sz, list) else [sz])
            if sz != {0}:
                neighbours = sz if neighbours is None else neighbours & sz
    if not any_soap:
        return None
    return centres if neighbours is None else centres & neighbours


# ---------------------------------------------------------------------------- probing

_PROBE = """
import sys
from quippy.descriptors import Descriptor
d = Descriptor(sys.argv[1])
print(int(d.dimensions()))
"""


def probe_descriptor(descriptor: str, timeout: float = 120.0) -> int:
    """Initialise ``descriptor`` with quippy in a child process; return its dimension.

    QUIP may abort the whole process on a bad string; the child takes that hit, and the
    last line QUIP printed becomes a one-line :class:`MlpdesignError`.
    """
    try:
        res = subprocess.run(
            [sys.executable, "-c", _PROBE, descriptor],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise MlpdesignError(
            f"quippy did not initialise {descriptor!r} within {timeout:.0f} s"
        ) from None
    if res.returncode == 0:
        try:
            return int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    lines = [
        re.split(r"\s{3,}", "".join(c for c in ln if c.isprintable()).strip())[0]
        for ln in (res.stderr + res.stdout).splitlines()
    ]
    lines = [
        ln
        for ln in lines
        if ln and not ln.startswith(("File ", "Traceback")) and "Traceback (most recent" not in ln
    ]
    msg = lines[-1][:300] if lines else f"the quippy process ended with code {res.returncode}"
    raise MlpdesignError(f"quippy rejects descriptor {descriptor!r}: {msg}")
