"""Tests for birthjax.model.interop and birthjax.tools.torch_a5: the published A5 PyTorch model and birthjax
agree (logits, greedy decoding) on weights moved either way; names map one to one at the A5
size; bad files are one UserError; the export CLI writes what the reference strictly loads."""
import dataclasses
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from birthjax.train import checkpoint  # noqa: E402
from birthjax.infer import decode
from birthjax.model import interop, model
from birthjax.tools import cli, interop_cli, torch_a5
from birthjax.errors import UserError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {
    "vanilla": model.ModelConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=32, block_size=16),
    "perceiver": model.ModelConfig(vocab_size=40, variant="perceiver", n_layer=3, n_head=2,
                                   n_embd=32, block_size=16, bottleneck_dim=4),
}
VARIANTS = tuple(TINY)


def like_params(cfg):
  x = jax.ShapeDtypeStruct((1, cfg.block_size), jnp.int32)
  return jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]


def torch_model(cfg, seed=0):
  """The reference model, every weight random (pos_emb, biases, LN and C all matter)."""
  torch.manual_seed(seed)
  m = torch_a5.GPT(torch_a5.gpt_config(cfg))
  with torch.no_grad():
    for name, p in m.named_parameters():
      p.normal_(0.0, 0.2)
      if name.endswith("weight") and ("ln" in name.split(".")[-2]):
        p.add_(1.0)
  return m.eval()


def torch_logits(m, idx):
  with torch.no_grad():
    return m(torch.from_numpy(np.asarray(idx)).long())[0].numpy()


_APPLY = {}


def jax_logits(cfg, params, idx):
  if cfg not in _APPLY:  # one compilation per config and shape
    _APPLY[cfg] = jax.jit(model.build(cfg).apply)
  return np.asarray(_APPLY[cfg]({"params": params}, jnp.asarray(idx)))


def tokens(cfg, b, t, seed=0):
  return np.random.default_rng(seed).integers(0, cfg.vocab_size, (b, t)).astype(np.int32)


@pytest.fixture(scope="module", params=VARIANTS)
def saved(request, tmp_path_factory):
  """(cfg, torch model, path of its torch.save'd state dict, params imported from it)."""
  cfg = TINY[request.param]
  m = torch_model(cfg)
  path = str(tmp_path_factory.mktemp("params") / f"{request.param}.params")
  torch.save(m.state_dict(), path)
  return cfg, m, path, interop.load_torch_file(path, like_params(cfg))


# ----------------------------------------------------------------------------- numerics
def test_imported_logits_match_reference(saved):
  cfg, m, _, params = saved
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in jax.tree.leaves(params))
  for t in (cfg.block_size, 3):  # 3 < m: latents past the input see all of it
    idx = tokens(cfg, 3, t, seed=t)
    want, got = torch_logits(m, idx), jax_logits(cfg, params, idx)
    assert want.shape == got.shape == (3, t, cfg.vocab_size)
    assert np.abs(want).max() > 0.5  # the weights are large enough for the check to mean something
    assert np.abs(want - got).max() <= 1e-4


def test_greedy_decoding_matches_reference_sample(saved):
  cfg, m, _, params = saved
  steps = 8
  rng = np.random.default_rng(1)
  # 12, 20 > block_size - steps: the reference crops to the last block_size tokens
  prompts = [rng.integers(0, cfg.vocab_size, n).astype(np.int32) for n in (3, 12, 20)]
  got = decode.greedy_generate(params, cfg, prompts, steps=steps)
  for p, g in zip(prompts, got):
    x = torch.from_numpy(p[None].astype(np.int64))
    want = torch_a5.sample(m, x, steps)[0, len(p):].numpy()
    np.testing.assert_array_equal(g, want)


def test_reference_loss_is_birthjax_loss(saved):
  from birthjax.model import loss
  cfg, m, _, params = saved
  idx, y = tokens(cfg, 3, cfg.block_size, 2), tokens(cfg, 3, cfg.block_size, 3)
  y[:, :5] = 0  # PAD targets are ignored by both
  with torch.no_grad():
    want = m(torch.from_numpy(idx).long(), torch.from_numpy(y).long())[1].item()
  got = float(loss.mean_cross_entropy(jnp.asarray(jax_logits(cfg, params, idx)), jnp.asarray(y)))
  assert abs(want - got) <= 1e-4


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("variant", VARIANTS)
def test_export_strict_loads_and_matches(variant, tmp_path):
  cfg = TINY[variant]
  rng = np.random.default_rng(4)
  params = jax.tree.map(lambda s: rng.normal(0.0, 0.2, s.shape).astype(np.float32),
                        like_params(cfg))
  sd = interop.params_to_torch(params, cfg)
  m = torch_a5.GPT(torch_a5.gpt_config(cfg)).eval()
  assert list(sd) == list(m.state_dict())  # the reference's names, in its order
  for k, v in m.state_dict().items():  # mask buffers equal the reference's own
    if k.endswith(".mask"):
      assert torch.equal(sd[k], v), k
  m.load_state_dict(sd, strict=True)
  idx = tokens(cfg, 3, cfg.block_size)
  assert np.abs(torch_logits(m, idx) - jax_logits(cfg, params, idx)).max() <= 1e-4
  back = interop.torch_to_params(sd, like_params(cfg))  # and back, exactly
  jax.tree.map(np.testing.assert_array_equal, back, params)
  path = interop.save_torch_file(params, cfg, str(tmp_path / "sub" / "x.params"))
  assert sorted(os.listdir(tmp_path / "sub")) == ["x.params"]  # no temporary left behind
  jax.tree.map(np.testing.assert_array_equal, interop.load_torch_file(path, params), params)


