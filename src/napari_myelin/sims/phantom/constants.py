"""Constants of the phantom: tissue properties, anatomy landmarks, grids and acquisition protocols.

Units: proton density relative to pure water, relaxation times in s, susceptibility in ppm (CSF = 0),
positions and sizes in MNI template mm, diffusivities in um^2/ms (= 1e-3 mm^2/s), b-values in s/mm^2.

The literature behind these values is listed in :mod:`napari_myelin.sims.phantom` (References):
relaxation and exchange of the myelin and intra/extra-cellular pools, Deoni et al. 2008; myelin-water
imaging, Laule et al. 2006; the contribution of myelin to white-matter susceptibility, Lee et al. 2012;
the diffusion compartment mixture, Jensen & Helpern 2010.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------
# tissue
# --------------------------------------------------------------------------------------------------
GAMMA_HZ_PER_T = 42.577478518e6
B0_TESLA = 3.0
PD = {"wm": 0.69, "gm": 0.80, "csf": 1.0}
T2 = {"my": 0.020, "ie_wm": 0.075, "ie_gm": 0.090, "csf": 2.0}
T1 = {"my": 0.5, "ie_wm": 1.05, "ie_gm": 1.6, "csf": 4.0}
TAU_MYELIN = 0.12
MWF_GM, MWF_DEEP_GM, MWF_WM_DEFAULT = 0.03, 0.05, 0.10
CHI = {"wm_per_mwf": -0.03 / 0.13, "gm": 0.02, "vein": 0.35, "air": 9.2}

#: White-matter myelin-water fraction by tract (abbreviation without side), healthy adult.
TRACT_MWF = {
    "AR": 0.12, "CS": 0.11, "CST": 0.17, "CT": 0.15, "FX": 0.08, "FPT": 0.16, "OPT": 0.15, "OR": 0.14,
    "PPT": 0.16, "TPT": 0.15, "AF": 0.11, "C": 0.11, "EMC": 0.10, "FAT": 0.10, "IFOF": 0.12, "ILF": 0.12,
    "MdLF": 0.11, "SLF": 0.11, "U": 0.07, "UF": 0.10, "VOF": 0.10, "AC": 0.12, "GCC": 0.12, "BCC": 0.13,
    "SCC": 0.15, "PC": 0.12, "CB": 0.10, "ICP": 0.18, "MCP": 0.19, "SCP": 0.18, "V": 0.09, "CTT": 0.16,
    "DLF": 0.15, "LL": 0.16, "ML": 0.17, "MLF": 0.16, "RST": 0.16, "STT": 0.16,
}

#: Iron-rich deep grey matter: (name, centre MNI mm (x>0 mirrored), semi-axes mm, chi ppm).
DEEP_GM = (
    ("globus_pallidus", (19, -3, 0), (5, 8, 5), 0.15),
    ("putamen", (26, 2, 2), (5, 13, 8), 0.07),
    ("caudate", (13, 12, 10), (4, 8, 8), 0.06),
    ("thalamus", (11, -18, 7), (7, 11, 7), 0.02),
    ("red_nucleus", (5, -20, -8), (3, 3, 3), 0.12),
    ("substantia_nigra", (10, -16, -12), (3, 6, 3), 0.12),
    ("dentate", (14, -56, -34), (6, 6, 5), 0.10),
)
#: Veins as line segments (MNI mm start, end, radius mm).
VEINS = (
    ((-3, -4, 16), (-3, -36, 16), 1.5),
    ((3, -4, 16), (3, -36, 16), 1.5),
    ((0, -40, 14), (0, -70, 2), 2.0),
    ((-28, 10, 30), (-28, -40, 40), 1.0),
    ((28, 10, 30), (28, -40, 40), 1.0),
)
#: Air cavities outside the brain giving the background field: (centre MNI mm, radius mm).
AIR = (((0, 80, -26), 11.0), ((0, 30, -58), 14.0), ((-70, -22, -44), 7.0), ((70, -22, -44), 7.0))

#: Diffusion compartments (parallel, perpendicular diffusivity in um^2/ms = 1e-3 mm^2/s).
WM_INTRA, WM_EXTRA, WM_RESTRICTED, WM_RESTRICTED_FRACTION = (2.0, 0.10), (1.5, 0.80), 0.05, 0.25
GM_COMPARTMENTS, CSF_DIFFUSIVITY = (0.5, 1.2), 3.0

# --------------------------------------------------------------------------------------------------
# grids and acquisitions
# --------------------------------------------------------------------------------------------------
SIZES = {
    # model grid (mm) and per acquisition: voxel (mm), field of view (mm)
    "small": {
        "model_mm": 4,
        "mese": ((4.0, 4.0, 5.0), (192, 224, 160)),
        "dwi": ((4.4, 4.4, 4.4), (194, 220, 150)),
        "gre": ((4.0, 4.0, 4.0), (184, 216, 152)),
        "spgr": ((4.5, 4.5, 4.5), (198, 225, 162)),
        "b1": ((8.0, 8.0, 8.0), (232, 256, 192)),
        "mts": ((4.0, 4.0, 4.0), (196, 228, 164)),
        "gre_echoes": 4,
    },
    "full": {
        "model_mm": 2,
        "mese": ((2.0, 2.0, 3.0), (192, 224, 153)),
        "dwi": ((2.2, 2.2, 2.2), (198, 224, 145)),
        "gre": ((2.0, 2.0, 2.0), (184, 216, 152)),
        "spgr": ((2.4, 2.4, 2.4), (197, 230, 158)),
        "b1": ((5.0, 5.0, 5.0), (230, 260, 190)),
        "mts": ((2.0, 2.0, 2.0), (196, 228, 164)),
        "gre_echoes": 5,
    },
}
MESE_ECHOES, MESE_TE = 32, 0.010
SPGR_FLIPS, SPGR_TR = (3.0, 10.0, 20.0), 0.015
GRE_TE1, GRE_DTE, GRE_FLIP, GRE_TR = 0.004, 0.005, 15.0, 0.030
DWI_BVALS, DWI_DIRS, DWI_B0S = (1000.0, 2000.0), 32, 5
S0_SCALE = 1000.0
#: Series written as int16 (rounded) by :func:`.write_phantom`, as scanners export magnitudes.
INT16_SERIES = ("mese", "dwi", "gre_mag", "spgr", "mts_mtw", "mts_pdw", "mts_t1w")

# --------------------------------------------------------------------------------------------------
# magnetization transfer (the MTS acquisitions, :mod:`.mt`)
# --------------------------------------------------------------------------------------------------
#: Bound (macromolecular) pool size F = M0b / M0f of tissue water, linear in the tissue myelin-water
#: fraction: F = MT_BPF_BASE + MT_BPF_SLOPE * MWF_tissue (CSF has none). The line passes through the
#: in-vivo white-matter F of about 0.15 (Sled & Pike 2001; Gloor et al. 2008; both at 1.5 T, F does not depend
#: on the field) at the phantom's mean tract MWF of 0.12 and the cortical grey-matter F of about 0.065 (same
#: sources) at its GM MWF of 0.03; a linear link is what histology shows for both (bound-pool fraction and MWF each
#: linear in myelin content: Dula et al. 2010; Underhill et al. 2011).
MT_BPF_BASE, MT_BPF_SLOPE = 0.035, 0.95
#: Exchange rate constant kr = kf / F (1/s): kf of about 4.5 1/s at F of about 0.15 in white matter
#: (Sled & Pike 2001; Gloor et al. 2008), i.e. kr of about 30.
MT_KR = 30.0
#: Bound-pool longitudinal relaxation rate (1/s), fixed by convention (Henkelman et al. 1993; Sled & Pike 2001).
MT_R1B = 1.0
#: Bound-pool T2 (s) of its super-Lorentzian line (Morrison & Henkelman 1995): about 12 us in white matter
#: (Sled & Pike 2001; Gloor et al. 2008).
MT_T2B = 12e-6
#: MT pulse of the multi-parameter-mapping protocol (Weiskopf et al. 2013): Gaussian, 4 ms, 220 deg nominal,
#: 2 kHz off resonance.
MT_PULSE = {"duration_s": 0.004, "flip_deg": 220.0, "offset_hz": 2000.0}
#: Flip angles (deg) and repetition times (s) of the MT-, PD- and T1-weighted SPGR: qMRLab's ``mt_sat``
#: example protocol (the in-vivo slice of tests/data/real/qmrlab).
MTS_FLIPS, MTS_TRS = (6.0, 6.0, 20.0), (0.028, 0.028, 0.018)
#: Amplitude scale of the MTS magnitudes (stored as int16 like the other series; their signal is about 6 %
#: of the amplitude at these flip angles).
MTS_SCALE = 20000.0
