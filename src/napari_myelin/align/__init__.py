"""Standard space: the shipped MNI templates and tract atlas, ANTs registration and the
standard-brain database.
"""
