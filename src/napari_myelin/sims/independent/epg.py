r"""Extended phase graphs with exchanging pools (EPG-X), written for this simulator only.

Configuration states (Hennig 1991, Weigel 2015): transverse :math:`F^+_k, F^-_k` and longitudinal
:math:`Z_k`, :math:`k = 0 .. K-1` dephasing orders, one set per water pool ``p`` (axis ``P``), for any
number of independent chains (leading axes). Operators:

* RF pulse of flip :math:`\alpha` and phase :math:`\varphi` (Weigel 2015, eq. 15), the same for every
  pool and order::

      F+' =  cos^2(a/2) F+ + e^{2i phi} sin^2(a/2) F- - i e^{i phi} sin(a) Z
      F-' =  e^{-2i phi} sin^2(a/2) F+ + cos^2(a/2) F- + i e^{-i phi} sin(a) Z
      Z'  = -(i/2) e^{-i phi} sin(a) F+ + (i/2) e^{i phi} sin(a) F- + cos(a) Z

* relaxation and exchange over a time ``t`` (Bloch-McConnell; Malik et al. 2018, EPG-X): with the
  exchange matrix :math:`X` (:math:`X_{ij} = k_{j \to i}`, :math:`X_{jj} = -\sum_i k_{j \to i}`)
  the transverse states evolve by :math:`\exp((X - R_2) t)` and the longitudinal ones by
  :math:`\exp((X - R_1) t)`, with recovery of :math:`Z_0` towards the equilibrium :math:`M_{eq}`:
  :math:`Z_0 \leftarrow E_L (Z_0 - M_{eq}) + M_{eq}` (valid because detailed balance gives
  :math:`X M_{eq} = 0`);
* a dephasing gradient (one unit of k): :math:`F^+_k \to F^+_{k+1}`, :math:`F^-_k \to F^-_{k-1}`,
  :math:`F^+_0 = (F^-_0)^*`.

Two sequences use them: :func:`cpmg_echoes` (multi-echo spin echo with the steady state of a finite
TR) and :func:`spgr_pulse_train` (RF- and gradient-spoiled gradient echo, for imperfect spoiling).
Matrix exponentials of the ``P x P`` generators are taken by eigendecomposition (:func:`expm_generator`):
Bloch-McConnell generators obey detailed balance, so they are similar to symmetric matrices, with real
eigenvalues and a complete set of eigenvectors.

References
----------
Hennig J. Echoes - how to generate, recognize, use or avoid them in MR-imaging sequences.
Concepts Magn Reson 3:125-143 (1991).
Weigel M. Extended phase graphs: dephasing, RF pulses, and echoes - pure and simple. J Magn Reson
Imaging 41:266-295 (2015).
Malik SJ, Teixeira RPAG, Hajnal JV. Extended phase graph formalism for systems with magnetization
transfer and exchange. Magn Reson Med 80:767-779 (2018).
McConnell HM. Reaction rates by nuclear magnetic resonance. J Chem Phys 28:430-431 (1958).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def expm_generator(a: np.ndarray) -> np.ndarray:
    """``expm(a)`` of a batch of diagonalisable matrices with real spectra (..., P, P): ``V e^L V^-1``."""
    w, v = np.linalg.eig(a)
    return ((v * np.exp(w)[..., None, :]) @ np.linalg.inv(v)).real


@dataclass
class Pools:
    """Water pools of a batch of chains (all arrays broadcast over the leading chain shape).

    Attributes
    ----------
    m_eq : ndarray, shape (..., P)
        Equilibrium magnetisation of each pool.
    r1, r2 : ndarray, shape (..., P)
        Longitudinal and transverse relaxation rates (1/s).
    k : ndarray, shape (..., P, P) or None
        Exchange rates (1/s): ``k[..., i, j]`` from pool ``j`` to pool ``i`` (diagonal ignored).
        ``None``: no exchange.
    """

    m_eq: np.ndarray
    r1: np.ndarray
    r2: np.ndarray
    k: np.ndarray | None = None

    def shape(self) -> tuple[int, ...]:
        """Leading chain shape shared by every array."""
        arrays = [self.m_eq[..., 0], self.r1[..., 0], self.r2[..., 0]]
        if self.k is not None:
            arrays.append(self.k[..., 0, 0])
        return np.broadcast_shapes(*(a.shape for a in arrays))

    def broadcast(self, shape: tuple[int, ...]) -> "Pools":
        """The same pools broadcast to the chain shape ``shape``."""
        p = self.m_eq.shape[-1]
        k = None if self.k is None else np.broadcast_to(self.k, tuple(shape) + (p, p))
        return Pools(*(np.broadcast_to(a, tuple(shape) + (p,)) for a in (self.m_eq, self.r1, self.r2)), k)

    def propagators(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Transverse and longitudinal propagators ``exp((X - R) t)``, shape (..., P, P)."""
        shp = self.shape()
        p = self.m_eq.shape[-1]
        r1 = np.broadcast_to(self.r1, shp + (p,))
        r2 = np.broadcast_to(self.r2, shp + (p,))
        if self.k is None:
            eye = np.eye(p)
            return np.exp(-r2 * t)[..., None] * eye, np.exp(-r1 * t)[..., None] * eye
        k = np.broadcast_to(self.k, shp + (p, p)).copy()
        idx = np.arange(p)
        k[..., idx, idx] = 0.0
        x = k - np.eye(p) * k.sum(axis=-2)[..., None, :]
        return expm_generator((x - r2[..., None] * np.eye(p)) * t), expm_generator((x - r1[..., None] * np.eye(p)) * t)


