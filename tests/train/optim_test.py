"""Tests for birthjax.train.optim (A5 lr schedule, weight-decay masks, clipped AdamW) and train.train_step."""
import dataclasses
import math


import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from birthjax.model import loss, model
from birthjax.train import optim, train
from birthjax import sharding

# The A5 pretraining settings: warmup 512*20 tokens, final 200 * len(dataset) * block_size.
WARM, FINAL = 10240, 200 * 2938 * 128
A5 = dict(warmup_tokens=WARM, final_tokens=FINAL)


def _mult(tokens, **kw):
    return float(optim.lr_multiplier(tokens, **{**A5, **kw}))


def _tokens_at(progress):
    return WARM + progress * (FINAL - WARM)


# ----------------------------------------------------------------------------- lr schedule
def test_final_tokens_value():
    assert FINAL == 75212800


def test_first_step_full_rate():
    assert _mult(0) == 1.0
    assert _mult(0, first_step_full=False) == 0.0


def test_warmup_is_linear_in_tokens():
    np.testing.assert_allclose(_mult(5120), 0.5, rtol=1e-6)
    np.testing.assert_allclose(_mult(1024), 0.1, rtol=1e-6)
    np.testing.assert_allclose(_mult(5120, first_step_full=False), 0.5, rtol=1e-6)
    np.testing.assert_allclose(_mult(10239), 10239 / 10240, rtol=1e-6)
    # at the boundary the cosine takes over with progress 0
    assert _mult(WARM) == pytest.approx(1.0, abs=1e-6)


def test_after_one_a5_batch():
    tokens = 128 * 127  # one batch of 128 rows of block_size - 1 targets
    assert tokens == 16256
    want = 0.5 * (1 + math.cos(math.pi * (16256 - 10240) / (75212800 - 10240)))
    np.testing.assert_allclose(_mult(tokens), want, rtol=1e-6)


@pytest.mark.parametrize("progress,want", [
    (0.25, 0.5 * (1 + math.cos(math.pi / 4))),
    (0.5, 0.5),
    (0.75, 0.5 * (1 + math.cos(0.75 * math.pi))),
])
def test_cosine_midway(progress, want):
    np.testing.assert_allclose(_mult(_tokens_at(progress)), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("progress", [0.8, 0.9, 1.0, 1.1, 1.2])
def test_floor_of_0_1(progress):
    np.testing.assert_allclose(_mult(_tokens_at(progress)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(_mult(_tokens_at(progress), clamp=True), 0.1, rtol=1e-6)


def test_unclamped_schedule_comes_back_up():
    two = WARM + 2 * (FINAL - WARM)
    np.testing.assert_allclose(_mult(two), 1.0, atol=1e-5)
    np.testing.assert_allclose(_mult(_tokens_at(1.5)), 0.5, atol=1e-5)
    np.testing.assert_allclose(_mult(two, clamp=True), 0.1, rtol=1e-6)
    np.testing.assert_allclose(_mult(_tokens_at(1.5), clamp=True), 0.1, rtol=1e-6)
    # clamped and unclamped agree up to progress 1
    for p in (0.1, 0.6, 0.99):
        assert _mult(_tokens_at(p), clamp=True) == _mult(_tokens_at(p))


def test_epoch_story_of_the_a5_readme():
    per_epoch = 2938 * 127  # every target position of every row, PAD included
    epochs = np.arange(0, 700)
    m = np.asarray(optim.lr_multiplier(jnp.asarray(epochs * per_epoch, jnp.float32), **A5))
    first_floor = int(np.argmax(m <= 0.1 + 1e-6))
    assert 158 <= first_floor <= 163, first_floor
    # analytically: cos(pi p) = -0.8 -> p = acos(-0.8)/pi
    p_floor = math.acos(-0.8) / math.pi
    assert first_floor == math.ceil((WARM + p_floor * (FINAL - WARM)) / per_epoch)
    later = epochs > first_floor
    peak = int(epochs[later][np.argmax(m[later])])
    assert 395 <= peak <= 410, peak
    assert m[peak] > 0.999
    assert m[peak] == pytest.approx(1.0, abs=1e-3)
    assert np.all(m[first_floor:(first_floor + 80)] == pytest.approx(0.1))  # a long floor
    # The A5 pretraining runs 650 epochs: the rate goes back down towards the floor at the end.
    assert m[650] < 0.2


def test_matches_the_reference_trainer_loop():
    """trainer.py: lr of step 1 is the initial lr, then updated after each step from tokens."""
    warm, final, base = 300, 3000, 6e-3
    sizes = [128 * 15] * 5 + [7 * 15] + [128 * 15] * 8  # includes a short last batch
    tokens, ref_lr, ours = 0, base, []
    for size in sizes:
        ours.append(base * float(optim.lr_multiplier(tokens, warmup_tokens=warm, final_tokens=final)))
        np.testing.assert_allclose(ours[-1], ref_lr, rtol=1e-5)
        tokens += size  # (y >= 0).sum(): every position, PAD included
        if tokens < warm:
            mult = tokens / max(1, warm)
        else:
            progress = (tokens - warm) / max(1, final - warm)
            mult = max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))
        ref_lr = base * mult


# ----------------------------------------------------------------------------- decay masks
def _gpt_shapes():
    cfg = model.ModelConfig(vocab_size=12, n_layer=2, n_head=2, n_embd=8, block_size=8)
    x = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]


