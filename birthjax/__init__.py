"""birthjax: CS224N A5 (pretrained transformers & knowledge access) in JAX/Flax."""
