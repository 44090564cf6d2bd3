"""Weights between birthjax (Flax) and the A5 PyTorch reference (`torch.save(model.state_dict())`).

  torch_to_params(state_dict, like_params) -> params   numpy arrays shaped like `like_params`
  params_to_torch(params, model_cfg) -> OrderedDict    what the reference's strict
                                                       `load_state_dict` accepts (mask buffers too)
  load_torch_file(path, like_params) -> params         a `.params` file written by the reference
  save_torch_file(params, model_cfg, path)             write one (temporary file, then rename)

  python -m birthjax.interop export CKPT_DIR --out=FILE.params [--config=configs/X.py[:preset]]
      the latest parameters of an orbax stage folder (W/checkpoints/finetune) as a file
      the reference loads with `model.load_state_dict(torch.load(FILE))` (birthjax/tools/interop_cli.py).

Names: torch `blocks.N.x` is flax `blocks_N/x`; `mlp.0`/`mlp.2` are `mlp/fc`/`mlp/proj`;
Linear `weight` [out, in] is the transposed `kernel` [in, out]; LayerNorm `weight` is
`scale`; `tok_emb.weight` is `tok_emb/embedding`; `pos_emb` and the perceiver's
`down_block.C` keep their names. The `*.attn.mask` buffers are constant lower triangles:
skipped on import, rebuilt on export. A leading `module.` (a DataParallel wrapper's
state dict) is stripped. `n_head` is not stored in any weight, so it cannot be checked:
it must be the one of the run that trained the weights.

torch is an optional extra (`pip install -r requirements-interop.txt`), imported only here,
only when needed.
"""
from __future__ import annotations

import collections
import io
import os
import re

import numpy as np

from birthjax.errors import UserError

PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
INSTALL = "pip install -r requirements-interop.txt"
MODEL_FIELDS = ("vocab_size", "variant", "n_layer", "n_head", "n_embd", "block_size", "dropout",
                "bottleneck_dim")


def _torch():
  try:
    import torch
  except ImportError as e:
    raise UserError(f"PyTorch is needed to read or write .params files ({e})", "birthjax.model.interop",
                    INSTALL) from None
  return torch


# ----------------------------------------------------------------------------- names
def torch_key(path) -> str:
  """The reference's state dict name of a flax parameter path (a tuple of strings)."""
  parts = []
  for i, p in enumerate(path):
    m = re.fullmatch(r"blocks_(\d+)", p)
    if m:
      parts += ["blocks", m.group(1)]
    elif i > 0 and path[i - 1] == "mlp" and p in ("fc", "proj"):
      parts.append("0" if p == "fc" else "2")
    elif i == len(path) - 1 and p in ("kernel", "scale", "embedding"):
      parts.append("weight")
    else:
      parts.append(p)
  return ".".join(parts)


def _is_kernel(path) -> bool:
  return path[-1] == "kernel"


def _is_mask_buffer(key: str) -> bool:
  return key == "attn.mask" or key.endswith(".attn.mask")


def _strip(key: str) -> str:
  changed = True
  while changed:
    changed = False
    for p in PREFIXES:
      if key.startswith(p):
        key, changed = key[len(p):], True
  return key


def _flatten(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if hasattr(v, "items"):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflatten(flat):
  tree = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def _numpy(v):
  if hasattr(v, "detach"):  # a torch tensor (bfloat16 has no numpy dtype: go through float32)
    v = v.detach().cpu()
    if not v.dtype.is_floating_point or v.dtype.itemsize < 4:
      v = v.float()
    return v.numpy()
  return np.asarray(v)


# ----------------------------------------------------------------------------- describing
def _summary(shapes: dict) -> dict:
  """What a set of torch-named shapes says about the model (n_head cannot be told)."""
  s = {}
  if "tok_emb.weight" in shapes:
    s["vocab_size"], s["n_embd"] = shapes["tok_emb.weight"]
  if "pos_emb" in shapes and len(shapes["pos_emb"]) == 3:
    s["block_size"] = shapes["pos_emb"][1]
  perceiver = any(k.startswith(("down_block.", "up_block.")) for k in shapes)
  s["variant"] = "perceiver" if perceiver else "vanilla"
  n = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
  s["n_layer"] = n + 2 if perceiver else n
  if "down_block.C" in shapes and len(shapes["down_block.C"]) == 3:
    s["bottleneck_dim"] = shapes["down_block.C"][1]
  return s


def _fix(have: dict, want: dict) -> str:
  diff = [k for k in ("variant", "n_layer", "n_embd", "block_size", "vocab_size", "bottleneck_dim")
          if k in have and have.get(k) != want.get(k)]
  desc = lambda s: ", ".join(f"{k}={s[k]}" for k in ("variant", "n_layer", "n_embd", "block_size",
                                                      "vocab_size", "bottleneck_dim") if k in s)
  if not diff:
    return "load the state dict of the same model configuration (A5: variant, n_layer, n_embd, ...)"
  flags = " ".join(f"--config.model.{k}={have[k]}" for k in diff)
  return (f"the file holds a model with {desc(have)}, the config builds {desc(want)}: use the "
          f"matching config ({flags}), or export the weights of the model you meant")


# ----------------------------------------------------------------------------- conversion
def torch_to_params(state_dict, like_params, *, source: str = "state dict") -> dict:
  """The flax parameters in a reference state dict: numpy arrays, the structure, shapes and
  dtypes of `like_params` (real parameters or `jax.eval_shape` structs). Every leaf must be
  filled with the right shape and no weight may be left over, else UserError."""
  if not hasattr(state_dict, "items"):
    raise UserError(f"expected a state dict (a mapping of names to tensors), got "
                    f"{type(state_dict).__name__}", source,
                    "save the reference model with torch.save(model.state_dict(), FILE)")
  sd = {}
  for k, v in state_dict.items():
    k = _strip(str(k))
    if not _is_mask_buffer(k):
      sd[k] = v
  like = _flatten(like_params)
  have_shapes = {k: tuple(getattr(v, "shape", ())) for k, v in sd.items()}
  want_shapes = {}
  for path, leaf in like.items():
    shape = tuple(leaf.shape)
    want_shapes[torch_key(path)] = shape[::-1] if _is_kernel(path) else shape
  fix = _fix(_summary(have_shapes), _summary(want_shapes))
  out = {}
  for path, leaf in like.items():
    key = torch_key(path)
    if key not in sd:
      raise UserError(f"weight {key!r} (flax {'/'.join(path)}) is missing from the torch state dict",
                      source, fix)
    if have_shapes[key] != want_shapes[key]:
      raise UserError(f"weight {key!r} has shape {list(have_shapes[key])} in the torch state dict, "
                      f"the model needs {list(want_shapes[key])}", source, fix)
    a = _numpy(sd[key])
    out[path] = np.ascontiguousarray(a.T if _is_kernel(path) else a).astype(np.dtype(leaf.dtype))
  extra = sorted(set(sd) - set(want_shapes))
  if extra:
    raise UserError(f"the torch state dict has {len(extra)} weight(s) the model lacks, e.g. "
                    f"{extra[0]!r}", source, fix)
  return _unflatten(out)


def _check_cfg(params, model_cfg):
  import jax
  from birthjax.model import model
  if model_cfg.variant not in ("vanilla", "perceiver"):
    raise UserError(f"the A5 reference has no {model_cfg.variant!r} model", "model.variant",
                    "export a 'vanilla' or 'perceiver' model (Perceiver-AR exists only in birthjax)")
  like = jax.eval_shape(model.build(model_cfg).init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, model_cfg.block_size), np.int32))["params"]
  want = {torch_key(p): tuple(v.shape) for p, v in _flatten(like).items()}
  got = {torch_key(p): tuple(np.shape(v)) for p, v in _flatten(params).items()}
  if want != got:
    bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[0]
    raise UserError(f"the parameters do not fit the model config (e.g. {bad!r}: "
                    f"{got.get(bad)} vs {want.get(bad)})", "model config",
                    "export with the config the parameters were trained with")