def test_module_prefix_is_stripped(saved):
  cfg, m, _, params = saved
  wrapped = {"module." + k: v for k, v in m.state_dict().items()}
  jax.tree.map(np.testing.assert_array_equal,
               interop.torch_to_params(wrapped, like_params(cfg)), params)


def test_perceiver_ar_has_no_reference():
  cfg = dataclasses.replace(TINY["vanilla"], variant="perceiver_ar")
  with pytest.raises(UserError, match="no 'perceiver_ar'"):
    interop.params_to_torch(jax.tree.map(np.zeros_like, like_params(cfg)), cfg)


# ----------------------------------------------------------------------------- errors
def test_missing_and_extra_weights_are_user_errors(saved):
  cfg, m, path, _ = saved
  sd = m.state_dict()
  del sd["head.weight"]
  with pytest.raises(UserError, match=r"'head.weight'.*missing.*\[a.params\]"):
    interop.torch_to_params(sd, like_params(cfg), source="a.params")
  sd = dict(m.state_dict(), **{"blocks.9.ln1.weight": torch.ones(cfg.n_embd)})
  with pytest.raises(UserError, match="'blocks.9.ln1.weight'.*n_layer="):
    interop.torch_to_params(sd, like_params(cfg))


def test_wrong_model_config_names_the_fix(saved):
  cfg, _, path, _ = saved
  bigger = dataclasses.replace(cfg, n_layer=cfg.n_layer + 1)
  with pytest.raises(UserError) as e:
    interop.load_torch_file(path, like_params(bigger))
  assert path in str(e.value) and f"--config.model.n_layer={cfg.n_layer}" in str(e.value)
  wider = dataclasses.replace(cfg, n_embd=48)
  with pytest.raises(UserError, match=r"has shape \[.*--config.model.n_embd=32"):
    interop.load_torch_file(path, like_params(wider))
  other = {"vanilla": TINY["perceiver"], "perceiver": TINY["vanilla"]}[cfg.variant]
  with pytest.raises(UserError, match=f"--config.model.variant={cfg.variant}"):
    interop.load_torch_file(path, like_params(other))
  if cfg.variant == "perceiver":
    with pytest.raises(UserError, match="--config.model.bottleneck_dim=4"):
      interop.load_torch_file(path, like_params(dataclasses.replace(cfg, bottleneck_dim=8)))


def test_unreadable_files_are_user_errors(tmp_path):
  like = like_params(TINY["vanilla"])
  with pytest.raises(UserError, match="no such file"):
    interop.load_torch_file(str(tmp_path / "nope.params"), like)
  bad = tmp_path / "bad.params"
  bad.write_bytes(b"not a torch file at all")
  with pytest.raises(UserError, match="cannot read the torch file"):
    interop.load_torch_file(str(bad), like)
  torch.save([1, 2, 3], str(tmp_path / "list.params"))
  with pytest.raises(UserError, match="expected a state dict"):
    interop.load_torch_file(str(tmp_path / "list.params"), like)


# ----------------------------------------------------------------------------- A5 size
@pytest.mark.parametrize("kw, count", [(dict(), 3323392),
                                       (dict(variant="perceiver", bottleneck_dim=64), 3339776)])
def test_a5_names_map_one_to_one(kw, count):
  cfg = model.ModelConfig(vocab_size=256, **kw)  # 4 layers, 8 heads, 256 dims, block 128
  m = torch_a5.GPT(torch_a5.gpt_config(cfg))
  sd = m.state_dict()
  like = flax.traverse_util.flatten_dict(like_params(cfg))
  shapes = {interop.torch_key(p): (tuple(v.shape)[::-1] if p[-1] == "kernel" else tuple(v.shape))
            for p, v in like.items()}
  weights = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith(".attn.mask")}
  assert len(shapes) == len(like) and shapes == weights
  assert sum(p.numel() for p in m.parameters()) == model.param_count(like) == count
  params = interop.torch_to_params(sd, like_params(cfg))
  assert list(interop.params_to_torch(params, cfg)) == list(sd)


