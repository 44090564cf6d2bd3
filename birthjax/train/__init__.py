"""Training: the optimizer and lr schedule, the train step, the compiled epoch (the engine),
checkpoints, preemption, metrics and the compilation cache."""
