"""Orchestration: resumable steps, the subject pipeline, the fusion training cohort and report pictures.
"""
