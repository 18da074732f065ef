"""Pure computation: numpy, scipy, torch, dipy, nibabel, antspyx. Never imports Qt or napari."""
