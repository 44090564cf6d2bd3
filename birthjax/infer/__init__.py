"""Inference: greedy decoding (recompute or KV cache), confidences, scoring and predictions."""
