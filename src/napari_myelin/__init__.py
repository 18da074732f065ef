"""napari-myelin: integrated quantitative myelin MRI in napari.

Sub-packages by domain, lowest first: ``utils`` (errors, progress), ``io`` (volumes, BIDS, LUTs,
resampling), ``reconst`` (the estimators), ``align`` (templates, atlas, registration), ``sims``
(the phantom), ``fusion`` (the network), ``stats`` (tables, normative), ``workflows`` (pipeline,
report). None of them imports Qt, magicgui or napari; ``widgets`` (the docks), the npe2 adapters
(``_reader``, ``_writer``, ``_sample_data``, ``_layers``, ``_styles``, ``_screenshot``) and ``cli``
are thin layers on top. The public Python API is :mod:`napari_myelin.api`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-myelin")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
