"""Config values that cannot work: one UserError naming the flag, before anything is built or
written (run.run calls `validate` first)."""
from __future__ import annotations

import math

from birthjax.data import recite
from birthjax.model import fastrng, model
from birthjax.errors import UserError


def validate(config):
  """Config values that cannot work: a UserError naming the flag, before anything is built or
  written. Each check: (ok, field, what is wrong or None for 'out of range', how to fix)."""
  m, d = config.model, config.data
  value = lambda field: config[field.split(".")[0]][field.split(".")[1]]
  perceiver = m.variant in ("perceiver", "perceiver_ar")
  checks = [
      (m.variant in model.VARIANTS, "model.variant", f"unknown model.variant {m.variant!r}",
       f"use one of {', '.join(model.VARIANTS)}"),
      (d.source in ("a5", "synthetic"), "data.source", f"unknown data.source {d.source!r}",
       "use 'a5' (the four files in --config.data.dir) or 'synthetic'"),
      (m.n_layer >= 1, "model.n_layer", None, "use an integer >= 1"),
      (m.n_embd >= 1, "model.n_embd", None, "use an integer >= 1"),
      (m.n_head >= 1, "model.n_head", None, "use a positive divisor of model.n_embd"),
      (m.n_head < 1 or m.n_embd % m.n_head == 0, "model.n_head",
       f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}",
       f"use a model.n_head that divides {m.n_embd}, or change model.n_embd"),
      (m.block_size >= 16, "model.block_size", None,
       "use an integer >= 16 (span corruption needs room)"),
      (0.0 <= m.dropout < 1.0, "model.dropout", None, "use a number in [0, 1)"),
      (m.get("dropout_rng", "threefry") in fastrng.IMPLS, "model.dropout_rng",
       f"unknown model.dropout_rng {m.get('dropout_rng')!r}",
       "use 'threefry' (JAX's default, A5-faithful) or 'hash' (cheaper dropout masks)"),
      (m.get("dtype", "float32") in ("float32", "bfloat16"), "model.dtype",
       f"unknown model.dtype {m.get('dtype')!r}", "use 'float32' (default) or 'bfloat16'"),
      (m.get("positions", "learned") in ("learned", "rope"), "model.positions",
       f"unknown model.positions {m.get('positions')!r}",
       "use 'learned' (absolute, A5) or 'rope' (rotary)"),
      (not perceiver or m.get("positions", "learned") == "learned", "model.positions",
       f"model.positions={m.get('positions')!r} is only for the vanilla variant",
       "use model.positions=learned with the perceivers, or model.variant=vanilla"),
      (not perceiver or m.bottleneck_dim >= 1, "model.bottleneck_dim", None, "use an integer >= 1"),
      (not perceiver or m.bottleneck_dim <= m.block_size, "model.bottleneck_dim",
       f"model.bottleneck_dim={m.bottleneck_dim} is larger than model.block_size={m.block_size}",
       f"use a model.bottleneck_dim in [1, {m.block_size}], or raise model.block_size"),
      (m.variant != "perceiver" or m.n_layer >= 2, "model.n_layer", None,
       "use an integer >= 2 for the perceiver (down + up projection blocks)"),
      (d.get("people", 0) >= 0, "data.people", None, "use an integer >= 0 (0: everyone)"),
      (d.get("recite_from", "question") in recite.MODES, "data.recite_from",
       f"unknown data.recite_from {d.get('recite_from')!r}",
       "use 'question' (question MASK NAME. ...) or 'title' (NAME. ... alone)"),
      (d.get("val_questions", 0) >= 0, "data.val_questions", None,
       "use an integer >= 0 (0: no val split)"),
      (config.eval.steps >= 0, "eval.steps", None, "use an integer >= 0"),
      (config.eval.batch_size >= 1, "eval.batch_size", None, "use an integer >= 1"),
      (0.0 <= config.eval.get("abstain_below", 0.0) <= 1.0, "eval.abstain_below", None,
       "use a number in [0, 1] (0: never abstain)"),
      (config.finetune.epochs_from_scratch >= 0, "finetune.epochs_from_scratch", None,
       "use an integer >= 0"),
  ]
  aug = config.pretrain.get("augment")
  if aug is not None:  # knowledge-augmented pretraining (birthjax/data/augment.py)
    checks += [(aug.copies >= 1, "pretrain.augment.copies",
                f"config value pretrain.augment.copies={aug.copies!r} is out of range",
                "use an integer >= 1 (1: each window once an epoch)"),
               (aug.crops >= 0, "pretrain.augment.crops",
                f"config value pretrain.augment.crops={aug.crops!r} is out of range",
                "use an integer >= 0 (0: no name-prefixed crops)"),
               (0 <= aug.shift <= config.model.block_size // 4, "pretrain.augment.shift",
                f"config value pretrain.augment.shift={aug.shift!r} is out of range",
                f"use an integer in [0, {config.model.block_size // 4}] (a quarter of block_size)"),
               (not aug.get("shift_text") or aug.shift > 0, "pretrain.augment.shift_text",
                "pretrain.augment.shift_text needs pretrain.augment.shift > 0 (it fills the shift)",
                "also set --config.pretrain.augment.shift (e.g. 16), or shift_text=False"),
               (aug.qa_copies >= 0, "pretrain.augment.qa_copies",
                f"config value pretrain.augment.qa_copies={aug.qa_copies!r} is out of range",
                "use an integer >= 0 (0: no question-style examples in pretraining)"),
               (0.0 <= aug.get("qa_from", 0.0) < aug.get("qa_until", 1.0) <= 1.0,
                "pretrain.augment.qa_from",
                f"pretrain.augment.qa_from={aug.get('qa_from', 0.0)!r} and qa_until="
                f"{aug.get('qa_until', 1.0)!r} are not an interval of pretraining",
                "use 0 <= qa_from < qa_until <= 1 (fractions of the pretraining epochs)"),
               (not aug.name_prefix or aug.whole, "pretrain.augment.name_prefix",
                "pretrain.augment.name_prefix needs pretrain.augment.whole (it prefixes windows)",
                "also set --config.pretrain.augment.whole=True, or name_prefix=False")]
  for stage in ("pretrain", "finetune"):
    c = config[stage]
    finite = lambda x, low: math.isfinite(x) and x >= low
    checks += [(c.batch_size >= 1, f"{stage}.batch_size", None, "use an integer >= 1"),
               (finite(c.learning_rate, 0) and c.learning_rate > 0, f"{stage}.learning_rate",
                None, "use a positive, finite number (e.g. 6e-4)"),
               (finite(c.weight_decay, 0), f"{stage}.weight_decay", None,
                "use a finite number >= 0 (0: no decay)"),
               (finite(c.grad_clip, 0) and c.grad_clip > 0, f"{stage}.grad_clip", None,
                "use a positive, finite number (the largest global gradient norm; A5: 1.0)"),
               (finite(c.warmup_tokens, 0), f"{stage}.warmup_tokens", None,
                "use a finite number >= 0 (tokens of linear warm-up)"),
               (finite(c.final_tokens, 0) and c.final_tokens > 0, f"{stage}.final_tokens", None,
                "use a positive, finite number (tokens at which the cosine reaches its floor)"),
               (c.epochs >= 0, f"{stage}.epochs", None, "use an integer >= 0"),
               (c.get("keep_every", 0) >= 0, f"{stage}.keep_every", None,
                "use an integer >= 0 (epochs between kept checkpoints; 0: keep none)"),
               (c.decay_rule in ("a5", "clean"), f"{stage}.decay_rule",
                f"unknown {stage}.decay_rule {c.decay_rule!r}", "use 'a5' or 'clean'")]
  for ok, field, what, fix in checks:
    if not ok:
      raise UserError(what or f"config value {field}={value(field)!r} is out of range",
                      f"--config.{field}", fix)
