"""Tests for birthjax.model.perceiver: the A5 Perceiver and Perceiver-AR (params, init, masks,
numerics vs numpy, input dependence by gradients, training window, decoding, train step)."""
import dataclasses
import math


import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.infer import decode
from birthjax.model import model, perceiver
from birthjax import sharding
from birthjax.train import optim, train
from birthjax.data.vocab import PAD
from tests.params_util import random_params

M = 4
TINY = model.ModelConfig(vocab_size=32, n_layer=3, n_head=2, n_embd=16, block_size=16,
                         bottleneck_dim=M)
VARIANTS = ("vanilla", "perceiver", "perceiver_ar")


def _cfg(variant, **kw):
  return dataclasses.replace(TINY, variant=variant, **kw)


def _flat_shapes(cfg):
  x = jax.ShapeDtypeStruct((1, cfg.block_size), jnp.int32)
  shapes = jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]
  return {"/".join(k): tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(shapes).items()}


_random_params = random_params


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("kw, count", [
    (dict(variant="perceiver", bottleneck_dim=64), 3339776),  # vanilla + C (64 x 256)
    (dict(variant="perceiver", bottleneck_dim=32), 3331584),  # vanilla + C (32 x 256)
    (dict(variant="perceiver_ar"), 3323392),                  # exactly vanilla's
    (dict(variant="vanilla"), 3323392),
])
def test_full_config_param_counts(kw, count):
  shapes = _flat_shapes(model.ModelConfig(vocab_size=256, **kw))
  assert sum(math.prod(s) for s in shapes.values()) == count


def _block_names(prefix, n_embd=256):
  names = {f"{prefix}/{ln}/{w}": (n_embd,) for ln in ("ln1", "ln2") for w in ("scale", "bias")}
  for m in ("query", "key", "value", "proj"):
    names[f"{prefix}/attn/{m}/kernel"] = (n_embd, n_embd)
    names[f"{prefix}/attn/{m}/bias"] = (n_embd,)
  names.update({f"{prefix}/mlp/fc/kernel": (n_embd, 4 * n_embd), f"{prefix}/mlp/fc/bias": (4 * n_embd,),
                f"{prefix}/mlp/proj/kernel": (4 * n_embd, n_embd), f"{prefix}/mlp/proj/bias": (n_embd,)})
  return names


def test_full_config_param_names():
  common = {"tok_emb/embedding": (256, 256), "pos_emb": (1, 128, 256), "ln_f/scale": (256,),
            "ln_f/bias": (256,), "head/kernel": (256, 256)}
  want_p = dict(common, **{"down_block/C": (1, 64, 256)}, **_block_names("down_block"),
                **_block_names("up_block"), **_block_names("blocks_0"), **_block_names("blocks_1"))
  assert _flat_shapes(model.ModelConfig(vocab_size=256, variant="perceiver")) == want_p
  vanilla = _flat_shapes(model.ModelConfig(vocab_size=256))
  assert _flat_shapes(model.ModelConfig(vocab_size=256, variant="perceiver_ar")) == vanilla
  assert set(vanilla) == set(common) | {k for i in range(4) for k in _block_names(f"blocks_{i}")}


def test_c_init_is_torch_xavier_uniform():
  cfg = model.ModelConfig(vocab_size=8, variant="perceiver", n_layer=2, block_size=8)  # m=64, d=256
  c = np.asarray(model.init_params(cfg, jax.random.key(0))["down_block"]["C"], np.float64)
  assert c.shape == (1, 64, 256)
  bound = math.sqrt(6.0 / (64 * 256 + 1 * 256))  # torch: fan_in = 64*256, fan_out = 1*256
  assert abs(bound - 0.0190) < 1e-4
  assert np.abs(c).max() <= bound and np.abs(c).max() > 0.9 * bound
  assert abs(c.std() - bound / math.sqrt(3)) < 0.05 * bound  # uniform, not normal
  assert abs(c.mean()) < 0.02 * bound
  assert math.sqrt(6.0 / (64 + 256)) > 5 * bound  # flax's fans would give a far wider range


