"""Independent simulator: subjects whose data the estimators did not generate (issue 16).

The project phantom (:mod:`napari_myelin.sims.phantom`) simulates each acquisition with the
estimators' own forward models (the EPG of ``reconst.epg``, the DKI expansion, ``reconst.dipole``,
the two-pool model of ``reconst.qpm``), so an estimator fitted to it can only fail by numerics and
noise. This package shares **no forward-model code** with the estimators: it imports nothing from
``napari_myelin.reconst`` or ``napari_myelin.sims.phantom`` (an import-linter ``forbidden`` contract
in ``pyproject.toml``, checked by the tests). Anatomy comes from the shipped atlas
(:mod:`napari_myelin.align.atlas`), volumes from :mod:`napari_myelin.io`. Its physics goes beyond
the estimators' models on purpose:

* **MESE** (:mod:`.mese`): 2D CPMG with the slice profiles of Hann-windowed sinc pulses (Bloch
  simulation, :mod:`.pulses`) integrated over the slice, the steady state of a finite TR, T2 pools
  with log-normal widths (myelin, intra/extra-cellular, CSF), optional two-site exchange (EPG-X),
  on its own EPG implementation (:mod:`.epg`);
* **DWI** (:mod:`.dwi`): Watson-dispersed sticks and zeppelins (tortuosity), free water, shells to
  b = 3000 s/mm^2 (not the DKI expansion); the truth DKI metrics are the cumulants of the mixture;
* **GRE** (:mod:`.gre`): bulk susceptibility of brain and head (sinuses, mastoids, bone, air) by its
  own k-space dipole convolution, 2nd-order shim, hollow-cylinder white-matter frequency offsets
  (Wharton & Bowtell 2012), compartment T2*, intravoxel dephasing;
* **SPGR** (:mod:`.spgr`): Bloch-McConnell exchanging pools with the subject's own T1s and residence
  time and the pools' T2* at TE, receive bias, optional imperfect RF spoiling; a B1 map with its own
  noise and blur (:mod:`.fields`);
* **MTS** (:mod:`.mt`): MT-, PD- and T1-weighted SPGR from a pulse-resolved two-pool MT model (bound
  pool following myelin, super-Lorentzian saturation, exchange during the pulse), truth MTsat/MTR;
* **susceptibility sources** (:mod:`.gre`): truth ``chi_para``/``chi_dia`` and spin-echo R2; with
  ``chi_separation=True`` a GRE whose R2' is built from both sources (WM iron, static dephasing);
* **anatomy** (:mod:`.anatomy`, :mod:`.geometry`): per-subject tract MWF from a population
  distribution, dispersion and axon density per tract, atrophy (ventricles, cortex), head size and
  pose with a non-affine warp, deep nuclei and veins, random lesions and NAWM deficits.

Every constant has its literature source in :mod:`.constants`. :data:`FROZEN_TEST_SEEDS` is the
frozen test set, never used to choose anything. :func:`make_independent_subject` returns an
:class:`IndependentSubject` (``acq``, ``truth``, ``lut``, ``parameters``, as the project phantom);
:func:`write_independent_subject` writes the phantom's BIDS-like layout, which ``napari-myelin run``
processes.

Modules: :mod:`.constants`, :mod:`.epg`, :mod:`.pulses`, :mod:`.geometry`, :mod:`.anatomy`,
:mod:`.tissue`, :mod:`.fields`, :mod:`.session`, :mod:`.mese`, :mod:`.dwi`, :mod:`.gre`, :mod:`.spgr`,
:mod:`.mt`, :mod:`.acquire`, :mod:`.subject`, :mod:`.writer`.
"""

from napari_myelin.sims.independent.subject import FROZEN_TEST_SEEDS, IndependentSubject, make_independent_subject
from napari_myelin.sims.independent.writer import write_independent_subject, write_subject

__all__ = ["FROZEN_TEST_SEEDS", "IndependentSubject", "make_independent_subject", "write_independent_subject",
           "write_subject"]
