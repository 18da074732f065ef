"""Files in and out: :class:`Volume` (array + affine + BIDS sidecar), NIfTI load/save with provenance,
BIDS subject discovery, colour look-up tables, the world-coordinate resampler and :class:`Maps`
(named output maps with units and descriptions).
"""