def test_masks_literal():
  np.testing.assert_array_equal(perceiver.down_mask(3, 5), np.array(
      [[1, 0, 0, 0, 0],
       [1, 1, 0, 0, 0],
       [1, 1, 1, 0, 0]], bool))
  np.testing.assert_array_equal(perceiver.up_mask(5, 3), np.array(
      [[1, 0, 0],
       [1, 1, 0],
       [1, 1, 1],
       [1, 1, 1],
       [1, 1, 1]], bool))


# ----------------------------------------------------------------------------- numerics
def _np_ln(x, p, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * p["scale"] + p["bias"]


def _np_attn(p, xq, xkv, mask, h):
  lin = lambda n, z: z @ p[n]["kernel"] + p[n]["bias"]
  split = lambda z: z.reshape(z.shape[0], h, -1).transpose(1, 0, 2)
  q, k, v = split(lin("query", xq)), split(lin("key", xkv)), split(lin("value", xkv))
  att = np.where(mask, q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1]), -1e10)
  att = np.exp(att - att.max(-1, keepdims=True))
  y = (att / att.sum(-1, keepdims=True)) @ v
  return lin("proj", y.transpose(1, 0, 2).reshape(xq.shape[0], -1))


def _np_mlp(p, x):
  a = x @ p["fc"]["kernel"] + p["fc"]["bias"]
  a = 0.5 * a * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
  return a @ p["proj"]["kernel"] + p["proj"]["bias"]


def _np_block(p, xq, mask, h, xkv=None):
  x = xq + _np_attn(p["attn"], _np_ln(xq, p["ln1"]), _np_ln(xq if xkv is None else xkv, p["ln1"]), mask, h)
  return x + _np_mlp(p["mlp"], _np_ln(x, p["ln2"]))


def _np_forward(cfg, params, idx, end=None):
  """One unbatched sequence -> [T, V], following the A5 handout / Perceiver-AR by hand."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  t, m, h = len(idx), cfg.bottleneck_dim, cfg.n_head
  tril = np.tril(np.ones((cfg.block_size, cfg.block_size), bool))  # the reference's mask buffer
  x = p["tok_emb"]["embedding"][idx] + p["pos_emb"][0, :t]
  head = lambda z: _np_ln(z, p["ln_f"]) @ p["head"]["kernel"]
  if cfg.variant == "perceiver":
    d, u = p["down_block"], p["up_block"]
    c = d["C"][0]
    lat = c + _np_attn(d["attn"], _np_ln(c, d["ln1"]), x, tril[:m, :t], h)
    lat = lat + _np_mlp(d["mlp"], _np_ln(lat, d["ln2"]))
    for i in range(cfg.n_layer - 2):
      lat = _np_block(p[f"blocks_{i}"], lat, tril[:m, :m], h)
    y = x + _np_attn(u["attn"], x, _np_ln(lat, u["ln1"]), tril[:t, :m], h)
    return head(y + _np_mlp(u["mlp"], _np_ln(y, u["ln2"])))
  end = t if end is None else end
  start = min(max(end - m, 0), t - m)
  pos = np.arange(start, start + m)
  lat = _np_block(p["blocks_0"], x[pos], tril[pos, :t], h, xkv=x)
  for i in range(1, cfg.n_layer):
    lat = _np_block(p[f"blocks_{i}"], lat, tril[:m, :m], h)
  out = np.zeros((t, cfg.vocab_size))
  out[pos] = head(lat)
  return out


@pytest.mark.parametrize("variant", ["perceiver", "perceiver_ar"])
def test_forward_matches_numpy(variant):
  cfg = _cfg(variant)
  params = _random_params(cfg, 0.3, seed=1)
  idx = np.random.default_rng(2).integers(0, cfg.vocab_size, (3, 16)).astype(np.int32)
  ends = np.array([16, 7, 2], np.int32)  # Perceiver-AR windows 12..15, 3..6, 0..3
  got = np.asarray(model.build(cfg).apply({"params": params}, idx,
                                          ends if variant == "perceiver_ar" else None))
  for b in range(3):
    want = _np_forward(cfg, params, idx[b], ends[b])
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got[b], want, rtol=2e-4, atol=2e-4)


def test_perceiver_ar_with_m_ge_t_is_vanilla():
  """A window that covers every position makes Perceiver-AR exactly the vanilla GPT."""
  params = _random_params(TINY, 0.3, seed=3)
  idx = np.random.default_rng(4).integers(0, TINY.vocab_size, (2, 6)).astype(np.int32)
  van = model.build(_cfg("vanilla")).apply({"params": params}, idx)
  for m in (6, 8):
    ar = model.build(_cfg("perceiver_ar", bottleneck_dim=m)).apply({"params": params}, idx)
    np.testing.assert_allclose(np.asarray(ar), np.asarray(van), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- dependence
T = 16
_JACOBIANS = {}


def _dependence(cfg, params, end):
  """dep[t, j] = max |d (logits[0, t] . w) / d pos_emb[j]|: how output t depends on input j.

  Jitted, with Perceiver-AR's end_B traced (one compile per variant)."""
  if cfg not in _JACOBIANS:
    net = model.build(cfg)

    def out(pe, p, idx, w, end_b):
      return net.apply({"params": dict(p, pos_emb=pe)}, idx, end_b)[0] @ w  # [T]

    _JACOBIANS[cfg] = jax.jit(jax.jacrev(out))
  idx = jnp.asarray(np.random.default_rng(5).integers(0, cfg.vocab_size, (1, T)), jnp.int32)
  w = jnp.asarray(np.random.default_rng(6).normal(size=cfg.vocab_size), jnp.float32)
  end_b = None if end is None else jnp.array([end], jnp.int32)
  jac = _JACOBIANS[cfg](params["pos_emb"], params, idx, w, end_b)
  return np.abs(np.asarray(jac))[:, 0, :T].max(-1)


