"""The numpy GAP predictor against ``quippy.potential.Potential`` on a tiny fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clihelpers import TINY_GAP

from mlpdesign.errors import MlpdesignError
from mlpdesign.gap.fit import FitOptions, fit
from mlpdesign.gap.label import eam_calculator, label, read_labelled
from mlpdesign.gap.model import DescriptorCalculator, load_gap, predict_energies
from mlpdesign.generate.pool import PoolSpec, generate

#: Small but complete: the paper's two terms, a small SOAP.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, eam_file) -> dict[str, Path]:
    """Two labelled sets (train 24, test 20; primitive and 2x1x1 cells) and a model."""
    d = tmp_path_factory.mktemp("gapmodel")
    calc = eam_calculator(eam_file)
    generate(d / "train_pool.xyz", 24, PoolSpec(seed=11))
    generate(d / "test_pool.xyz", 20, PoolSpec(seed=12, supercell=(2, 1, 1)))
    label(d / "train_pool.xyz", d / "train.xyz", calc)
    label(d / "test_pool.xyz", d / "test.xyz", calc)
    fit(d / "train.xyz", d / "model", FitOptions(gap=TINY_GAP, n_sparse={"soap": 20}))
    return {"train": d / "train.xyz", "test": d / "test.xyz", "model": d / "model"}


def quippy_energies(model: Path, frames) -> np.ndarray:
    from quippy.potential import Potential

    pot = Potential(param_filename=str(model / "gap.xml"))
    out = []
    for a in frames:
        b = a.copy()
        b.calc = pot
        out.append(b.get_potential_energy())
    return np.array(out)


@pytest.mark.parametrize("fast", [True, False])
def test_predict_matches_quippy_potential(tiny, fast):
    model = load_gap(tiny["model"])
    assert [t.covariance for t in model.terms] == ["ard_se", "dot_product"]
    for which in ("train", "test"):
        frames = read_labelled(tiny[which])
        nat = np.array([len(a) for a in frames])
        ref = quippy_energies(tiny["model"], frames)
        got = predict_energies([model], frames, fast=fast)[0]
        assert np.max(np.abs(got - ref) / nat) < 1e-8
        # and the model is a fit, not noise: close to the labels on its own training set
        if which == "train":
            lab = np.array([a.info["dft_energy"] for a in frames])
            assert np.sqrt(np.mean(((got - lab) / nat) ** 2)) < 0.02


def test_several_models_share_descriptors(tiny):
    m = load_gap(tiny["model"])
    frames = read_labelled(tiny["test"])
    e = predict_energies([m, m], frames)
    assert e.shape == (2, len(frames))
    np.testing.assert_array_equal(e[0], e[1])
    one = [m.energy(a.numbers, DescriptorCalculator(m.descriptors)(a)) for a in frames[:5]]
    np.testing.assert_allclose(one, e[0, :5], rtol=0, atol=1e-9)


def test_fast_distance_2b_equals_quippy_rows(tiny):
    m = load_gap(tiny["model"])
    s2b = m.terms[0].descriptor
    if "Z1=" not in s2b:  # fitted with add_species=F: give the species, as GAP users do
        s2b += " Z1=40 Z2=40"
    assert "Z1=40" in s2b  # the fast path must accept the species
    fast, slow = DescriptorCalculator([s2b], fast=True), DescriptorCalculator([s2b], fast=False)
    for a in read_labelled(tiny["test"])[:6]:
        (rf, wf), (rs, ws) = fast(a)[s2b], slow(a)[s2b]
        o = np.lexsort((ws, rs[:, 0]))
        p = np.lexsort((wf, rf[:, 0]))
        np.testing.assert_allclose(rf[p], rs[o], atol=1e-12)
        np.testing.assert_allclose(wf[p], ws[o], atol=1e-12)


def test_load_gap_bad_inputs(tiny, tmp_path):
    with pytest.raises(MlpdesignError, match="no such GAP model file"):
        load_gap(tmp_path / "none.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<not closed")
    with pytest.raises(MlpdesignError, match="not a GAP XML file"):
        load_gap(bad)
    # a copied gap.xml without its sparse-point files
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "gap.xml").write_bytes((tiny["model"] / "gap.xml").read_bytes())
    with pytest.raises(MlpdesignError, match="sparse-point file of gap.xml is missing"):
        load_gap(lonely)
