"""The recipes, one ml_collections config a file (`python main.py --config=configs/NAME.py[:preset]`).

A config that reuses another imports it as `from configs import vanilla` (the repository root
is on sys.path when main.py runs: it is the script's folder).
"""