def test_decay_mask_a5():
    mask = flax.traverse_util.flatten_dict(optim.decay_mask(_gpt_shapes(), "a5"))
    for k, v in mask.items():
        assert v == (k[-1] != "bias"), k
    for k in [("pos_emb",), ("tok_emb", "embedding"), ("head", "kernel"), ("ln_f", "scale"),
              ("blocks_0", "ln1", "scale"), ("blocks_1", "attn", "query", "kernel"),
              ("blocks_0", "mlp", "fc", "kernel")]:
        assert mask[k] is True, k
    for k in [("ln_f", "bias"), ("blocks_0", "ln2", "bias"), ("blocks_1", "attn", "proj", "bias"),
              ("blocks_0", "mlp", "fc", "bias")]:
        assert mask[k] is False, k
    assert sum(mask.values()) == 2 + 1 + 2 * (2 + 4 + 2) + 1  # pos, tok, per block, ln_f scale+head


def test_decay_mask_clean():
    mask = flax.traverse_util.flatten_dict(optim.decay_mask(_gpt_shapes(), "clean"))
    for k, v in mask.items():
        assert v == (k[-1] == "kernel"), k
    assert mask[("pos_emb",)] is False and mask[("tok_emb", "embedding")] is False
    assert mask[("ln_f", "scale")] is False and mask[("head", "kernel")] is True


def test_unknown_rule():
    with pytest.raises(ValueError):
        optim.decay_mask(_gpt_shapes(), "torch")
    with pytest.raises(ValueError):
        optim.make_optimizer(decay_rule="torch")


# ----------------------------------------------------------------------------- AdamW
def _toy():
    rng = np.random.default_rng(0)
    shapes = {"dense": {"kernel": (3, 2), "bias": (2,)}, "ln": {"scale": (2,), "bias": (2,)},
              "tok_emb": {"embedding": (4, 2)}, "pos_emb": (1, 3, 2)}
    params = jax.tree.map(lambda s: rng.normal(0, 1, s).astype(np.float32), shapes,
                          is_leaf=lambda s: isinstance(s, tuple))
    return params, rng


def _np_adamw(params, grads_seq, lrs, mask, *, wd=0.1, b1=0.9, b2=0.95, eps=1e-8, clip=1.0):
    """torch.optim.AdamW after torch.nn.utils.clip_grad_norm_(..., clip), in float64."""
    flat = {k: np.asarray(v, np.float64) for k, v in flax.traverse_util.flatten_dict(params).items()}
    mflat = flax.traverse_util.flatten_dict(mask)
    m = {k: np.zeros_like(v) for k, v in flat.items()}
    v2 = {k: np.zeros_like(v) for k, v in flat.items()}
    for step, (grads, lr) in enumerate(zip(grads_seq, lrs), start=1):
        g = {k: np.asarray(x, np.float64) for k, x in flax.traverse_util.flatten_dict(grads).items()}
        if clip is not None:
            norm = math.sqrt(sum(float((x ** 2).sum()) for x in g.values()))
            coef = min(1.0, clip / (norm + 1e-6))
            g = {k: x * coef for k, x in g.items()}
        for k in flat:
            if mflat[k]:
                flat[k] = flat[k] * (1 - lr * wd)
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            mhat, vhat = m[k] / (1 - b1 ** step), v2[k] / (1 - b2 ** step)
            flat[k] = flat[k] - lr * mhat / (np.sqrt(vhat) + eps)
    return flax.traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="module")
