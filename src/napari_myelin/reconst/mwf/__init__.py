"""Myelin water fraction from multi-echo spin echo: T2 distributions by regularised NNLS (DECAES-exact).

A re-implementation of DECAES.jl's ``T2mapSEcorr`` / ``T2partSEcorr`` (the UBC algorithm) in which
all voxels are fitted together as batched array work:

1. each voxel's decay ``b`` is divided by its maximum (``decay_scale``);
2. the refocusing flip angle ``alpha`` is optimised (unless given): the NNLS residual
   ``u(alpha) = ||A(alpha) x - b||^2`` and its exact derivative are evaluated on a coarse-to-fine
   subset of ``n_ref_angles`` angles linearly spaced in ``[min_ref_angle, 180]`` deg
   (breadth-first bisection to ``min(5, n_ref_angles)`` angles, then the grid cell around the
   surrogate's minimum), and ``alpha`` is the minimum of the cubic Hermite spline surrogate
   through the evaluated points (DECAES ``CubicHermiteSplineSurrogate`` + ``bisection_search``);
3. the EPG basis ``A(alpha)`` (:func:`napari_myelin.reconst.epg.epg_decay_curve`, ``n_t2`` log-spaced
   T2 times in ``t2_range``, T1 fixed) and the T2 distribution
   ``x = argmin_{x>=0} ||A x - b||^2 + mu^2 ||x||^2`` with ``mu`` chosen by ``reg``:

   * ``none``: ``mu = 0``;
   * ``chi2``: ``||A x_mu - b||^2 = Chi2Factor ||A x_0 - b||^2`` (root in ``log mu`` by bracketing from
     ``log mu = -4`` then Brent, stopping when the relative misfit is below ``1e-3 (Chi2Factor - 1)``);
   * ``mdp``: Morozov's discrepancy principle ``||A x_mu - b||^2 = n_TE sigma^2`` with
     ``sigma = noise_level / decay_scale``;
   * ``gcv``: minimum over ``log mu in [-8, 2]`` of ``||A x_mu - b||^2 / (n_TE - sum s_i^2/(s_i^2+mu^2))^2``;
   * ``lcurve``: corner of maximum Menger curvature of ``(log ||A x_mu - b||^2, log ||x_mu||^2)``
     found by DECAES's golden-section corner search;

4. outputs are rescaled by ``decay_scale``.

The non-negative least-squares problems of a chunk of voxels are solved together by one call of the
compiled batched Lawson-Hanson solver :func:`napari_myelin.reconst.nnls.batched_nnls` (float64, normal
equations, warm-started from the previous solve of the same voxel); the scalar searches around it
(angle surrogate, bracketing, Brent) advance all voxels of a chunk in lock step as array operations.
Voxels with NaN/Inf echoes or no positive signal are skipped (NaN outputs) and counted in
``parameters["n_skipped"]``.

The package, in the order of the fit:

* :mod:`.t2dist`: :func:`fit_t2_distribution`, its input checks, voxel selection and the chunked fit;
* :mod:`.basis`: EPG basis tables over refocusing angles and the bases of a chunk (step 3);
* :mod:`.flip_angle`: the per-voxel refocusing angle search (step 2);
* :mod:`.regularization`: the choice of ``mu`` and the regularised NNLS of a chunk (step 3), with the
  vectorised scalar searches of :mod:`.search`;
* :mod:`.parts`: :func:`t2_parts`, the short/medium T2 partition (``T2partSEcorr``);
* :mod:`.maps`: :func:`myelin_water` (fit + partition), :func:`to_percent`, :func:`automatic_mask` and
  :func:`predict_decay`.

References
----------
Whittall K.P., MacKay A.L., "Quantitative interpretation of NMR relaxation data", J Magn Reson 84 (1989).
Prasloski T. et al., "Applications of stimulated echo correction to multicomponent T2 analysis",
Magn Reson Med 67 (2012).
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
Lawson C.L., Hanson R.J., Solving Least Squares Problems, SIAM (1995), ch. 23.
"""

from __future__ import annotations

from napari_myelin.reconst.mwf.maps import automatic_mask, myelin_water, predict_decay, to_percent
from napari_myelin.reconst.mwf.parts import t2_parts
from napari_myelin.reconst.mwf.regularization import REGULARIZATIONS
from napari_myelin.reconst.mwf.t2dist import fit_t2_distribution
from napari_myelin.reconst.nnls import batched_nnls

__all__ = [
    "fit_t2_distribution",
    "t2_parts",
    "batched_nnls",
    "predict_decay",
    "myelin_water",
    "to_percent",
    "automatic_mask",
    "REGULARIZATIONS",
]
