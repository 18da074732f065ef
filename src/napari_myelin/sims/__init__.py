"""Simulated subjects: the project phantom (anatomy from the shipped atlas, four acquisitions on their
own grids, lesions and ground truth).
"""
