"""The fusion network: a compact two-level 3D U-Net with a gain-offset output on the input MWF.

:class:`FusionNet` (built lazily by :func:`make_net`, so that importing the package does not import torch)
reads the normalised maps, the brain mask and the presence flags, and predicts a per-voxel gain
:math:`g_\\theta` and offset :math:`b_\\theta` applied to the input MWF averaged over a small Gaussian
neighbourhood (:func:`skip_mwf`, SD ``skip_sigma_voxels`` in the model card): a multiplicative bias correction
in which the MWF passes straight to the output, so local contrast such as a lesion is rescaled rather than
re-synthesised from down-sampled features, while the voxel noise of the NNLS fit is averaged first,

.. math:: \\mathrm{iMWF}(\\%) = (1 + g_\\theta(\\tilde x))\\,100\\,\\overline{\\mathrm{MWF}}_{in} + b_\\theta(\\tilde x).

A dropout layer placed before the 1x1 output convolution gives the Monte-Carlo dropout uncertainty (the
body runs once, so 8 samples cost little more than one pass; see :func:`napari_myelin.fusion.inference.predict`).

References
----------
Ronneberger O, Fischer P, Brox T. U-Net. MICCAI 2015 (3D variant: Cicek et al. 2016).
"""

from __future__ import annotations

import numpy as np


def _torch():
    import torch

    return torch


def _build_net_class():
    torch = _torch()
    nn = torch.nn

    class _Block(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            # BatchNorm with running statistics at inference: the output of a voxel does not depend on the
            # field of view (GroupNorm/InstanceNorm would normalise with whole-volume statistics).
            self.body = nn.Sequential(
                nn.Conv3d(cin, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Conv3d(cout, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.LeakyReLU(0.1, inplace=True),
            )

        def forward(self, x):
            return self.body(x)

    class FusionNet(nn.Module):
        """Two-level 3D U-Net with MC dropout before the output layer and a gain-offset output on the input MWF.

        Parameters
        ----------
        in_channels : int
            Normalised maps + brain mask + presence flags.
        width : int
            Feature maps at full resolution (doubled at each level).
        dropout : float
            Dropout probability on the last feature maps (kept on at inference for MC-dropout uncertainty:
            the network body runs once, the dropout + 1x1 output layer ``n_samples`` times).
        """

        def __init__(self, in_channels: int, width: int = 8, dropout: float = 0.1):
            super().__init__()
            w = width
            self.enc1 = _Block(in_channels, w)
            self.enc2 = _Block(w, 2 * w)
            self.bottom = _Block(2 * w, 4 * w)
            self.pool = nn.MaxPool3d(2)
            self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2)
            self.dec2 = _Block(4 * w, 2 * w)
            self.up1 = nn.ConvTranspose3d(2 * w, w, 2, stride=2)
            self.dec1 = _Block(2 * w, w)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Conv3d(w, 2, 1)  # gain g and offset b (MWF %)

        def encode(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            b = self.bottom(self.pool(e2))
            return e1, e2, b

        def features(self, x):
            e1, e2, b = self.encode(x)
            d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
            return self.dec1(torch.cat([self.up1(d2), e1], dim=1))

        def output(self, feats, mwf_percent):
            """``(1 + g) MWF% + b`` with ``(g, b)`` the 1x1 head of ``feats`` (shape ``(N, w, X, Y, Z)``)."""
            gb = self.head(feats)
            return (1.0 + gb[:, :1]) * mwf_percent + gb[:, 1:]

        def forward(self, x, mwf_percent):
            return self.output(self.drop(self.features(x)), mwf_percent)

    return FusionNet


_NET_CLASS = None


def make_net(in_channels: int, width: int = 8, dropout: float = 0.1):
    """A new :class:`FusionNet` (torch module)."""
    global _NET_CLASS
    if _NET_CLASS is None:
        _NET_CLASS = _build_net_class()
    return _NET_CLASS(in_channels, width=width, dropout=dropout)


def n_parameters(net) -> int:
    """Number of parameters (weights and biases) of ``net``."""
    return int(sum(p.numel() for p in net.parameters()))


def skip_mwf(mwf_fraction: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The MWF the network's gain and offset apply to: a Gaussian average inside the brain mask,

    .. math:: \\bar m = \\frac{G_\\sigma * (m\\,M)}{G_\\sigma * M}\\ \\text{in } M,\\ 0 \\text{ outside},

    with :math:`M` the mask and :math:`\\sigma` in voxels (``sigma=0`` returns the MWF masked). Averaging
    first keeps the voxel noise of the NNLS MWF out of the multiplicative path while blobs of a few voxels
    (lesions) keep most of their contrast.
    """
    from scipy.ndimage import gaussian_filter

    mask = np.asarray(mask, bool)
    m = np.where(mask, mwf_fraction, 0.0).astype(np.float32)
    if sigma <= 0:
        return m
    num = gaussian_filter(m, sigma, mode="constant")
    den = gaussian_filter(mask.astype(np.float32), sigma, mode="constant")
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
