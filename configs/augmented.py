"""Knowledge-augmented recipe: vanilla's model and data, augmented pretraining, gentle finetune.

Presets: default (the A5 data, for a GPU; not yet measured), `smoke` (tiny, all stages on
CPU), `quickstart` (the synthetic world, the same model and the same number of pretraining
optimizer steps as `configs/vanilla.py:quickstart`: 1495 vs 1500, so the two compare
directly).

Pretraining reads the same wiki.txt (birthjax/data/augment.py): whole biographies in windows
that fit block_size (no truncation), the person's name starting every window and never
masked, two corruptions of each window an epoch, each document example shifted right by
0..16 positions (learned absolute positions otherwise tie the facts to the positions a
biography starts at, not where a question puts the name), and the finetuning TRAIN
questions mixed in once an epoch. Since the questions were seen all along, finetuning is
short and gentle (3 epochs at 0.3x vanilla's rate): vanilla's 10 epochs memorise the train
questions and lose most of what the mixed pretraining had learned to extract.

An epoch holds R = windows * copies + train pairs * qa_copies records, so
  steps = epochs * ceil(R / batch_size),
  final_tokens = epochs * R * (block_size - 1)  (every record's targets, PAD included),
and with clamp_schedule the cosine decays once, to its 0.1 floor at the end of pretraining.
"""
from configs import vanilla

COPIES, QA_COPIES, SHIFT = 2, 1, 16
# windows of the 2,938 A5 lines at block_size 128 with a 16-position shift (capacity 110)
A5_WINDOWS = 5373
A5_RECORDS = COPIES * A5_WINDOWS + QA_COPIES * 2000  # 12,746: 100 steps of 128 an epoch
# the quick start world: 151 lines (each fits one window) x 2 + 100 train pairs
QUICKSTART_RECORDS = COPIES * 151 + QA_COPIES * 100  # 402: 13 steps of 32 an epoch


def final_tokens(epochs, records, block_size):
  return epochs * records * (block_size - 1)


def get_config(preset=None):
  c = vanilla.get_config(preset)
  c.pretrain.augment.update(whole=True, name_prefix=True, name_visible=True, copies=COPIES,
                            shift=SHIFT, qa_copies=QA_COPIES)
  c.pretrain.update(shuffle=True, clamp_schedule=True)  # windows and questions mixed
  if preset == "smoke":
    return c
  if preset == "quickstart":  # 115 epochs x 13 steps = 1495 steps (vanilla: 300 x 5 = 1500)
    c.pretrain.update(epochs=115, final_tokens=final_tokens(115, QUICKSTART_RECORDS, 128))
    c.finetune.update(epochs=3, learning_rate=3e-4)
    return c
  # A5: 150 epochs x 100 steps = 15,000 steps of 128 (vanilla: 650 x 23 = 14,950)
  c.pretrain.update(epochs=150, final_tokens=final_tokens(150, A5_RECORDS, c.model.block_size))
  c.finetune.update(epochs=3, learning_rate=2e-4)
  return c
