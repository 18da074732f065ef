"""npe2 writers: Image and Labels layers back to NIfTI with the original affine and voxel order."""

from __future__ import annotations

from ._layers import META_KEY, layer_to_volume
from napari_myelin.io.volume import provenance, save_volume


def write_nifti(path: str, data, attributes: dict) -> list[str]:
    """Write an Image or Labels layer as NIfTI (+ JSON sidecar) on its original grid."""
    vol = layer_to_volume(data, attributes.get("metadata", {}), scale=attributes.get("scale"),
                          translate=attributes.get("translate"))
    info = attributes.get("metadata", {}).get(META_KEY) or {}
    sidecar = dict(info.get("sidecar") or {})
    sidecar.update(provenance(units=sidecar.get("Units", ""), description=f"napari layer '{attributes.get('name')}'"))
    inputs = [info["path"]] if info.get("path") else []
    return [str(save_volume(vol.data, path, vol.affine, sidecar=sidecar, inputs=inputs))]