def _expected(variant, end):
  t, j = np.arange(T)[:, None], np.arange(T)[None, :]
  if variant == "vanilla":
    return j <= t
  if variant == "perceiver":  # inputs 0..m-1 through the latents, and x_t itself
    return ((j <= t) & (j < M)) | (j == t)
  lo = min(max(end - M, 0), T - M)
  return (j <= t) & (t >= lo) & (t < lo + M)


@pytest.mark.parametrize("variant, end", [
    ("vanilla", None), ("perceiver", None), ("perceiver_ar", 16), ("perceiver_ar", 10),
    ("perceiver_ar", 2)])
def test_input_dependence_by_gradients(variant, end):
  cfg = _cfg(variant)
  dep = _dependence(cfg, _random_params(cfg, 0.3, seed=7), end)
  want = _expected(variant, end)
  assert dep[~want].max() == 0.0  # exactly none: causal, context loss, outside the window
  assert dep[want].min() > 1e-6   # and real dependence everywhere else
  if variant == "perceiver":       # the A5 context loss, spelled out: t=9 sees 0..3 and 9
    np.testing.assert_array_equal(np.nonzero(dep[9])[0], [0, 1, 2, 3, 9])
  if variant == "perceiver_ar" and end == 10:
    np.testing.assert_array_equal(np.nonzero(dep.max(1))[0], [6, 7, 8, 9])
    np.testing.assert_array_equal(np.nonzero(dep[6])[0], np.arange(7))


@pytest.mark.parametrize("variant", ["vanilla", "perceiver", "perceiver_ar"])
def test_input_dependence_eager_by_perturbation(variant):
  """Without jit and without gradients: change token 2 or token 8 and see which logits move
  (rows compared position for position across two calls of one shape, so bit-exact)."""
  cfg = _cfg(variant)
  net, params = model.build(cfg), _random_params(cfg, 0.3, seed=1)
  base = np.random.default_rng(2).integers(0, cfg.vocab_size, T).astype(np.int32)
  changed = np.stack([base, base, base])
  changed[1, 2] = (base[2] + 1) % cfg.vocab_size
  changed[2, 8] = (base[8] + 1) % cfg.vocab_size
  end = np.array([10, 10, 10], np.int32) if variant == "perceiver_ar" else None
  a = np.asarray(net.apply({"params": params}, np.stack([base] * 3), end))
  b = np.asarray(net.apply({"params": params}, changed, end))
  moved = np.abs(a - b).max(-1)  # [3, T]
  t = np.arange(T)
  want = {"vanilla": [t < 0, t >= 2, t >= 8],
          "perceiver": [t < 0, t >= 2, t == 8],  # t >= 8 > m sees only 0..3 and itself
          "perceiver_ar": [t < 0, (t >= 6) & (t < 10), (t >= 8) & (t < 10)]}[variant]
  for row, w in zip(moved, want):
    np.testing.assert_array_equal(row > 0, w)
    assert row[w].min(initial=1.0) > 1e-5


