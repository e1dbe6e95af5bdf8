"""tiny-cats-model: a cat image classifier trained with Lightning, configured with Hydra, launched on Modal."""
