"""napari-myelin: integrated quantitative myelin MRI in napari.

The computational core (:mod:`napari_myelin.core`) never imports Qt or napari;
widgets (:mod:`napari_myelin.widgets`) and the command line
(:mod:`napari_myelin.cli`) are thin layers over it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-myelin")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
