"""Training learns: pretraining stores facts that finetuning turns into answers.

Every other test of a trained model accepts any accuracy; this one fails if a change to the
data, the span corruption, the masks, the loss, the schedule or decoding stops the model
from learning. It runs the real stages (run.run, the default engine: packing, on-device
epochs, the A5 span corruption, greedy decoding) on a small synthetic world:

  130 people, one biography each, "NAME. Where was NAME born? CITY." (the question's phrasing,
  so that what pretraining stores is what the question asks: a test of learning, not of
  knowledge extraction, which the A5 recipe does poorly at this size); 40 train questions
  (enough to learn the answer format), 80 dev questions about people never seen in
  finetuning, 10 test questions.

Without pretraining a dev answer can only be a guess (the dev people are not in the
finetuning data), so the bar is the best constant answer in hindsight (the most common dev
city) and the same finetuning without pretraining.

Thresholds, from runs of this exact configuration (seeds in the table; 2-core CPU):
  seed  pretrained  no pretraining  best constant  loss first step -> last step
     0     25/80         0/80         8/80 (Paris)      5.57 -> 0.67
     1     12/80         0/80         8/80              5.55 -> 0.42
     2     19/80         0/80         8/80              5.55 -> 0.20
     3     16/80         0/80         8/80              5.56 -> 0.44
(the test runs seed 0; other seeds, or another CPU's float rounding, land anywhere in this
spread), so it asks for at least CONST_MARGIN = 2 more than the best constant (10/80: two
below the worst seed), NO_PRE_MARGIN = 10 more than no pretraining, and a pretraining loss
whose last epoch's mean is at most 1/4 of the first step's (measured: under 1/8). Tried by
hand once each (not committed): a masked span left visible in the input, the answer left
out of the finetuning loss, and decoding that drops the first generated character each
make it fail (see the session note of 2026-12-02).
"""
import collections
import os


from birthjax.train import metrics
from birthjax import run
from birthjax.data import synthetic
from configs import vanilla

TEMPLATE = "{n}. Where was {n} born? {b}."
PEOPLE, TRAIN, DEV, TEST = 130, 40, 80, 10
CONST_MARGIN, NO_PRE_MARGIN, LOSS_FACTOR = 2, 10, 4.0  # from the table above


def world_config(data_dir, cache_dir, seed=0):
  c = vanilla.get_config("quickstart")  # 2 layers, 4 heads, 64 dims, no dropout
  c.seed = seed
  c.data.update(source="a5", dir=data_dir, cache_dir=cache_dir)
  epochs = 300  # 131 documents: 5 steps of 32 an epoch
  c.pretrain.update(epochs=epochs, final_tokens=epochs * (PEOPLE + 1) * 128)
  c.finetune.update(epochs=10, epochs_from_scratch=10)
  c.checkpoint_every = 10**6  # only the stages' ends
  c.eval.steps = 16
  return c


def test_pretraining_then_finetuning_answers_dev_questions(tmp_path, cache_dir, monkeypatch):
  data_dir = str(tmp_path / "world")
  synthetic.write(data_dir, seed=0, num_people=PEOPLE, num_train=TRAIN, num_dev=DEV,
                  num_test=TEST, templates=(TEMPLATE,))
  losses = collections.defaultdict(list)
  scalars = metrics.Writer.scalars
  def record(self, step, values):
    if "train/loss" in values:
      losses[id(self)].append(float(values["train/loss"]))
    return scalars(self, step, values)
  monkeypatch.setattr(metrics.Writer, "scalars", record)

  config = world_config(data_dir, cache_dir)
  pretrained = run.run(config, str(tmp_path / "pretrained"))["dev"]
  pretrain_losses = next(iter(losses.values()))
  config.stages = "finetune,evaluate"
  scratch = run.run(config, str(tmp_path / "scratch"))["dev"]
  with open(os.path.join(data_dir, "birth_dev.tsv")) as f:
    cities = [l.rstrip("\n").split("\t")[1] for l in f if l.strip()]
  best_constant = collections.Counter(cities).most_common(1)[0][1]

  summary = (f"pretrained {pretrained['correct']}/{DEV}, no pretraining {scratch['correct']}/"
             f"{DEV}, best constant {best_constant}/{DEV}, pretraining loss "
             f"{pretrain_losses[0]:.2f} -> {sum(pretrain_losses[-5:]) / 5:.2f} (last epoch)")
  print(summary)
  assert pretrained["total"] == scratch["total"] == DEV
  last_epoch = sum(pretrain_losses[-5:]) / 5  # 5 steps an epoch; the last one holds 3 rows
  assert last_epoch * LOSS_FACTOR <= pretrain_losses[0], summary
  assert pretrained["correct"] >= best_constant + CONST_MARGIN, summary
  assert pretrained["correct"] >= scratch["correct"] + NO_PRE_MARGIN, summary
