"""The A5 vanilla GPT recipe. Presets: `configs/vanilla.py:smoke`, `configs/vanilla.py:quickstart`.

Every value of the default preset is the 2023 reference's (run.py, trainer.py, model.py);
quirks are kept and documented in README, with flags to turn them off.
"""
import os

import ml_collections

A5_DOCUMENTS = 2938  # len(wiki.txt.split('\n')), trailing empty document included


def stage(epochs, batch_size, learning_rate, final_tokens):
  return ml_collections.ConfigDict(dict(
      epochs=epochs,
      batch_size=batch_size,
      learning_rate=learning_rate,
      warmup_tokens=512 * 20,  # shorter than one step's tokens: warm-up never takes effect
      final_tokens=final_tokens,  # reference: 200 * len(pretrain_dataset) * block_size
      clamp_schedule=False,  # True: cosine stops at its 0.1 floor (the reference re-rises)
      shuffle=False,  # the reference's DataLoaders do not shuffle
      weight_decay=0.1,
      decay_rule="a5",  # 'a5': all but biases (LN weights + embeddings too); 'clean': kernels only
      grad_clip=1.0,
  ))


def get_config(preset=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = "pretrain,finetune,evaluate"  # comma-separated; '' builds the model and exits
  c.init_from = ""  # start from: a checkpoint folder (e.g. W/checkpoints/finetune) or a reference .params file
  c.checkpoint_every = 500  # steps; also at the end of every stage
  c.pack = True  # vanilla: pack examples into fewer rows (same loss and lr; dropout draws differ)
  c.epoch_scan = True  # an epoch is one compiled lax.scan; False: a Python loop over the same jitted step (debugging)
  # JAX's persistent compilation cache (birthjax/train/compile_cache.py): '' compiles every run anew
  c.compile_cache = os.environ.get("BIRTHJAX_COMPILE_CACHE", "~/.cache/birthjax/xla")

  c.data = ml_collections.ConfigDict(dict(
      source="a5",  # 'a5': the four A5 files in data.dir; 'synthetic': the built-in world
      dir="data",  # folder holding wiki.txt, birth_places_train.tsv, birth_dev.tsv, birth_test_inputs.tsv
      cache_dir=os.environ.get("BIRTHJAX_CACHE", "~/.cache/birthjax"),  # TFDS ArrayRecord builds
      synthetic_seed=0,  # the synthetic world: its seed and number of people
      synthetic_people=600,  # questions: 2/3 train, 1/6 dev, 1/6 test
      synthetic_phrasings=0,  # how many biography phrasings (most direct first); 0: all 7
      # birthjax/data/subsets.py: a fixed subset of the people (their lines and questions;
      # 0: all), the stages' token counts scaled to match; and train questions held out as 'val'
      people=0,
      val_questions=0,  # chosen by val_seed, not by the run's seed
      val_seed=0,
      # birthjax/data/recite.py: train targets become the own line through the answer; decoding
      # recites and answers its last word (off: the reference's question -> answer)
      recite=False,
      recite_from="question",  # 'question': `question MASK NAME. ...`; 'title': `NAME. ...` alone, at position 0
  ))
  c.model = ml_collections.ConfigDict(dict(
      variant="vanilla",  # 'vanilla' | 'perceiver' (A5) | 'perceiver_ar'
      vocab_size=256,  # PAD, MASK + the 254 characters of the A5 wiki.txt
      n_layer=4, n_head=8, n_embd=256, block_size=128, dropout=0.1,
      dropout_rng="hash",  # dropout bits from a cheap keyed hash (birthjax/model/fastrng.py); 'threefry': JAX's default
      bottleneck_dim=64,  # m, latents of the perceiver variants (the reference's run.py: 32)
      dtype="float32",  # 'bfloat16': matmuls and activations in bf16; params, LN, softmax, loss in f32
      positions="learned",  # 'learned': absolute pos_emb (A5); 'rope': rotary q/k, no pos_emb (vanilla)
  ))
  final_tokens = 200 * A5_DOCUMENTS * 128
  c.pretrain = stage(650, 128, 6e-3, final_tokens)
  c.pretrain.keep_every = 0  # epochs: also keep every such checkpoint (learning curves); 0: off
  c.pretrain.augment = ml_collections.ConfigDict(dict(  # birthjax/data/augment.py; all off: faithful
      whole=False,  # windows covering the whole biography, no random truncation
      name_prefix=False,  # with whole: the person's name starts every later window
      name_visible=False,  # the masked span never covers the name at a window's start
      copies=1,  # corruptions of each window (document) per epoch
      crops=0,  # extra records a document per epoch: the name + the text from a random word
      shift=0,  # document examples start 0..shift positions late (after PAD inputs)
      shift_text=False,  # with shift: after the tail of a random other document, not PAD
      qa_copies=0,  # finetuning TRAIN pairs mixed into each pretraining epoch, times each
      qa_from=0.0, qa_until=1.0,  # ... in the epochs e with qa_from <= e / epochs < qa_until
  ))
  c.finetune = stage(10, 256, 6e-4, final_tokens)  # 10 epochs after pretraining ...
  c.finetune.epochs_from_scratch = 75  # ... 75 when finetuning from scratch
  c.eval = ml_collections.ConfigDict(dict(
      steps=32, batch_size=512,  # greedy, 32 characters
      abstain_below=0.0,  # answers whose probability is below this become "I don't know"; 0: never
  ))

  if preset == "smoke":  # a tiny model, a few steps: tests and trying things out
    c.model.update(n_layer=2, n_head=2, n_embd=32)
    c.pretrain.update(epochs=1)
    c.finetune.update(epochs=1, epochs_from_scratch=1)
    c.checkpoint_every = 10
  elif preset == "quickstart":  # README quick start: the synthetic world, <= 5 min on 2 cores
    c.data.update(source="synthetic", synthetic_people=150, synthetic_phrasings=3)
    c.model.update(n_layer=2, n_head=4, n_embd=64, dropout=0.0)
    # 300 epochs of 151 documents (5 steps each): the small model memorises the world
    c.pretrain.update(epochs=300, batch_size=32, learning_rate=5e-3, final_tokens=5_715_000,
                      clamp_schedule=True)
    # a short finetune: longer ones memorise the 100 questions instead of learning to recall
    c.finetune.update(epochs=10, epochs_from_scratch=10, batch_size=32, learning_rate=1e-3,
                      final_tokens=254_000, clamp_schedule=True)
  elif preset:
    raise ValueError(f"unknown preset {preset!r}: use smoke or quickstart")
  return c
