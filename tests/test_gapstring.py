"""GAP-string parsing, validation and rendering (no quippy except the probe tests)."""

from __future__ import annotations

import pytest

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.strings import (
    DEFAULT_GAP,
    gap_fit_argument,
    parse_gap,
    probe_descriptor,
    render_gap,
    soap_species,
    with_species,
)


def test_default_gap_splits_descriptor_and_kernel_keys():
    d2b, soap = parse_gap(DEFAULT_GAP)
    assert d2b.name == "distance_2b"
    assert d2b.descriptor == "distance_2b cutoff=7.0"
    assert d2b.kernel == {"covariance_type": "ard_se", "delta": 0.8, "theta_uniform": 0.3}
    assert soap.descriptor == (
        "soap cutoff=6.8 l_max=10 n_max=10 normalize=T atom_sigma=0.15 n_Z=1 Z={40}"
    )
    assert soap.kernel == {"covariance_type": "dot_product", "zeta": 4, "delta": 0.3}
    assert isinstance(soap.kernel["zeta"], int) and isinstance(soap.kernel["delta"], float)
    assert soap.params["Z"] == [40] and soap.params["normalize"] is True
    assert d2b.dim is None and soap.segment.startswith("soap cutoff=6.8")


def test_render_round_trip_and_gap_fit_argument():
    specs = parse_gap(DEFAULT_GAP)
    assert render_gap(specs) == DEFAULT_GAP
    assert parse_gap(render_gap(specs)) == specs
    arg = gap_fit_argument(specs)
    assert arg.startswith("gap={distance_2b cutoff=7.0") and arg.endswith("}")
    back = parse_gap(arg)  # the gap={...} wrapper (and its nested braces) is accepted too
    assert [s.descriptor for s in back] == [s.descriptor for s in specs]
    assert [s.kernel for s in back] == [dict(s.kernel, add_species=False) for s in specs]


def test_aliases_braces_and_colons_inside_braces():
    specs = parse_gap(
        "soap cutoff=5 l_max=4 n_max=4 atom_gaussian_width=0.5 "
        "covariance_type=DOT_PRODUCT soap_exponent=2 energy_scale=1.5 "
        "n_sparse=100 sparse_method=cur_points "
        "config_type_n_sparse={hcp:50:fcc:20}"
    )
    (s,) = specs
    assert s.kernel == {
        "covariance_type": "dot_product",
        "zeta": 2,
        "delta": 1.5,
        "n_sparse": 100,
        "sparse_method": "cur_points",
        "config_type_n_sparse": "{hcp:50:fcc:20}",
    }
    assert "config_type_n_sparse={hcp:50:fcc:20}" in s.render()


def test_other_quip_descriptors_pass_through():
    (s,) = parse_gap("power_so4 cutoff=3.0 anything=1 covariance_type=dot_product zeta=2 delta=1")
    assert s.descriptor == "power_so4 cutoff=3.0 anything=1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty gap string"),
        (
            "sop cutoff=5 covariance_type=dot_product delta=1 zeta=2",
            "unknown descriptor 'sop' (did you mean soap?)",
        ),
        (
            "soap cutof=5 l_max=4 n_max=4 atom_sigma=0.5 covariance_type=dot_product "
            "delta=1 zeta=2",
            "unknown key 'cutof' (did you mean cutoff?)",
        ),
        (
            "distance_2b cutoff 7 covariance_type=ard_se delta=1 theta_uniform=0.3",
            "malformed 'cutoff', expected key=value",
        ),
        ("distance_2b cutoff= covariance_type=ard_se delta=1 theta_uniform=0.3", "has no value"),
        (
            "distance_2b cutoff=7 covariance_type=ard_se delta=1 theta_uniform=0.3 : ",
            "descriptor 2 of the gap string is empty",
        ),
        (
            "soap cutoff=5 l_max=4 n_max=4 covariance_type=dot_product delta=1 zeta=2",
            "missing required key atom_sigma=",
        ),
        (
            "soap cutoff=5 l_max=four n_max=4 atom_sigma=0.5 covariance_type=dot_product delta=1 "
            "zeta=2",
            "l_max=four is not valid, expected an integer >= 0",
        ),
        (
            "soap cutoff=-5 l_max=4 n_max=4 atom_sigma=0.5 covariance_type=dot_product "
            "delta=1 zeta=2",
            "cutoff=-5 is not valid, expected a positive number",
        ),
        (
            "soap cutoff=5 l_max=4 n_max=4 atom_sigma=0.5 n_Z=1 Z={40 22} "
            "covariance_type=dot_product delta=1 zeta=2",
            "n_Z=1 but Z has 2 entries",
        ),
        (
            "distance_2b cutoff=7 Z1={1 covariance_type=ard_se delta=1 theta_uniform=0.3",
            "unbalanced {",
        ),
        ("distance_2b cutoff=7 delta=1 theta_uniform=0.3", "missing covariance_type="),
        ("distance_2b cutoff=7 covariance_type=ard_se theta_uniform=0.3", "missing delta="),
        ("distance_2b cutoff=7 covariance_type=ard_se delta=1", "needs one of theta_uniform="),
        (
            "distance_2b cutoff=7 covariance_type=ardse delta=1 theta_uniform=0.3",
            "unknown covariance_type=ardse (did you mean ard_se?)",
        ),
        (
            "soap cutoff=5 l_max=4 n_max=4 atom_sigma=0.5 covariance_type=dot_product delta=1",
            "dot_product needs zeta=",
        ),
        (
            "distance_2b cutoff=7 cutoff=8 covariance_type=ard_se delta=1 theta_uniform=0.3",
            "cutoff given twice",
        ),
        (
            "distance_2b cutoff=7 covariance_type=ard_se delta=1 theta_uniform=0.3 "
            "sparse_method=rnd",
            "unknown sparse_method=rnd",
        ),
    ],
)
def test_bad_gap_strings_give_one_line(text, message):
    with pytest.raises(MlpdesignError) as e:
        parse_gap(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_with_species_fills_soap_z_and_keeps_the_rest():
    specs = with_species(parse_gap(DEFAULT_GAP), [22, 40, 22])
    assert specs[0] == parse_gap(DEFAULT_GAP)[0]
    soap = specs[1]
    assert soap_species(soap) == [22, 40]
    assert soap.params["n_species"] == 2 and soap.params["species_Z"] == [22, 40]
    assert soap.params["l_max"] == 10 and soap.kernel["zeta"] == 4
    assert parse_gap(render_gap(specs)) == specs  # still a valid gap string
    ti = with_species(parse_gap(DEFAULT_GAP), [22])[1]
    assert "n_Z=1 Z={22}" in ti.descriptor and "species_Z" not in ti.descriptor


def test_probe_descriptor_in_a_child_process():
    assert probe_descriptor("power_so4 cutoff=3") == 5
    with pytest.raises(MlpdesignError, match="string_to_int: could not convert"):
        probe_descriptor("distance_2b cutoff=3 Z1=abc")