def two_site_exchange(fraction_a, residence_a) -> np.ndarray:
    """Exchange matrix (..., 2, 2) of pools ``a`` (fraction ``f``) and ``b`` (``1 - f``).

    ``k_{a->b} = 1 / tau_a`` and, by detailed balance ``f k_{a->b} = (1 - f) k_{b->a}``,
    ``k_{b->a} = f / ((1 - f) tau_a)`` (McConnell 1958). ``residence_a = inf`` gives no exchange.
    """
    f = np.clip(np.asarray(fraction_a, float), 0.0, 0.999)
    kab = 1.0 / np.asarray(residence_a, float) * np.ones_like(f)
    kba = f * kab / (1.0 - f)
    out = np.zeros(f.shape + (2, 2))
    out[..., 1, 0] = kab
    out[..., 0, 1] = kba
    return out


class _States:
    """F+, F-, Z of shape (K, ..., P) (complex; orders first, so that a range of orders is contiguous)
    with the three EPG operators.

    Every operator acts on the orders ``< upto`` only (the others are known to be zero or unable to
    refocus in time), which halves the work of a CPMG train.
    """

    def __init__(self, z0: np.ndarray, n_states: int):
        self.fp = np.zeros((n_states,) + z0.shape, complex)
        self.fm = np.zeros_like(self.fp)
        self.z = np.zeros_like(self.fp)
        self.z[0] = z0

    def rf(self, rotation: tuple, upto: int | None = None) -> None:
        """Apply a pulse given by :func:`_rotation`.

        A pulse about the axis at ``phase`` is ``Rz(phase) Rx(alpha) Rz(-phase)``; ``Rz(-phase)``
        multiplies F+ by ``exp(-i phase)`` and F- by ``exp(i phase)``. About x, with
        ``S = (F+ + F-)/2``, ``D = (F+ - F-)/2`` the operator of the module docstring reads
        ``F+' = S + cos(a) D - i sin(a) Z``, ``F-' = S - cos(a) D + i sin(a) Z``,
        ``Z' = -i sin(a) D + cos(a) Z``.
        """
        ca, isa, e = rotation
        fp, fm, z = self.fp[:upto], self.fm[:upto], self.z[:upto]
        if e != 1.0:
            fp *= np.conj(e)
            fm *= e
        half_sum = 0.5 * (fp + fm)
        half_diff = 0.5 * (fp - fm)
        w = isa * z
        z *= ca
        z -= isa * half_diff
        half_diff *= ca
        np.add(half_sum, half_diff, out=fp)
        fp -= w
        np.subtract(half_sum, half_diff, out=fm)
        fm += w
        if e != 1.0:
            fp *= e
            fm *= np.conj(e)

    def relax(self, interval: tuple, upto: int | None = None) -> None:
        """Apply the propagators of :func:`_interval` to every order and add the Z_0 recovery."""
        et, el, rec, diagonal = interval
        fp, fm, z = self.fp[:upto], self.fm[:upto], self.z[:upto]
        if diagonal:  # no exchange: element-wise decay, shape (..., P)
            fp *= et
            fm *= et
            z *= el
        else:
            fp[...] = _mix(et, fp)
            fm[...] = _mix(et, fm)
            z[...] = _mix(el, z)
        self.z[0] += rec

    def shift(self, upto: int | None = None) -> None:
        """One unit of dephasing (orders ``>= upto`` are dropped)."""
        k = len(self.fp) - 1 if upto is None else min(upto, len(self.fp) - 1)
        self.fp[1:k + 1] = self.fp[:k].copy()
        self.fm[:k] = self.fm[1:k + 1]
        self.fm[k] = 0.0
        self.fp[0] = np.conj(self.fm[0])


