"""Constants of the independent simulator, each with its source.

Units: times in s, rates in 1/s, diffusivities in um^2/ms (= 1e-3 mm^2/s), b-values in s/mm^2,
susceptibility in ppm (SI, relative to water/CSF unless stated), lengths in mm (MNI template mm for
anatomy), angles in degrees, proton density relative to pure water.

Every per-subject physiological parameter is a **range** ``(low, high)``: each subject draws its own
value uniformly from it (:mod:`.subject`), so no two subjects share tissue properties. The ranges span
published 3 T values; where the literature gives no direct measurement the entry says
**assumption** and why the value is plausible. None of these values is taken from the estimators'
defaults (``reconst.qpm.signal``: T1 myelin 0.5 s, T1 IE 1.05 s, residence time 0.12 s;
``reconst.qpm.myelin``: CSF T1 4.0 s, tissue PD 0.7), nor from the project phantom's constants:
the ranges below either exclude those numbers or are centred away from them.

Sources
-------
[Wan99] Wansapura JP et al. NMR relaxation times in the human brain at 3.0 tesla. J Magn Reson Imaging
9:531-538 (1999): WM T1 0.83 s, GM T1 1.33 s, WM T2 80 ms, GM T2 110 ms.
[Sta05] Stanisz GJ et al. T1, T2 relaxation and magnetization transfer in tissue at 3T. Magn Reson Med
54:507-512 (2005): WM T1 1.08 s, GM T1 1.82 s, WM T2 69 ms, GM T2 99 ms.
[Lu05] Lu H et al. Routine clinical brain MRI sequences for use at 3.0 Tesla. J Magn Reson Imaging
22:13-22 (2005): CSF T1 about 4.2-4.4 s.
[Spi18] Spijkerman JM et al. T2 mapping of cerebrospinal fluid: 3 T versus 7 T. MAGMA 31:415-424
(2018): CSF T2 of the order of 1-2 s at 3 T.
[Whi97] Whittall KP et al. In vivo measurement of T2 distributions and water contents in normal human
brain. Magn Reson Med 37:34-43 (1997): myelin-water peak 10-20 ms, IE peak 70-90 ms, WM MWF 0.06-0.16
by region (highest in the internal capsule and splenium, lowest in frontal WM); 32 echoes, 10 ms.
[ML16] MacKay AL, Laule C. Magnetic resonance of myelin water: an in vivo marker for myelin. Brain
Plasticity 2:71-91 (2016): myelin-water T2 10-20 ms; healthy WM MWF about 0.05-0.20.
[Dvo21] Dvorak AV et al. An atlas for human brain myelin content throughout the adult life span.
Sci Rep 11:269 (2021): regional WM MWF, between-subject variation of about 10 % of the mean.
[Deo08] Deoni SCL et al. Gleaning multicomponent T1 and T2 information from steady-state imaging data.
Magn Reson Med 60:1372-1387 (2008): mcDESPOT fast-pool T1 about 0.4-0.5 s, residence time 0.1-0.15 s.
[Lab14] Labadie C et al. Myelin water mapping by spatially regularized longitudinal relaxographic
imaging at high magnetic fields. Magn Reson Med 71:375-387 (2014): short-T1 (myelin-water) component
well below 0.5 s at high field.
[Dor13] Dortch RD et al. Characterizing inter-compartmental water exchange in myelinated tissue using
relaxation exchange spectroscopy. Magn Reson Med 70:1450-1459 (2013): myelin-water residence times of
the order of 0.1-1 s.
[Nee06] Neeb H, Zilles K, Shah NJ. A new method for fast quantitative mapping of absolute water content
in vivo. NeuroImage 31:1156-1168 (2006): water content WM 0.69-0.71, GM 0.80-0.84.
[Mor99] Morell P, Quarles RH. Characteristic composition of myelin. In: Basic Neurochemistry, 6th ed.
(1999): myelin is about 40 % water.
[Sti15] Stikov N et al. In vivo histology of the myelin g-ratio with MRI. NeuroImage 118:397-405 (2015):
g-ratio about 0.65-0.75 in healthy WM.
[WB12] Wharton S, Bowtell R. Fiber orientation-dependent white matter contrast in gradient echo MRI.
PNAS 109:18559-18564 (2012): hollow-cylinder fibre model, chi_I = chi_A = -0.1 ppm, E = 0.02 ppm.
[Nam15] Nam Y et al. Improved estimation of myelin water fraction using complex model fitting.
NeuroImage 116:214-221 (2015): compartment T2* at 3 T, myelin about 10 ms, axonal and extracellular
about 50-70 ms.
[Sat13] Sati P et al. Micro-compartment specific T2* relaxation in the brain. NeuroImage 77:268-278
(2013).
[Dei13] Deistung A et al. Toward in vivo histology: a comparison of quantitative susceptibility mapping
(QSM) with magnitude-, phase-, and R2*-imaging at ultra-high magnetic field strength. NeuroImage
65:299-314 (2013): deep-GM susceptibility and R2*.
[Lim13] Lim IAL et al. Human brain atlas for automated region of interest selection in quantitative
susceptibility mapping. NeuroImage 82:449-469 (2013): deep-GM susceptibility (pallidum about 0.15-0.2
ppm, nigra 0.1-0.2, red nucleus about 0.1, putamen and caudate 0.05-0.1, thalamus about 0).
[Haa15] Haacke EM et al. Quantitative susceptibility mapping: current status and future directions.
Magn Reson Imaging 33:1-25 (2015): veins about 0.3-0.5 ppm in QSM.
[Sch96] Schenck JF. The role of magnetic susceptibility in magnetic resonance imaging. Med Phys
23:815-850 (1996): water -9.05 ppm, air +0.36 ppm (SI).
[HW97] Hopkins JA, Wehrli FW. Magnetic susceptibility measurement of insoluble solids by NMR: magnetic
susceptibility of bone. Magn Reson Med 37:494-500 (1997): cortical bone about 2 ppm more diamagnetic
than water.
[Lu04] Lu H et al. Determining the longitudinal relaxation time (T1) of blood at 3.0 Tesla. Magn
Reson Med 52:679-682 (2004): venous blood T1 about 1.6-1.7 s.
[Zha12] Zhang H et al. NODDI: practical in vivo neurite orientation dispersion and density imaging of
the human brain. NeuroImage 61:1000-1016 (2012): Watson dispersion, ODI = (2/pi) arctan(1/kappa),
WM ODI about 0.05 (corpus callosum) to 0.3 (peripheral WM), cortex about 0.4-0.5, WM intra-neurite
fraction about 0.5-0.75, cortex about 0.3-0.45, tortuosity for the extra-neurite space.
[Nov19] Novikov DS et al. Quantifying brain microstructure with diffusion MRI: theory and parameter
estimation. NMR Biomed 32:e3998 (2019): standard-model intra-axonal diffusivity about 2-2.5 um^2/ms,
extra-axonal parallel diffusivity below it.
[Sza95] Szafer A, Zhong J, Gore JC. Theoretical model for water diffusion in tissues. Magn Reson Med
33:697-712 (1995): tortuosity D_perp = D_par (1 - f).
[Hol00] Holz M, Heil SR, Sacco A. Temperature-dependent self-diffusion coefficients of water.
Phys Chem Chem Phys 2:4740-4742 (2000): free water at 37 C about 3.0 um^2/ms.
[Sac10] Sacolick LI et al. B1 mapping by Bloch-Siegert shift. Magn Reson Med 63:1315-1322 (2010):
head B1+ at 3 T within about +-20 % of nominal, brightest centrally.
[Vol12] Volz S et al. Correction of systematic errors in quantitative proton density mapping. Magn
Reson Med 68:74-85 (2012): receive-coil bias of phased-array head coils, 10-30 % across the brain.
[PD09] Preibisch C, Deichmann R. Influence of RF spoiling on the stability and accuracy of T1 mapping
based on spoiled FLASH with varying flip angles. Magn Reson Med 61:125-135 (2009): RF-spoiling phase
increments (50 deg on Siemens, 117 deg elsewhere), T1 bias of imperfect spoiling.
[Ber04] Bernstein MA, King KF, Zhou XJ. Handbook of MRI Pulse Sequences. Elsevier (2004), ch. 2
(windowed-sinc pulses, time-bandwidth product) and ch. 16 (spin echo).
[LW10] Lebel RM, Wilman AH. Transverse relaxometry with stimulated echo compensation. Magn Reson Med
64:1005-1014 (2010): refocusing-pulse slice profiles in 2D multi-echo spin echo.
[Fon11] Fonov V et al. Unbiased average age-appropriate atlases for pediatric studies. NeuroImage
54:313-327 (2011) (MNI ICBM152 2009 templates, the shipped anatomy).
[Hed12] Hedman AM et al. Human brain changes across the life span: a review of 56 longitudinal
magnetic resonance imaging studies. Hum Brain Mapp 33:1987-2002 (2012): adult brain volume loss with
ventricular enlargement and cortical thinning, accelerating with age.
[Tho18] Thompson AJ et al. Diagnosis of multiple sclerosis: 2017 revisions of the McDonald criteria.
Lancet Neurol 17:162-173 (2018): lesions periventricular, juxtacortical, infratentorial and deep.
[Lau04] Laule C et al. Water content and myelin water fraction in multiple sclerosis. J Neurol
251:284-293 (2004): lesion MWF reduced by 40-90 %, water content up by a few percent, NAWM MWF
reduced by up to about 15 %.
[Hen93] Henkelman RM et al. Quantitative interpretation of magnetization transfer. Magn Reson Med
29:759-766 (1993): two-pool model with saturation rate W = pi w1^2 G(D); R1 of the bound pool set to
1 1/s (not determinable from the data).
[MH95] Morrison C, Henkelman RM. A model for magnetization transfer in tissues. Magn Reson Med
33:475-482 (1995): super-Lorentzian line of the bound pool, T2b about 10-12 us in white matter.
[SP00] Sled JG, Pike GB. Quantitative interpretation of magnetization transfer in spoiled gradient echo
MRI sequences. J Magn Reson 145:24-36 (2000): pulsed MT in SPGR, saturation during the pulse.
[SP01] Sled JG, Pike GB. Quantitative imaging of magnetization transfer exchange and relaxation
properties in vivo using MRI. Magn Reson Med 46:923-931 (2001): in vivo 1.5 T, WM F about 0.13-0.16
(M0b/M0f), kf about 4.3-4.6 1/s, T2b about 11-12 us; cortical GM F about 0.06-0.07.
[Glo08] Gloor M, Scheffler K, Bieri O. Quantitative magnetization transfer imaging using balanced SSFP.
Magn Reson Med 60:691-700 (2008): 1.5 T, frontal WM F about 0.14-0.16, kf about 4.5 1/s, GM F about
0.06-0.07, kf about 2 1/s; T2b 12 us and the super-Lorentzian on resonance extrapolated to
G(0) = 1.4e-5 s for the excitation pulses' saturation of the bound pool.
[Und11] Underhill HR et al. Fast bound pool fraction imaging of the in vivo rat brain: association with
myelin content and validation in the C6 glioma model. NeuroImage 54:2052-2065 (2011): bound-pool
fraction linear in histological myelin content.
[Dul10] Dula AN et al. Multiexponential T2, magnetization transfer, and quantitative histology in white
matter tracts of rat spinal cord. Magn Reson Med 63:902-909 (2010): bound-pool fraction and MWF both
linear in myelin content.
[Hel08] Helms G et al. High-resolution maps of magnetization transfer with inherent correction for RF
inhomogeneity and T1 relaxation obtained from 3D FLASH MRI. Magn Reson Med 60:1396-1407 (2008): the
MTsat protocol (MT-weighted and PD-weighted FLASH at a small angle, T1-weighted at a larger angle and
shorter TR, Gaussian off-resonance MT pulse).
[Wei13] Weiskopf N et al. Quantitative multi-parameter mapping of R1, PD*, MT, and R2* at 3T: a
multi-center validation. Front Neurosci 7:95 (2013): MPM MT pulse, Gaussian, 4 ms, 220 deg, 2 kHz.
[Shi21] Shin HG et al. chi-separation: magnetic susceptibility source separation toward iron and myelin
mapping in the brain. NeuroImage 240:118371 (2021): R2' = Dr (chi_para + |chi_dia|), Dr = 137 Hz/ppm at
3 T from in-vivo regression.
[YH94] Yablonskiy DA, Haacke EM. Theory of NMR signal behavior in magnetically inhomogeneous tissues: the
static dephasing regime. Magn Reson Med 32:749-763 (1994): R2' proportional to gamma B0 |chi| of the
sources, with a geometric factor: 2 pi/(27 sqrt 3) gamma B0 chi = 108 Hz/ppm at 3 T for spheres,
gamma B0 chi / 3 = 267 Hz/ppm for randomly oriented cylinders (SI susceptibility of the voxel).
[HS58] Hallgren B, Sourander P. The effect of age on the non-haemin iron in the human brain. J Neurochem
3:41-51 (1958): non-haem iron (mg/100 g fresh weight) pallidum 21, putamen 13, caudate 9, thalamus 5,
cerebral white matter 4, cortex 3.
[Lan12] Langkammer C et al. Quantitative susceptibility mapping (QSM) as a means to measure brain iron?
A post mortem validation study. NeuroImage 62:1593-1599 (2012): chi rises by about 1 ppb per ug/g
(fresh weight) of iron.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------
# physics
# --------------------------------------------------------------------------------------------------
#: Proton gyromagnetic ratio / 2 pi (Hz/T), CODATA 2018.
GAMMA_HZ_PER_T = 42.577478518e6
#: Main field (T).
B0_TESLA = 3.0
#: Susceptibility of air relative to water (ppm): 0.36 - (-9.05) [Sch96].
CHI_AIR = 9.41
#: Susceptibility of cortical bone relative to water (ppm) [HW97].
CHI_BONE = -2.0
#: Hollow-cylinder fibre model: isotropic and anisotropic myelin susceptibility, exchange shift (ppm) [WB12].
CHI_MYELIN_ISO, CHI_MYELIN_ANISO, MYELIN_EXCHANGE_SHIFT = -0.10, -0.10, 0.02
#: Water content of myelin (volume fraction) [Mor99].
MYELIN_WATER_CONTENT = 0.40
#: Free-water diffusivity at body temperature (um^2/ms) [Hol00].
D_FREE = 3.0
#: T1 of venous blood at 3 T (s) [Lu04] and the water content of blood (assumption: haematocrit 0.4).
BLOOD_T1, BLOOD_WATER = 1.65, 0.85

# --------------------------------------------------------------------------------------------------
# per-subject tissue ranges (uniform draws)
# --------------------------------------------------------------------------------------------------
TISSUE_RANGES = {
    # T2 (s) medians of the log-normal pools [Whi97, ML16, Wan99, Sta05, Spi18]
    "t2_myelin": (0.011, 0.017),
    "t2_ie_wm": (0.064, 0.082),
    "t2_ie_gm": (0.080, 0.100),
    "t2_csf": (1.2, 2.0),
    # widths: standard deviation of ln T2. Assumption: in vivo NNLS spectra show peaks spanning about
    # a factor 1.5-2 (myelin) and 1.3-1.5 (IE) [Whi97], which is part broadening by the fit itself.
    "sigma_myelin": (0.15, 0.30),
    "sigma_ie": (0.08, 0.16),
    "sigma_csf": (0.03, 0.08),
    # T1 (s) of the pools [Lab14, Deo08 for myelin water; IE chosen so that the fast-exchange tissue T1
    # falls within Wan99-Sta05: WM 0.83-1.08 s, GM 1.33-1.82 s; CSF Lu05]
    "t1_myelin": (0.25, 0.45),
    "t1_ie_wm": (1.10, 1.35),
    "t1_ie_gm": (1.55, 1.85),
    "t1_csf": (4.1, 4.5),
    # myelin-water residence time (s) [Deo08, Dor13]
    "tau_myelin": (0.15, 0.35),
    # proton density (water content relative to CSF) [Nee06]
    "pd_wm": (0.67, 0.72),
    "pd_gm": (0.78, 0.84),
    # GM myelin-water fraction, cortex and deep nuclei [ML16]
    "mwf_cortex": (0.02, 0.045),
    "mwf_deep_gm": (0.04, 0.08),
    # g-ratio [Sti15]
    "g_ratio": (0.65, 0.75),
    # compartment T2* (s) for the GRE [Nam15, Sat13]
    "t2s_myelin": (0.006, 0.012),
    "t2s_axon": (0.055, 0.075),
    "t2s_extra": (0.040, 0.055),
    # GM R2* (1/s) without iron, and its increase per ppm of iron susceptibility [Dei13: pallidum
    # R2* about 40-50 1/s at chi 0.15-0.2 ppm against cortex 15-18 1/s at about 0]
    "r2s_gm": (14.0, 18.0),
    "r2s_per_ppm_iron": (110.0, 170.0),
    "r2s_csf": (1.0, 3.0),
    "r2s_vein": (40.0, 60.0),
    # susceptibility (ppm) of cortex and veins [Lim13, Haa15]
    "chi_cortex": (0.005, 0.025),
    "chi_vein": (0.30, 0.50),
    # diffusion [Zha12, Nov19, Sza95]
    "d_axon": (1.9, 2.4),
    "d_extra_par": (1.5, 2.0),
    "d_extra_par_gm": (1.0, 1.4),
    "f_neurite_gm": (0.30, 0.42),
    "odi_gm": (0.35, 0.50),
    # DWI and MESE relaxation of the intra/extra-cellular water enters through T2 above.
}

#: Between-subject spread of the tract MWF (log-normal): global factor and per-tract deviation [Dvo21].
MWF_GLOBAL_SD, MWF_TRACT_SD = 0.08, 0.06

#: Population-mean WM myelin-water fraction per tract (abbreviation without side). Chosen within the
#: regional ranges of [Whi97, ML16, Dvo21]: highest in the pyramidal/pontine projections, cerebellar
#: peduncles and brainstem, high in the splenium and optic radiation, intermediate in the long
#: association tracts and the genu, lowest in the fornix and the subcortical U fibres.
TRACT_MWF_POPULATION = {
    "AR": 0.125, "CS": 0.10, "CST": 0.165, "CT": 0.14, "FX": 0.07, "FPT": 0.15, "OPT": 0.14, "OR": 0.145,
    "PPT": 0.15, "TPT": 0.14, "AF": 0.115, "C": 0.10, "EMC": 0.105, "FAT": 0.095, "IFOF": 0.125,
    "ILF": 0.125, "MdLF": 0.115, "SLF": 0.115, "U": 0.065, "UF": 0.095, "VOF": 0.105, "AC": 0.11,
    "GCC": 0.115, "BCC": 0.125, "SCC": 0.145, "PC": 0.13, "CB": 0.09, "ICP": 0.17, "MCP": 0.175,
    "SCP": 0.17, "V": 0.085, "CTT": 0.155, "DLF": 0.14, "LL": 0.155, "ML": 0.165, "MLF": 0.155,
    "RST": 0.155, "STT": 0.155,
}
#: WM not covered by a tract label takes the nearest label's value; this is the fallback.
MWF_UNLABELLED = 0.10

#: Orientation dispersion index ranges per tract group [Zha12]: the callosum is the most coherent,
#: projection tracts next, association tracts more dispersed, U fibres and cerebellar WM the most.
ODI_GROUPS = {
    "callosal": (("GCC", "BCC", "SCC"), (0.05, 0.10)),
    "projection": (("CST", "FPT", "OPT", "PPT", "TPT", "CT", "CS", "AR", "OR", "ICP", "MCP", "SCP", "CTT",
                    "DLF", "LL", "ML", "MLF", "RST", "STT"), (0.08, 0.16)),
    "association": (("AF", "SLF", "ILF", "IFOF", "MdLF", "UF", "EMC", "FAT", "VOF", "C", "FX", "AC", "PC"),
                    (0.12, 0.22)),
    "peripheral": (("U", "CB", "V"), (0.25, 0.38)),
}
#: WM intra-axonal signal fraction: ``F0 + F_SLOPE * (MWF_tract - 0.12) + N(0, F_SD)``, clipped
#: (NODDI WM ICVF 0.5-0.75 [Zha12]). Assumption: axon density rises with myelin content (both follow
#: fibre packing), which makes diffusion and myelin maps covary as in vivo.
F_AXON_MEAN, F_AXON_SLOPE, F_AXON_SD, F_AXON_CLIP = 0.62, 1.3, 0.03, (0.40, 0.80)

#: Deep grey nuclei: name, MNI centre (x > 0, mirrored), semi-axes (mm), susceptibility range (ppm)
#: [Lim13, Dei13]. Centres and sizes read off the MNI ICBM152 2009a template [Fon11]; each subject
#: moves every centre by up to 2 mm and scales the axes by 0.9-1.1.
DEEP_NUCLEI = (
    ("pallidum", (19.0, -4.0, -1.0), (5.0, 8.0, 5.0), (0.12, 0.22)),
    ("putamen", (25.0, 3.0, 1.0), (5.0, 13.0, 8.0), (0.04, 0.10)),
    ("caudate", (13.0, 13.0, 10.0), (4.0, 9.0, 8.0), (0.04, 0.09)),
    ("thalamus", (12.0, -18.0, 7.0), (7.0, 11.0, 7.0), (0.00, 0.03)),
    ("red_nucleus", (5.0, -20.0, -9.0), (3.0, 3.0, 3.0), (0.08, 0.16)),
    ("substantia_nigra", (10.0, -17.0, -13.0), (3.0, 6.0, 3.0), (0.10, 0.20)),
    ("dentate", (15.0, -57.0, -33.0), (6.0, 6.0, 5.0), (0.08, 0.16)),
)
#: Deep veins (MNI start, end, radius mm): internal cerebral veins, straight sinus, basal veins.
DEEP_VEINS = (
    ((-2.5, -2.0, 14.0), (-2.5, -34.0, 12.0), 1.2),
    ((2.5, -2.0, 14.0), (2.5, -34.0, 12.0), 1.2),
    ((0.0, -38.0, 10.0), (0.0, -66.0, 0.0), 1.8),
    ((-20.0, -10.0, -8.0), (-8.0, -36.0, 4.0), 1.0),
    ((20.0, -10.0, -8.0), (8.0, -36.0, 4.0), 1.0),
)
#: Number of random medullary/cortical veins per subject, their radius (mm) and length range (mm).
N_RANDOM_VEINS, RANDOM_VEIN_RADIUS, RANDOM_VEIN_LENGTH = (3, 8), 0.8, (15.0, 35.0)
#: Air cavities of the head (MNI centre, semi-axes mm): frontal and sphenoid sinuses, maxillary
#: sinuses, mastoid air cells / ear canals. Approximate positions around the MNI brain [Fon11]; the
#: brain itself is never air (cavities are cut by the brain mask).
AIR_CAVITIES = (
    ((0.0, 81.0, 2.0), (13.0, 6.0, 9.0)),
    ((0.0, 15.0, -38.0), (9.0, 10.0, 8.0)),
    ((-30.0, 35.0, -55.0), (12.0, 15.0, 15.0)),
    ((30.0, 35.0, -55.0), (12.0, 15.0, 15.0)),
    ((-55.0, -25.0, -40.0), (9.0, 12.0, 8.0)),
    ((55.0, -25.0, -40.0), (9.0, 12.0, 8.0)),
)
#: Scalp + skull thickness (mm) around the brain, and the bone shell inside it (distance from brain, mm).
HEAD_MARGIN_MM, SKULL_SHELL_MM = 14.0, (4.0, 10.0)

# --------------------------------------------------------------------------------------------------
# anatomy: subjects that differ beyond a warp
# --------------------------------------------------------------------------------------------------
#: Head pose: per-axis scale SD (head size, [Fon11] population ICV spread of ~10 % in volume), clip,
#: pitch / roll-yaw limits (deg), translation limit (mm), and a smooth warp of Gaussian bumps
#: (count, amplitude SD mm, width range mm). Assumption: typical positioning in a head coil.
HEAD_SCALE_SD, HEAD_SCALE_CLIP = 0.035, (0.90, 1.10)
PITCH_DEG, ROLL_YAW_DEG, SHIFT_MM = 12.0, 5.0, 8.0
WARP_BUMPS, WARP_AMPLITUDE_MM, WARP_WIDTH_MM = 8, 2.5, (25.0, 45.0)
#: Atrophy [Hed12]: ventricle growth (mm of tissue lost around the lateral ventricles) and cortical
#: thinning (mm of cortex lost at the brain surface), uniform per subject.
VENTRICLE_GROWTH_MM, CORTICAL_THINNING_MM = (0.0, 3.0), (0.0, 1.0)
#: Pathology [Lau04, Tho18]: probability that a subject has lesions, their Poisson mean count, radius
#: (log-normal median mm, SD of ln, clip), severity (fraction of myelin lost), IE T2 and T1 factors,
#: water-content increase; NAWM: global MWF deficit and 0-2 tracts with an extra deficit.
LESION_PROBABILITY, LESION_COUNT_MEAN = 0.6, 6.0
LESION_RADIUS = (3.5, 0.4, (2.0, 9.0))
LESION_SEVERITY, LESION_T2_FACTOR, LESION_T1_FACTOR, LESION_PD_INCREASE = (0.4, 0.9), (1.2, 1.8), (1.15, 1.5), (
    0.03, 0.10)
NAWM_GLOBAL_DEFICIT, NAWM_TRACT_DEFICIT, NAWM_TRACTS = (0.0, 0.12), (0.10, 0.30), (0, 2)

# --------------------------------------------------------------------------------------------------
# acquisitions
# --------------------------------------------------------------------------------------------------
#: 2D multi-echo spin echo (CPMG): 32 echoes at 10 ms [Whi97], TR 1.2 s (clinical multi-slice
#: compromise: T1 saturation is part of the model), Hann-windowed sinc pulses of time-bandwidth 4
#: (excitation) and 3 (refocusing) [Ber04]. The refocusing slab is 3 times the excitation slice
#: (assumption: the usual way 2D multi-echo T2 protocols limit slice-profile effects [LW10]); with
#: equal slices the echo train is far from any single-angle EPG (see docs/validation.md).
MESE_ECHOES, MESE_ESP, MESE_TR = 32, 0.010, 1.2
MESE_TBW_EXC, MESE_TBW_REF, MESE_REF_SLICE_RATIO = 4.0, 3.0, 3.0
#: DWI: b = 0 (x6) and 30 directions at each of 1000, 2000, 3000 s/mm^2; TE 80 ms, TR 4 s.
DWI_SHELLS, DWI_DIRECTIONS, DWI_B0S, DWI_TE, DWI_TR = (1000.0, 2000.0, 3000.0), 30, 6, 0.080, 4.0
#: Multi-echo GRE: 6 echoes, first 4 ms, spacing 5 ms, flip 15 deg, TR 35 ms.
GRE_ECHOES, GRE_TE1, GRE_DTE, GRE_FLIP, GRE_TR = 6, 0.004, 0.005, 15.0, 0.035
#: Variable-flip-angle SPGR: 4 angles, TR 16 ms, TE 2.9 ms; RF-spoiling increment for the
#: imperfect-spoiling option and its number of pulses to the (pseudo) steady state [PD09].
SPGR_FLIPS, SPGR_TR, SPGR_TE = (3.0, 8.0, 13.0, 18.0), 0.016, 0.0029
RF_SPOIL_INCREMENT, SPOIL_PULSES = 50.0, 300
#: Transmit field [Sac10]: central brightening amplitude, left-right/anterior-posterior tilt (per 100
#: mm); measured B1 map: multiplicative noise SD and blur (mm FWHM) of the mapping method.
B1_CENTRE_GAIN, B1_TILT, B1_NOISE, B1_BLUR_FWHM = (0.12, 0.22), 0.06, 0.02, 10.0
#: Receive bias [Vol12]: amplitude of the smooth log-bias field across the head.
RECEIVE_BIAS = (0.08, 0.15)
#: MTS (MT-, PD- and T1-weighted 3D SPGR) of the MTsat kind [Hel08]: flip angles (deg), repetition
#: times (s) and echo time (s) of MTw, PDw, T1w. Assumption: a protocol of that type, not Helms' exact values
#: (and not the project phantom's: MT pulse, angles and TRs differ).
MTS_FLIPS, MTS_TRS, MTS_TE = (5.0, 5.0, 15.0), (0.025, 0.025, 0.011), 0.0024
#: The MT pulse of the MTw series: Gaussian (+-3 sigma), duration, nominal flip, offset, the gap before the
#: excitation, and the number of intervals it is resolved into. Assumption: between the MPM pulse
#: [Wei13] (4 ms, 220 deg, 2 kHz) and the longer, stronger pulses of [Hel08]-type protocols.
MT_PULSE = {"duration_s": 0.008, "flip_deg": 400.0, "offset_hz": 1500.0, "gap_s": 0.001, "steps": 24}
#: Duration (s) of the (hard) excitation pulse, for its saturation of the bound pool (assumption).
EXC_PULSE_S = 0.0005
#: Bound-pool R1 (1/s) [Hen93, SP01] and the on-resonance super-Lorentzian per unit T2b, G(0)/T2b
#: = 1.4e-5 s / 12 us [Glo08].
MT_R1B, MT_G0_PER_T2B = 1.0, 1.4e-5 / 12e-6
#: Per-subject two-pool MT ranges (uniform draws from their own stream, after every other draw):
#: bound-pool size F = M0b / M0f = mt_f0 + mt_f_slope MWF of the class water, so that cortical GM
#: (MWF 0.02-0.045) has F 0.05-0.10 and WM (tract MWF 0.065-0.175) F 0.08-0.24, centred on WM 0.13-0.16
#: and GM 0.06-0.07 [SP01, Glo08], linear in myelin as histology shows [Dul10, Und11]; the exchange
#: constant kr = kf / F (kf 4.3-4.6 1/s at F 0.13-0.16 [SP01, Glo08]); bound-pool T2 [MH95, SP01, Glo08].
MT_RANGES = {"mt_f0": (0.035, 0.055), "mt_f_slope": (0.75, 1.05), "mt_kr": (24.0, 38.0),
             "mt_t2b": (10e-6, 14e-6)}
#: chi-separation option (``chi_separation=True``): per-subject iron susceptibility of white matter (ppm,
#: paramagnetic): [HS58] puts WM non-haem iron at about 1/5 of the pallidum's, i.e. 0.024-0.044 ppm at the
#: pallidal chi drawn here, and [Lan12]'s slope gives about 0.04 ppm for 40 ug/g; part of it is in
#: ferritin-poor oligodendrocytes and partly cancelled in vivo, so the range is set lower (assumption).
#: The relaxometric constant of the diamagnetic (myelin) sources, Hz/ppm at 3 T: between the
#: static-dephasing values of spheres and randomly oriented cylinders [YH94] and around the empirical
#: values (137 [Shi21]); the paramagnetic constant is the subject's ``r2s_per_ppm_iron`` [Dei13].
CHISEP_RANGES = {"chi_iron_wm": (0.010, 0.030), "dr_dia": (100.0, 200.0)}
#: Default SNR of each series (mean brain signal of the reference volume / noise sigma).
DEFAULT_SNR = {"mese": 200.0, "dwi": 50.0, "gre": 200.0, "spgr": 200.0}
#: Signal scale of the stored magnitudes.
S0_SCALE = 1000.0

#: Grids: per acquisition voxel (mm), field of view (mm), rotation (deg, x y z) and whether x is
#: stored flipped (LAS); model sampling oversamples every acquired voxel ``SUPERSAMPLE`` times per axis.
SIZES = {
    "small": {
        "mese": ((4.0, 4.0, 5.0), (192, 224, 160), (8.0, 0.0, 0.0), False),
        "dwi": ((4.4, 4.4, 4.4), (202, 229, 158), (-5.0, 0.0, 0.0), True),
        "gre": ((4.0, 4.0, 4.0), (188, 220, 156), (15.0, 0.0, -3.0), False),
        "spgr": ((4.5, 4.5, 4.5), (203, 234, 171), (0.0, 3.0, 0.0), False),
        "b1": ((8.0, 8.0, 8.0), (240, 264, 200), (0.0, 0.0, 0.0), False),
        "mts": ((4.5, 4.5, 4.5), (203, 234, 171), (-4.0, 0.0, 2.0), False),
    },
    "full": {
        "mese": ((2.0, 2.0, 3.0), (192, 224, 156), (8.0, 0.0, 0.0), False),
        "dwi": ((2.2, 2.2, 2.2), (202, 229, 158), (-5.0, 0.0, 0.0), True),
        "gre": ((2.0, 2.0, 2.0), (188, 220, 156), (15.0, 0.0, -3.0), False),
        "spgr": ((2.4, 2.4, 2.4), (202, 235, 170), (0.0, 3.0, 0.0), False),
        "b1": ((6.0, 6.0, 6.0), (240, 264, 200), (0.0, 0.0, 0.0), False),
        "mts": ((2.4, 2.4, 2.4), (202, 235, 170), (-4.0, 0.0, 2.0), False),
    },
}
SUPERSAMPLE = 2
#: Template (2 mm) position of the head centre, the point every field of view is centred on (MNI mm).
HEAD_CENTRE_MNI = (0.0, -20.0, 5.0)
#: Series stored as int16 magnitudes by the writer (as scanners export them).
INT16_SERIES = ("mese", "dwi", "gre_mag", "spgr", "mts_mtw", "mts_pdw", "mts_t1w")
