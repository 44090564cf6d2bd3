"""Recite, then answer, mixed into pretraining: the augmented recipe with `data.recite` and rope.

The best recipe measured so far (README, "Recite, then answer"): `configs/augmented.py` whose
mixed train questions carry the recitation targets (`question MASK line[:answer] MASK`,
birthjax/data/recite.py), so the model learns to recite while it stores the lines, with
rotary positions (the recitation starts after the question, where learned absolute positions
recall less). Each preset is exactly a measured command, so its figures reproduce:

  quickstart  the synthetic world, 20 train questions held out as val: README's 60% dev
              (pooled over seeds 0 and 1), = `augmented.py:quickstart
              --config.model.positions=rope --config.data.recite=True --config.data.val_questions=20`
  proxy       the 300-person A5 proxy with 40 val questions and the storage settings below
              (1,350 + 3 steps, ~1.5-2.5 h on 2 CPU cores)
  (default)   the full A5 data with the storage settings: 150 epochs of 90 steps of 128;
              not yet measured (hours on a GPU-less machine)
  smoke       tiny, all stages, for tests

The storage settings (A5): dropout and weight decay off and no shift. On the 300-person proxy
the augmented recipe with dropout 0.1 and weight decay 0.1 stored none of the biographies in
150 epochs (the own-line probe: 0 of 47 dev lines), without them 35 of 47; rope makes the
shift unnecessary. The pretraining schedule keeps augmented's sizing (its windows at shift 16:
100 steps an epoch); with shift 0 an epoch holds 90 steps, so the clamped cosine reaches its
0.1 floor after 89% of them instead of 80%.
"""
from configs import augmented


def get_config(preset=None):
  if preset not in (None, "smoke", "quickstart", "proxy"):
    raise ValueError(f"unknown preset {preset!r}: use smoke, quickstart or proxy")
  c = augmented.get_config(preset if preset in ("smoke", "quickstart") else None)
  c.data.recite = True
  c.model.positions = "rope"
  if preset == "quickstart":
    c.data.val_questions = 20
  if preset in ("smoke", "quickstart"):
    return c
  c.model.dropout = 0.0
  c.pretrain.weight_decay = 0.0
  c.pretrain.augment.shift = 0
  if preset == "proxy":
    c.data.update(people=300, val_questions=40)
    c.pretrain.keep_every = 25  # the own-line probe on kept checkpoints (benchmarks/recall_probe.py)
  return c