def test_perceiver_ar_logits_outside_window_are_zero():
  cfg = _cfg("perceiver_ar")
  params = _random_params(cfg, 0.3, seed=8)
  idx = np.random.default_rng(9).integers(0, cfg.vocab_size, (3, T)).astype(np.int32)
  net = model.build(cfg)
  logits = np.asarray(net.apply({"params": params}, idx, np.array([10, 16, 1], np.int32)))
  np.testing.assert_array_equal(net.apply({"params": params}, idx),  # default end: T
                                net.apply({"params": params}, idx, np.array([16] * 3, np.int32)))
  for b, window in enumerate([range(6, 10), range(12, 16), range(0, 4)]):
    inside = np.isin(np.arange(T), list(window))
    assert np.all(logits[b, ~inside] == 0.0)
    assert np.all(np.abs(logits[b, inside]).max(-1) > 0.1)


# ----------------------------------------------------------------------------- training window
def test_training_window_hand_worked():
  cfg = model.ModelConfig(vocab_size=32, variant="perceiver_ar", bottleneck_dim=4, block_size=16)
  y = np.array([
      [5, 6, 7, 8, 9, 10, 11, 12, 13, 14],  # full row: end 10, keep 6..9
      [5, 6, 7, 8, 9, 10, 11, 0, 0, 0],     # last target 6: end 7, keep 3..6
      [0, 0, 0, 0, 9, 10, 0, 0, 0, 0],      # finetune-like: end 6, keep 2..5 (all of it)
      [5, 6, 0, 0, 0, 0, 0, 0, 0, 0],       # last target 1: end 2, window 0..3
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],       # no targets: end 10 (T)
      [0, 5, 0, 0, 0, 7, 0, 0, 0, 0],       # a PAD hole: end 6, the target at 1 is dropped
  ], np.int32)
  end, tgt = perceiver.training_window(cfg, jnp.asarray(y))
  np.testing.assert_array_equal(end, [10, 7, 6, 2, 10, 6])
  np.testing.assert_array_equal(tgt, np.array([
      [0, 0, 0, 0, 0, 0, 11, 12, 13, 14],
      [0, 0, 0, 8, 9, 10, 11, 0, 0, 0],
      [0, 0, 0, 0, 9, 10, 0, 0, 0, 0],
      [5, 6, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 7, 0, 0, 0, 0],
  ]))
  for variant in ("vanilla", "perceiver"):
    e, t = perceiver.training_window(dataclasses.replace(cfg, variant=variant), y)
    assert e is None and t is y


# ----------------------------------------------------------------------------- decoding
STEPS = 8
PROMPTS = [np.array(p, np.int32) for p in (
    [5, 9],                                  # shorter than m
    [3, 1, 4, 1, 5, 9],                      # between m and block_size - STEPS
    [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5],    # 12 > block_size - STEPS: crops
    list(np.arange(20) % 29 + 2),            # longer than block_size itself
)]


def _reference_greedy(logits_fn, prompt, block_size=TINY.block_size):
  """The A5 sample(..., sample=False): crop to block_size, unpadded full forward, argmax."""
  x, gaps = list(prompt), []
  for _ in range(STEPS):
    x_cond = np.asarray(x[-block_size:], np.int32)
    last = np.asarray(logits_fn(x_cond))[-1]
    gaps.append(np.diff(np.sort(last)[-2:])[0])
    x.append(int(np.argmax(last)))
  return np.array(x[len(prompt):]), min(gaps)