def toy_run():
    params, rng = _toy()
    norms = [5.0, 0.3, 3.0]  # > 1, < 1, > 1: clipping matters for the later Adam moments
    grads_seq = []
    for n in norms:
        g = jax.tree.map(lambda p: rng.normal(0, 1, p.shape).astype(np.float32), params)
        total = math.sqrt(sum(float((x ** 2).sum()) for x in jax.tree.leaves(g)))
        grads_seq.append(jax.tree.map(lambda x: (x * n / total).astype(np.float32), g))
    lrs = [1e-2, 5e-3, 2e-2]
    return params, grads_seq, lrs


def _optax_run(params, grads_seq, lrs, rule):
    tx = optim.make_optimizer(weight_decay=0.1, decay_rule=rule, grad_clip=1.0)

    @jax.jit
    def step(p, s, g, lr):
        s = optim.set_lr(s, lr)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = jax.tree.map(jnp.asarray, params), tx.init(params)
    for g, lr in zip(grads_seq, lrs):
        p, s = step(p, s, g, jnp.float32(lr))
    return p, s


def _max_diff(a, b):
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("rule", ["a5", "clean"])
def test_adamw_matches_torch_semantics(toy_run, rule):
    params, grads_seq, lrs = toy_run
    got, _ = _optax_run(params, grads_seq, lrs, rule)
    mask = optim.decay_mask(params, rule)
    want = _np_adamw(params, grads_seq, lrs, mask)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert _max_diff(got, want) < 2e-6
    # The check can tell: without clipping, without decay, with decay everywhere, fixed lr.
    assert _max_diff(got, _np_adamw(params, grads_seq, lrs, mask, clip=None)) > 1e-4
    assert _max_diff(got, _np_adamw(params, grads_seq, lrs, mask, wd=0.0)) > 1e-4
    everywhere = jax.tree.map(lambda _: True, mask)
    assert _max_diff(got, _np_adamw(params, grads_seq, lrs, everywhere)) > 1e-4
    assert _max_diff(got, _np_adamw(params, grads_seq, [lrs[0]] * 3, mask)) > 1e-4


def test_first_step_is_signlike_and_decay_only_on_masked(toy_run):
    # One step from zero moments: p -= lr*wd*p (masked) + lr * g/(|g| + eps).
    params, grads_seq, _ = toy_run
    lr = 1e-2
    got, s = _optax_run(params, grads_seq[:1], [lr], "a5")
    fg = flax.traverse_util.flatten_dict(grads_seq[0])
    for k, p0 in flax.traverse_util.flatten_dict(params).items():
        p0 = np.asarray(p0, np.float64)
        g = fg[k] / 5.0  # clipped from norm 5 to 1
        decay = 0.0 if k[-1] == "bias" else 0.1
        want = p0 - lr * decay * p0 - lr * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(np.asarray(flax.traverse_util.flatten_dict(got)[k]), want,
                                   rtol=1e-6, atol=1e-7)


def test_set_lr_changes_the_rate(toy_run):
    params, grads_seq, _ = toy_run
    tx = optim.make_optimizer()
    s = tx.init(params)
    assert float(s[1].hyperparams["learning_rate"]) == 0.0  # train_step always sets it
    s2 = optim.set_lr(s, 3e-3)
    assert float(s2[1].hyperparams["learning_rate"]) == pytest.approx(3e-3)
    assert float(s[1].hyperparams["learning_rate"]) == 0.0  # not mutated
    upd = jax.jit(lambda lr: tx.update(grads_seq[0], optim.set_lr(s, lr), params)[0])
    u1, u2, u0 = upd(1e-3), upd(2e-3), upd(0.0)
    for a, b, z in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), jax.tree.leaves(u0)):
        np.testing.assert_allclose(np.asarray(b), 2 * np.asarray(a), rtol=1e-5)
        assert np.all(np.asarray(z) == 0.0)
        assert np.abs(np.asarray(a)).max() > 1e-4


# ----------------------------------------------------------------------------- train step
# Dropout off (deterministic) keeps the train-step compiles cheap and the comparisons exact.
CFG = model.ModelConfig(vocab_size=24, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1,
                        deterministic=True)
OPT = optim.Settings()
SCHED = optim.Schedule(500.0, 5000.0)
BASE_LR = 1e-2
T = CFG.block_size - 1