def params_to_torch(params, model_cfg) -> collections.OrderedDict:
  """The reference's state dict (float32 CPU tensors, the attention mask buffers included)
  for birthjax parameters of a 'vanilla' or 'perceiver' `model_cfg`."""
  torch = _torch()
  _check_cfg(params, model_cfg)
  tril = lambda n: torch.tril(torch.ones(n, n)).view(1, 1, n, n)
  sd = collections.OrderedDict()
  flat = _flatten(params)
  for path in flat:
    a = np.asarray(flat[path], dtype=np.float32)
    a = np.array(a.T if _is_kernel(path) else a, order="C")  # a writable copy, not a JAX buffer
    sd[torch_key(path)] = torch.from_numpy(a)
  perceiver = model_cfg.variant == "perceiver"
  n_blocks = model_cfg.n_layer - 2 if perceiver else model_cfg.n_layer
  for i in range(n_blocks):
    sd[f"blocks.{i}.attn.mask"] = tril(model_cfg.bottleneck_dim if perceiver else model_cfg.block_size)
  if perceiver:
    sd["down_block.attn.mask"] = tril(model_cfg.block_size)
    sd["up_block.attn.mask"] = tril(model_cfg.block_size)
  return collections.OrderedDict(sorted(sd.items(), key=lambda kv: _order(kv[0])))


def _order(key: str):
  """The reference's state dict order (module registration order), for readable files."""
  top = ["pos_emb", "tok_emb", "down_block", "blocks", "up_block", "ln_f", "head"]
  inner = ["C", "ln1", "ln2", "attn", "mlp", "mask", "key", "query", "value", "proj", "0", "2",
           "weight", "bias"]
  parts = key.split(".")
  rank = [top.index(parts[0]) if parts[0] in top else len(top)]
  for p in parts[1:]:
    rank.append(int(p) if parts[0] == "blocks" and p.isdigit() and len(rank) == 1
                else (inner.index(p) if p in inner else len(inner)))
  return rank


# ----------------------------------------------------------------------------- files
def load_torch_file(path: str, like_params) -> dict:
  """The parameters in a `.params` file of the reference (torch.save of a state dict)."""
  torch = _torch()
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise UserError("no such file", path, "pass a file written by torch.save(model.state_dict(), "
                    "FILE) or `python -m birthjax.interop export`")
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"cannot read the torch file ({type(e).__name__}: {detail[:200]})", path,
                    "pass an intact file written by torch.save(model.state_dict(), FILE)") from None
  if hasattr(sd, "items") and not any(hasattr(v, "shape") for v in sd.values()):
    for k in ("state_dict", "model"):  # a training checkpoint dict that wraps the state dict
      if hasattr(sd.get(k), "items"):
        sd = sd[k]
        break
  return torch_to_params(sd, like_params, source=path)


def save_torch_file(params, model_cfg, path: str) -> str:
  """Write the reference's state dict to `path` (files.atomic_write: a temporary file,
  then renamed); the path."""
  from birthjax import files
  torch = _torch()
  buf = io.BytesIO()
  torch.save(params_to_torch(params, model_cfg), buf)
  path = os.path.abspath(path)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the folder ({e.strerror or e})", os.path.dirname(path),
                    "pass --out in a writable folder") from None
  files.atomic_write(path, buf.getvalue(), flag="--out")
  return path