@pytest.mark.parametrize("bucket", [True, False])  # windows sized to the prompts / block_size
@pytest.mark.parametrize("variant", ["perceiver", "perceiver_ar"])
def test_greedy_generate_matches_reference_loop(variant, bucket):
  cfg = _cfg(variant)
  params = _random_params(cfg, 0.5, seed=10)
  got = decode.greedy_generate(params, cfg, PROMPTS, steps=STEPS, bucket=bucket)
  for prompt, g in zip(PROMPTS, got):  # every prompt: the float64 numpy forward, unpadded
    want, gap = _reference_greedy(lambda x: _np_forward(cfg, params, x), prompt)
    assert gap > 1e-4, "near-tie: pick another seed"
    np.testing.assert_array_equal(g, want, err_msg=f"prompt {prompt.tolist()}")
  # the longest prompt with model.apply itself (eager; one window shape, so one compile)
  net = model.build(cfg)
  want, _ = _reference_greedy(lambda x: net.apply({"params": params}, x[None])[0], PROMPTS[-1])
  np.testing.assert_array_equal(got[-1], want)
  assert len({tuple(g) for g in got}) == len(PROMPTS)
  assert sum(len(set(g.tolist())) > 1 for g in got) >= 2


# ----------------------------------------------------------------------------- train step
OPT = optim.Settings()
SCHED = optim.Schedule(10.0, 1e6)


def _np_masked_ce(logits, targets):
  logits = np.asarray(logits, np.float64)
  mx = logits.max(-1, keepdims=True)
  logp = logits - mx - np.log(np.exp(logits - mx).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  keep = targets != PAD
  return nll[keep].sum() / keep.sum()


@pytest.mark.parametrize("variant", ["perceiver", "perceiver_ar"])
def test_one_train_step(variant):
  cfg = _cfg(variant, n_layer=2)  # perceiver: down and up blocks only (a smaller compile)
  mesh = sharding.make_mesh()
  params = jax.device_get(_random_params(cfg, 0.3, seed=12))  # logits far from uniform
  rng = np.random.default_rng(11)
  x = rng.integers(2, cfg.vocab_size, (4, T)).astype(np.int32)
  y = rng.integers(2, cfg.vocab_size, (4, T)).astype(np.int32)
  y[1, 12:] = PAD                    # end 12: window 8..11, targets 0..7 dropped
  y[2, :3], y[2, 6:] = PAD, PAD      # targets 3..5 only: end 6, window 2..5 keeps them all
  y[3, 2:] = PAD                     # end 2: window 0..3
  batch = {"x": x, "y": y, "row_mask": np.ones(4, bool)}
  state = jax.device_put(train.init_state(params, OPT.make()), sharding.replicated(mesh))
  step = train.compile_train_step(mesh, model_cfg=cfg, opt=OPT, base_lr=1e-3, schedule=SCHED)
  state, metrics = step(state, sharding.put_batch(batch, mesh), jax.random.key(0))
  loss = float(metrics["loss"])
  assert np.isfinite(loss) and np.isfinite(float(metrics["grad_norm"]))
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         params, jax.device_get(state["params"]))
  assert all(jax.tree.leaves(changed))
  if variant == "perceiver_ar":
    targets = np.zeros_like(y)
    for b, (lo, hi) in enumerate([(12, 16), (8, 12), (2, 6), (0, 2)]):
      targets[b, lo:hi] = y[b, lo:hi]
    end = np.array([16, 12, 6, 2], np.int32)
    got_end, got_targets = perceiver.training_window(cfg, jnp.asarray(y))
    np.testing.assert_array_equal(got_end, end)
    np.testing.assert_array_equal(got_targets, targets)
  else:
    targets, end = y, None
  logits = model.build(cfg).apply({"params": params}, x, end)
  want = _np_masked_ce(logits, targets)
  assert loss == pytest.approx(want, rel=1e-5)
  if variant == "perceiver_ar":  # the window matters: all targets would give another loss
    assert abs(_np_masked_ce(logits, y) - want) > 0.1