def _batch(rows, real=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(2, CFG.vocab_size, (rows, T)).astype(np.int32)
    y = rng.integers(2, CFG.vocab_size, (rows, T)).astype(np.int32)
    y[:, -4:] = 0  # PAD targets inside real rows: ignored by the loss, counted as tokens
    row_mask = np.ones(rows, bool)
    if real is not None:
        x[real:], y[real:], row_mask[real:] = 0, 0, False
    return {"x": x, "y": y, "row_mask": row_mask}


_INIT = {}


def _init_params(cfg):
    """Initial params on the host (cached): every run gets fresh device buffers to donate."""
    key = dataclasses.replace(cfg, deterministic=True)
    if key not in _INIT:
        _INIT[key] = jax.device_get(model.init_params(cfg, jax.random.key(0)))
    return _INIT[key]


def _run(mesh, batches, cfg=CFG):
    params = _init_params(cfg)
    state = jax.device_put(train.init_state(params, OPT.make()), sharding.replicated(mesh))
    step = train.compile_train_step(mesh, model_cfg=cfg, opt=OPT, base_lr=BASE_LR, schedule=SCHED)
    seed_key = jax.random.key(7)
    out = []
    for b in batches:
        state, m = step(state, sharding.put_batch(b, mesh), seed_key)
        out.append(jax.device_get(m))
    return jax.device_get(state), out


def _one_device_mesh():
    return jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))


@pytest.fixture(scope="module")
def runs():
    assert len(jax.devices()) == 4  # tests/conftest.py
    batches = [_batch(8, seed=s) for s in range(3)]
    return (_run(sharding.make_mesh(), batches), _run(_one_device_mesh(), batches), batches)


def test_mesh_4_equals_mesh_1(runs):
    (s4, m4), (s1, m1), _ = runs
    for a, b in zip(m4, m1):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-6)
        np.testing.assert_allclose(a["lr"], b["lr"], rtol=1e-7)
    for a, b in zip(jax.tree.leaves(s4["params"]), jax.tree.leaves(s1["params"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    p0 = _init_params(CFG)
    assert _max_diff(s4["params"], p0) > 1e-3  # it did train


def test_step_metrics_lr_and_tokens(runs):
    (s4, m4), _, _ = runs
    assert float(m4[0]["lr"]) == pytest.approx(BASE_LR, rel=1e-7)  # first step: full rate
    for i, m in enumerate(m4):
        assert int(m["tokens"]) == 8 * T
        want = BASE_LR * float(SCHED.multiplier(i * 8 * T))
        assert float(m["lr"]) == pytest.approx(want, rel=1e-6)
    assert float(m4[1]["lr"]) == pytest.approx(BASE_LR * 120 / 500, rel=1e-6)  # warmup
    assert float(s4["tokens"]) == 3 * 8 * T
    assert int(s4["step"]) == 3


def test_loss_and_grad_norm_are_the_models(runs):
    """Step 0's loss / grad_norm = mean CE over non-PAD targets of the model, and its gradient."""
    (_, m4), _, batches = runs
    net = model.build(CFG)
    b = batches[0]
    f = jax.jit(jax.value_and_grad(
        lambda p: loss.mean_cross_entropy(net.apply({"params": p}, b["x"]), b["y"])))
    value, grads = f(_init_params(CFG))
    np.testing.assert_allclose(m4[0]["loss"], float(value), rtol=1e-5)
    norm = math.sqrt(sum(float((np.asarray(g, np.float64) ** 2).sum()) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(m4[0]["grad_norm"], norm, rtol=1e-5)
    assert abs(float(value) - math.log(CFG.vocab_size)) < 0.3  # ~uniform at init


def test_padded_rows_add_nothing():
    padded = _batch(4, real=3, seed=5)
    assert list(padded["row_mask"]) == [True, True, True, False]
    three = {k: v[:3] for k, v in padded.items()}
    s4, (m4,) = _run(sharding.make_mesh(), [padded])
    s1, (m1,) = _run(_one_device_mesh(), [three])
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-6)
    assert int(m4["tokens"]) == int(m1["tokens"]) == 3 * T  # PAD targets of real rows counted
    assert float(s4["tokens"]) == 3 * T
    for a, b in zip(jax.tree.leaves(s4["params"]), jax.tree.leaves(s1["params"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
