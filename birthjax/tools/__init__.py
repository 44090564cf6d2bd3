"""Tools around a run: torch reference and interop CLI, analysis, complexity, report, learning
curves, asking a workdir's model, the London baseline. Entry points: birthjax/<name>.py."""
