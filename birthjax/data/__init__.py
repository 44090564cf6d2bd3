"""The data: the four A5 files (or the synthetic world) checked, cached through TFDS, encoded,
and a stage's records as one table of arrays (data <- model <- train, infer <- run <- tools)."""
