"""QSM on the shared digital brain phantom (``size="small"``, 4 mm, oblique slab, 4 echoes, SNR 200).

Ground truth: the phantom's ``truth["gre"]`` (``chi``, ``local_field``, ``mask``). The full-size tables
are printed by ``benchmarks/phantom_qsm.py`` and shown in the README, QSM section.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_myelin.reconst import qsm
from napari_myelin.reconst.dipole import b0_direction
from napari_myelin.sims.phantom import make_phantom


@pytest.fixture(scope="module")
def gre():
    ph = make_phantom(seed=0, size="small", snr=200.0)
    phase = ph.acq["gre_phase"]
    truth = ph.truth["gre"]
    affine = phase.affine
    return dict(
        mag=ph.acq["gre_mag"].data, phase=phase.data, te=phase.metadata["EchoTime"],
        b0=phase.metadata["MagneticFieldStrength"], affine=affine,
        voxel=np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), bdir=b0_direction(affine),
        chi=truth["chi"].data, local=truth["local_field"].data, mask=truth["mask"].data > 0,
    )


def test_inversion_only_tv_beats_tkd_on_the_phantom(gre):
    m, v, b = gre["mask"], gre["voxel"], gre["bdir"]
    tv = qsm.qsm_metrics(qsm.tv_admm(gre["local"], m, v, b), gre["chi"], m)
    tk = qsm.qsm_metrics(qsm.tkd(gre["local"], m, v, b), gre["chi"], m)
    assert tv["nrmse"] < tk["nrmse"] and tv["hfen"] < tk["hfen"] and tv["ssim"] > tk["ssim"]
    assert tv["nrmse"] < 35 and tv["ssim"] > 0.8


def test_whole_pipeline_tv_beats_tkd_and_pdf_keeps_the_edge(gre):
    res, masks = {}, {}
    for inversion in ("tv", "tkd"):
        maps = qsm.fit_qsm(gre["mag"], gre["phase"], gre["te"], field_strength=gre["b0"], affine=gre["affine"],
                           inversion=inversion)
        keep = (maps["mask"] > 0) & gre["mask"]
        res[inversion] = qsm.qsm_metrics(maps["chi"], gre["chi"], keep)
    # at 4 mm the whole-pipeline error is dominated by background removal; TV still has the lower NRMSE
    # (its HFEN is within 5 % of TKD's here; at 2 mm TV wins all three metrics, benchmarks/phantom_qsm.py)
    assert res["tv"]["nrmse"] < res["tkd"]["nrmse"] < 100
    assert res["tv"]["hfen"] < 1.1 * res["tkd"]["hfen"]
    # edge: with the true brain mask given, PDF keeps a value in (at least 97 % of) every mask voxel;
    # V-SHARP and LBV lose their boundary layer
    for bfr in ("pdf", "vsharp", "lbv"):
        maps = qsm.fit_qsm(gre["mag"], gre["phase"], gre["te"], field_strength=gre["b0"], affine=gre["affine"],
                           mask=gre["mask"], bfr=bfr, inversion="tkd")
        masks[bfr] = qsm.edge_fraction(maps["mask"], gre["mask"])
        assert np.count_nonzero(maps["chi"][maps["mask"] > 0]) > 0.99 * np.count_nonzero(maps["mask"])
    assert masks["pdf"] >= 0.97
    assert masks["vsharp"] < masks["pdf"] and masks["lbv"] < masks["pdf"]
