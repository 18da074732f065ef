"""Numbers out of maps: ROI and tract tables, correlations, normative comparison (z-scores).
"""
