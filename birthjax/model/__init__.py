"""The model: the GPT and its perceiver variants (flax linen), attention, dropout bits, the
loss, and the reference's state dict names (imports only birthjax.errors, files, sharding)."""