# ----------------------------------------------------------------------------- CLI
def test_cli_export_of_an_orbax_checkpoint(tmp_path, capsys):
  cfg = TINY["perceiver"]
  rng = np.random.default_rng(5)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), jnp.float32),
                        like_params(cfg))
  fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "deterministic"}
  ckpt_dir = str(tmp_path / "checkpoints" / "finetune")
  state = {"params": params, "opt_state": {}, "step": jnp.int32(1), "tokens": jnp.int32(0)}
  ckpts = checkpoint.StageCheckpoints(ckpt_dir)
  ckpts.save(state, {"next_index": 0}, {"stage": "finetune", "model": fields})
  ckpts.close()
  out = str(tmp_path / "out.params")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "birthjax.interop", "export", ckpt_dir, f"--out={out}"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert "perceiver" in r.stdout
  m = torch_a5.GPT(torch_a5.gpt_config(cfg)).eval()
  m.load_state_dict(torch.load(out, weights_only=True), strict=True)
  idx = tokens(cfg, 3, cfg.block_size)
  assert np.abs(torch_logits(m, idx) - jax_logits(cfg, params, idx)).max() <= 1e-4

  # a --config that contradicts the checkpoint's own model config is refused (in process)
  assert cli.call(interop_cli.main, ["export", ckpt_dir, f"--out={out}",
                                     f"--config={ROOT}/configs/vanilla.py:smoke"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: the config's model differs") and "variant" in err and "\n" not in err


def test_cli_errors_are_one_line(tmp_path, capsys):
  assert cli.call(interop_cli.main, ["export", str(tmp_path / "none"), "--out=x.params"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: no checkpoint found") and "\n" not in err
  os.makedirs(tmp_path / "w" / "checkpoints")
  assert cli.call(interop_cli.main, ["export", str(tmp_path / "w"), "--out=x.params"]) == 1
  err = capsys.readouterr().err.strip()
  assert "workdir" in err and "checkpoints/finetune" in err and "\n" not in err
  for args, what in ((["import", "x"], "unknown subcommand 'import'"),
                     (["export"], "export takes one checkpoint folder, got 0"),
                     (["export", str(tmp_path / "w")], "--out is required")):
    assert cli.call(interop_cli.main, args) == 2  # usage errors
    err = capsys.readouterr().err
    assert err.startswith("error: ") and what in err and err.count("\n") == 1, err
  assert not os.path.exists(tmp_path / "none")  # probing creates no folder
  assert os.listdir(tmp_path / "w") == ["checkpoints"]


def test_missing_torch_is_a_user_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(UserError, match="pip install -r requirements-interop.txt"):
    interop.load_torch_file(str(tmp_path / "x.params"), like_params(TINY["vanilla"]))


def test_dev_answers_match_the_reference_evaluation(synthetic_dir):
  """decode.predict on real dev questions == the reference run.py evaluate loop
  (sample 32 greedy characters, answer = completion.split(MASK)[1]) on the same weights."""
  from birthjax.data import corpus
  from birthjax.data.vocab import MASK_CHAR, Vocab
  vocab = Vocab.from_documents(corpus.read_wiki(synthetic_dir))
  questions = corpus.read_eval(synthetic_dir, corpus.DEV)[0][:12]
  cfg = model.ModelConfig(vocab_size=len(vocab), n_layer=2, n_head=2, n_embd=32, block_size=48)
  m = torch_model(cfg, seed=5)
  params = interop.torch_to_params(m.state_dict(), like_params(cfg))
  got = decode.predict(params, cfg, vocab, questions, steps=32)
  want = []
  for q in questions:
    x = torch.tensor([vocab.stoi[c] for c in q + MASK_CHAR], dtype=torch.long)[None]
    completion = "".join(vocab.chars[int(i)] for i in torch_a5.sample(m, x, 32)[0])
    want.append(completion.split(MASK_CHAR)[1])
  assert got == want
  assert len(set(want)) > 1  # the answers differ: the check is not vacuous


def test_export_from_jax_arrays_does_not_alias_them():
  """The exported tensors own their memory: writing to one leaves the JAX parameters as they
  were (torch.from_numpy on a read-only view of a JAX buffer would write into it)."""
  cfg = TINY["vanilla"]
  params = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, jnp.float32), like_params(cfg))
  sd = interop.params_to_torch(params, cfg)
  for t in sd.values():
    t.add_(1.0)
  jax.tree.map(lambda p: np.testing.assert_array_equal(np.asarray(p), 0.5), params)