def _mix(mat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_j mat[..., i, j] x[..., j]`` for every pool ``i`` (a few pools: explicit sums beat matmul)."""
    p = x.shape[-1]
    return np.stack([sum(mat[..., i, j] * x[..., j] for j in range(p)) for i in range(p)], axis=-1)


def _rotation(alpha, phase: float) -> tuple:
    """``(cos a, i sin a, exp(i phase))`` of flips ``alpha`` (rad) about the axis at ``phase`` (rad, scalar).

    The first two have the chain shape of ``alpha`` plus the pool axis to broadcast over.
    """
    a = np.asarray(alpha, float)[..., None]
    return np.cos(a), 1j * np.sin(a), complex(np.exp(1j * float(phase)))


def _interval(pools: Pools, t: float, lead: tuple[int, ...]) -> tuple:
    """Propagators, Z_0 recovery ``(I - E_L) M_eq`` and a no-exchange flag for an interval ``t``.

    Extra leading axes ``lead`` are prepended; without exchange the propagators are returned as
    element-wise factors of shape (..., P).
    """
    pad = (1,) * len(lead)
    m_eq = pools.m_eq
    if pools.k is None:
        et, el = np.exp(-pools.r2 * t), np.exp(-pools.r1 * t)
        rec = (1.0 - el) * m_eq
        return et.reshape(pad + et.shape), el.reshape(pad + el.shape), rec.reshape(pad + rec.shape), True
    et, el = pools.propagators(t)
    rec = m_eq - np.einsum("...ij,...j->...i", el, m_eq)
    return et.reshape(pad + et.shape), el.reshape(pad + el.shape), rec.reshape(pad + rec.shape), False


def cpmg_echoes(pools: Pools, excitation_deg, refocusing_deg, esp: float, n_echoes: int,
                tr: float | None = None) -> np.ndarray:
    """Complex echo amplitudes of a CPMG train, summed over pools, in the steady state of repetition ``tr``.

    Excitation ``excitation_deg`` about y, refocusing ``refocusing_deg`` about x at ``esp/2, 3 esp/2,
    ...``, echoes at ``n esp``. ``n_echoes + 1`` orders are tracked (higher orders cannot refocus before
    the last echo), and at each step only those that are non-zero and can still refocus. With ``tr``, transverse states and ``Z_k>0`` are spoiled after the last echo and
    ``Z_0`` recovers for ``tr - n_echoes esp`` (with exchange); the train starts from the fixed point
    ``m = E_L(t_rec) (Z_end(m) - M_eq) + M_eq``. As ``Z_end`` and the echoes are affine in the initial
    longitudinal magnetisation ``m`` (P values), the train is run for ``m = 0`` and ``m = e_p`` and
    the fixed point solved exactly. ``tr=None``: full recovery (``m = M_eq``).

    Parameters
    ----------
    pools : Pools
        Chain shape ``S``, ``P`` pools.
    excitation_deg, refocusing_deg : array_like, broadcast to ``S``
        Actual flip angles (deg).
    esp : float
        Echo spacing (s).
    n_echoes : int
    tr : float or None
        Repetition time (s).

    Returns
    -------
    ndarray, shape ``S + (n_echoes,)``, complex
    """
    shp = np.broadcast_shapes(pools.shape(), np.shape(excitation_deg), np.shape(refocusing_deg))
    pools, p = pools.broadcast(shp), pools.m_eq.shape[-1]
    m_eq = pools.m_eq
    if tr is None:
        echoes, _ = _cpmg_run(pools, m_eq[None], excitation_deg, refocusing_deg, esp, n_echoes)
        return echoes[0]
    starts = np.zeros((p + 1,) + shp + (p,))
    for i in range(p):
        starts[i + 1, ..., i] = 1.0
    echoes, z_end = _cpmg_run(pools, starts, excitation_deg, refocusing_deg, esp, n_echoes)
    gain_z = np.moveaxis(z_end[1:] - z_end[:1], 0, -1)  # (S, P, P): column j = response to m = e_j
    _, el = pools.propagators(tr - n_echoes * esp)
    lhs = np.eye(p) - el @ gain_z
    rhs = np.einsum("...ij,...j->...i", el, z_end[0] - m_eq) + m_eq
    m = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    gain_e = np.moveaxis(echoes[1:] - echoes[:1], 0, -1)  # (S, n_echoes, P)
    return echoes[0] + np.einsum("...ep,...p->...e", gain_e, m)


def _cpmg_run(pools: Pools, starts: np.ndarray, excitation_deg, refocusing_deg, esp: float, n_echoes: int):
    """Echo amplitudes (R, S, n) and final real Z_0 (R, S, P) from the initial Z_0 ``starts`` (R, S, P)."""
    half = _interval(pools, esp / 2.0, starts.shape[:1])
    st = _States(starts.astype(complex), n_echoes + 1)
    st.rf(_rotation(np.deg2rad(np.asarray(excitation_deg, float))[None], np.pi / 2))
    refocus = _rotation(np.deg2rad(np.asarray(refocusing_deg, float))[None], 0.0)
    echoes = np.empty(starts.shape[:-1] + (n_echoes,), complex)
    for n in range(n_echoes):
        # after half-step j the orders are <= j, and an order k refocuses only if j + k <= 2 n_echoes
        upto = min(2 * n + 3, 2 * (n_echoes - n) + 1, n_echoes + 1)
        st.relax(half, upto)
        st.shift(upto)
        st.rf(refocus, upto)
        st.relax(half, upto)
        st.shift(upto)
        echoes[..., n] = st.fp[0].sum(axis=-1)
    return echoes, st.z[0].real


def spgr_pulse_train(pools: Pools, flip_deg, tr: float, n_pulses: int, *, rf_increment_deg: float = 50.0,
                     ideal: bool = False, n_states: int | None = None, initial=None) -> np.ndarray:
    """Transverse magnetisation of each pool just after the last of ``n_pulses`` spoiled pulses.

    Pulse ``n`` has phase ``phi_n = Phi n (n + 1) / 2`` (quadratic RF spoiling, increment ``Phi``) and
    is followed by relaxation and exchange for ``tr`` and one unit of gradient dephasing; the signal is
    demodulated by the receiver phase ``phi_n``. ``ideal=True`` destroys every transverse state before
    each pulse (perfect spoiling), which converges to the Bloch-McConnell steady state. Starts from
    equilibrium.

    Parameters
    ----------
    pools : Pools
    flip_deg : array_like, broadcast to the chain shape
        Actual flip angle (deg).
    tr : float
        Repetition time (s).
    n_pulses : int
    rf_increment_deg : float
        RF-spoiling phase increment ``Phi`` (deg).
    ideal : bool
    n_states : int, optional
        Dephasing orders kept (default ``n_pulses``: none dropped).
    initial : ndarray, shape ``S + (P,)``, optional
        Longitudinal magnetisation before the first pulse.

    Returns
    -------
    ndarray, shape ``S + (P,)``, complex
        ``F+_0`` of each pool (times ``exp(-i phi)``); ``|sum|`` is the magnitude signal at TE = 0.
    """
    pools = pools.broadcast(np.broadcast_shapes(pools.shape(), np.shape(flip_deg)))
    period = _interval(pools, tr, ())
    z0 = pools.m_eq if initial is None else np.broadcast_to(initial, pools.m_eq.shape)
    st = _States(np.asarray(z0).astype(complex), int(n_states or n_pulses))
    alpha = np.deg2rad(np.asarray(flip_deg, float))
    inc = np.deg2rad(rf_increment_deg)
    out = None
    for n in range(n_pulses):
        if ideal:
            st.fp[...] = 0.0
            st.fm[...] = 0.0
        phase = inc * n * (n + 1) / 2.0
        st.rf(_rotation(alpha, phase))
        out = st.fp[0] * np.exp(-1j * (phase - np.pi / 2))
        st.relax(period)
        st.shift()
    return out
