"""Dock widgets: the only Qt code. Each widget gathers inputs, runs one core entry point in a thread
worker (:class:`~napari_myelin.widgets._runner.Runner`) and adds the results as layers."""
