"""The integrated myelin map: the convolutional network that fuses the four estimators' maps,
its safetensors weights and model card, inference and the training loop.
"""
