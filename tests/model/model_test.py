"""Tests for birthjax.model.model: the A5 GPT's parameters, init, numerics (vs numpy), causality, dropout."""
import dataclasses
import math


import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from birthjax.model import layers, model

TINY = model.ModelConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=32, block_size=16)


def _np_erf(x):
    return np.vectorize(math.erf)(x)


def _np_gelu_erf(x):
    return 0.5 * x * (1.0 + _np_erf(x / np.sqrt(2.0)))


def _np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _np_ln(x, scale, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _np_gpt(params, idx, cfg):
    """The A5 reference's GPT.forward (eval mode) in float64 numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    b, t = idx.shape
    h, d = cfg.n_head, cfg.n_embd
    x = p["tok_emb"]["embedding"][idx] + p["pos_emb"][:, :t]
    causal = np.tril(np.ones((t, t), bool))
    for i in range(cfg.n_layer):
        blk = p[f"blocks_{i}"]
        a = _np_ln(x, blk["ln1"]["scale"], blk["ln1"]["bias"])
        lin = lambda m, z: z @ blk["attn"][m]["kernel"] + blk["attn"][m]["bias"]
        split = lambda z: z.reshape(b, t, h, d // h).transpose(0, 2, 1, 3)
        q, k, v = split(lin("query", a)), split(lin("key", a)), split(lin("value", a))
        att = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(d // h))
        att = np.where(causal, att, -1e10)
        att = np.exp(att - att.max(-1, keepdims=True))
        att = att / att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + lin("proj", y)
        m = _np_ln(x, blk["ln2"]["scale"], blk["ln2"]["bias"])
        m = _np_gelu_erf(m @ blk["mlp"]["fc"]["kernel"] + blk["mlp"]["fc"]["bias"])
        x = x + m @ blk["mlp"]["proj"]["kernel"] + blk["mlp"]["proj"]["bias"]
    x = _np_ln(x, p["ln_f"]["scale"], p["ln_f"]["bias"])
    return x @ p["head"]["kernel"]


def _randomize(params, seed, scale=0.3):
    """Every leaf replaced by N(0, scale^2) (plus 1 for LN scales), so biases/pos_emb matter."""
    flat = flax.traverse_util.flatten_dict(params)
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in flat.items():
        r = rng.normal(0.0, scale, v.shape).astype(np.float32)
        out[k] = jnp.asarray(r + (1.0 if k[-1] == "scale" else 0.0))
    return flax.traverse_util.unflatten_dict(out)


@pytest.fixture(scope="module")
def tiny_params():
    return model.init_params(TINY, jax.random.key(0))


@pytest.fixture(scope="module")
def tiny_apply():
    net = model.build(TINY)
    return jax.jit(lambda params, idx: net.apply({"params": params}, idx))


# ----------------------------------------------------------------------------- structure
def _full_shapes():
    cfg = model.ModelConfig(vocab_size=256)
    x = jax.ShapeDtypeStruct((1, cfg.block_size), jnp.int32)
    return jax.eval_shape(model.build(cfg).init, jax.random.key(0), x)["params"]


def test_full_config_param_count():
    shapes = _full_shapes()
    assert model.param_count(shapes) == 3323392
    assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == 3323392


def test_full_config_param_names_and_shapes():
    flat = {"/".join(k): tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(_full_shapes()).items()}
    expected = {"tok_emb/embedding": (256, 256), "pos_emb": (1, 128, 256),
                "ln_f/scale": (256,), "ln_f/bias": (256,), "head/kernel": (256, 256)}
    for i in range(4):
        b = f"blocks_{i}"
        for ln in ("ln1", "ln2"):
            expected[f"{b}/{ln}/scale"] = (256,)
            expected[f"{b}/{ln}/bias"] = (256,)
        for m in ("query", "key", "value", "proj"):
            expected[f"{b}/attn/{m}/kernel"] = (256, 256)
            expected[f"{b}/attn/{m}/bias"] = (256,)
        expected[f"{b}/mlp/fc/kernel"] = (256, 1024)
        expected[f"{b}/mlp/fc/bias"] = (1024,)
        expected[f"{b}/mlp/proj/kernel"] = (1024, 256)
        expected[f"{b}/mlp/proj/bias"] = (256,)
    assert flat == expected
    assert "head/bias" not in flat


def test_config_defaults_are_a5():
    c = model.ModelConfig(vocab_size=256)
    assert (c.variant, c.n_layer, c.n_head, c.n_embd, c.block_size, c.dropout) == \
        ("vanilla", 4, 8, 256, 128, 0.1)
    assert c.deterministic is True


# ----------------------------------------------------------------------------- init
@pytest.fixture(scope="module")
def tiny_flat(tiny_params):
    return flax.traverse_util.flatten_dict(tiny_params)


def test_init_zeros_and_ones(tiny_flat):
    assert np.all(np.asarray(tiny_flat[("pos_emb",)]) == 0.0)
    n_bias = n_scale = 0
    for k, v in tiny_flat.items():
        v = np.asarray(v)
        if k[-1] == "bias":
            n_bias += 1
            assert np.all(v == 0.0), k
        if k[-1] == "scale":
            n_scale += 1
            assert np.all(v == 1.0), k
    assert n_bias == TINY.n_layer * (2 + 4 + 2) + 1  # ln1, ln2; q, k, v, proj; fc, proj; ln_f
    assert n_scale == 2 * TINY.n_layer + 1


def test_init_normal_002(tiny_flat):
    names = [k for k in tiny_flat if k[-1] in ("kernel", "embedding")]
    assert len(names) == 1 + TINY.n_layer * (4 + 2) + 1  # tok_emb; q,k,v,proj; fc,proj; head
    for k in names:
        v = np.asarray(tiny_flat[k], np.float64)
        assert v.size >= 32 * 32
        assert abs(v.std() - 0.02) < 0.0015, (k, v.std())
        assert abs(v.mean()) < 0.002, (k, v.mean())
        # plain normal, not truncated at 2 std
        assert np.abs(v).max() > 2.5 * 0.02, k


# ----------------------------------------------------------------------------- numerics
def test_layernorms_use_eps_1e5():
    seen = []

    def spy(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.LayerNorm):
            seen.append((context.module.name, context.module.epsilon))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spy):
        jax.eval_shape(model.build(TINY).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    names = sorted({n for n, _ in seen})
    assert names == ["ln1", "ln2", "ln_f"]
    assert {e for _, e in seen} == {1e-5}
    assert len([n for n, _ in seen if n != "ln_f"]) >= 2 * TINY.n_layer


def test_final_layernorm_eps_numerically():
    # n_layer=0: logits = LN_f(tok_emb[idx] + pos) @ head. With head = I the logits are LN_f.
    cfg = model.ModelConfig(vocab_size=16, n_layer=0, n_head=2, n_embd=16, block_size=4)
    params = model.init_params(cfg, jax.random.key(0))
    tiny = 1e-3 * np.where(np.arange(16) % 2 == 0, 1.0, -1.0)  # variance 1e-6
    emb = np.zeros((16, 16), np.float32)
    emb[3] = tiny + 0.5
    params = dict(params, head={"kernel": jnp.eye(16)},
                  tok_emb={"embedding": jnp.asarray(emb)})
    out = np.asarray(model.build(cfg).apply({"params": params}, jnp.array([[3, 3]])))[0, 0]
    ones, zeros = np.ones(16), np.zeros(16)
    want = _np_ln(emb[3].astype(np.float64), ones, zeros, eps=1e-5)
    flax_default = _np_ln(emb[3].astype(np.float64), ones, zeros, eps=1e-6)
    assert np.abs(want - flax_default).max() > 0.1  # the check can tell the two apart
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-4)


def test_mlp_uses_exact_erf_gelu():
    cfg = model.ModelConfig(vocab_size=8, n_layer=1, n_head=2, n_embd=8, block_size=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8)).astype(np.float32)
    p = {"fc": {"kernel": rng.normal(0, 0.6, (8, 32)).astype(np.float32),
                "bias": rng.normal(0, 0.5, (32,)).astype(np.float32)},
         "proj": {"kernel": rng.normal(0, 0.5, (32, 8)).astype(np.float32),
                  "bias": rng.normal(0, 0.5, (8,)).astype(np.float32)}}
    out = np.asarray(layers.MLP(cfg).apply({"params": p}, jnp.asarray(x)))
    h = x.astype(np.float64) @ p["fc"]["kernel"] + p["fc"]["bias"]
    want = _np_gelu_erf(h) @ p["proj"]["kernel"] + p["proj"]["bias"]
    tanh = _np_gelu_tanh(h) @ p["proj"]["kernel"] + p["proj"]["bias"]
    assert np.abs(want - tanh).max() > 1e-3  # the check can tell the two apart
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=2e-5)


def test_forward_matches_numpy_reference(tiny_apply, tiny_params):
    params = _randomize(tiny_params, seed=0)
    idx = np.random.default_rng(0).integers(0, TINY.vocab_size, (3, TINY.block_size))
    out = np.asarray(tiny_apply(params, jnp.asarray(idx)))
    assert out.shape == (3, TINY.block_size, TINY.vocab_size)
    np.testing.assert_allclose(out, _np_gpt(params, idx, TINY), rtol=1e-4, atol=1e-4)
    # shorter than block_size: the first t position embeddings
    short = np.asarray(model.build(TINY).apply({"params": params}, jnp.asarray(idx[:, :5])))
    np.testing.assert_allclose(short, _np_gpt(params, idx[:, :5], TINY), rtol=1e-4, atol=1e-4)


def test_rows_are_independent(tiny_apply, tiny_params):
    params = _randomize(tiny_params, seed=1)
    idx = np.random.default_rng(1).integers(0, TINY.vocab_size, (4, TINY.block_size))
    full = np.asarray(tiny_apply(params, jnp.asarray(idx)))
    other = idx.copy()
    other[1:] = (other[1:] + 5) % TINY.vocab_size
    part = np.asarray(tiny_apply(params, jnp.asarray(other)))
    np.testing.assert_allclose(part[0], full[0], rtol=1e-5, atol=1e-6)
    assert np.abs(part[1:] - full[1:]).max() > 1e-3


# ----------------------------------------------------------------------------- causality
def _pos_grad_fn(params, idx):
    """(pos, t) -> d sum(logits[:, t]) / d pos_emb: pos_emb[0, j] enters position j only."""
    net = model.build(TINY)

    def f(pos, t):
        p = dict(params, pos_emb=pos)
        return jnp.take(net.apply({"params": p}, idx), t, axis=1).sum()

    return jax.grad(f)


def _norms(g, t_len):
    return np.asarray(jnp.sqrt(jnp.sum(g[0] ** 2, axis=-1)))[:t_len]


@pytest.mark.parametrize("use_jit", [True, False])
def test_causal_by_gradients(tiny_params, use_jit):
    params = _randomize(tiny_params, seed=2)
    idx = jnp.asarray(np.random.default_rng(2).integers(0, TINY.vocab_size, (2, TINY.block_size)))
    grad = _pos_grad_fn(params, idx)
    if use_jit:
        grad = jax.jit(grad)
    # op-by-op (no jit) is slow: one position there, several under jit
    for t in ((0, 6, TINY.block_size - 1) if use_jit else (6,)):
        norms = _norms(grad(params["pos_emb"], t), TINY.block_size)
        assert np.all(norms[t + 1:] == 0.0), (t, norms)
        assert np.all(norms[:t + 1] > 1e-6), (t, norms)


@pytest.mark.parametrize("use_jit", [True, False])
def test_causal_by_perturbation(tiny_apply, tiny_params, use_jit):
    params = _randomize(tiny_params, seed=3)
    apply = tiny_apply if use_jit else (lambda p, i: model.build(TINY).apply({"params": p}, i))
    idx = np.random.default_rng(3).integers(0, TINY.vocab_size, (1, TINY.block_size))
    base = np.asarray(apply(params, jnp.asarray(idx)))
    for j in (0, 5, TINY.block_size - 1):
        pert = idx.copy()
        pert[0, j] = (pert[0, j] + 7) % TINY.vocab_size
        out = np.asarray(apply(params, jnp.asarray(pert)))
        diff = np.abs(out - base).max(-1)[0]  # [T]
        np.testing.assert_array_equal(out[0, :j], base[0, :j])  # t < j unchanged, bitwise
        assert np.all(diff[j:] > 1e-4), (j, diff)  # t >= j changes


# ----------------------------------------------------------------------------- dropout
def test_dropout_deterministic_and_stochastic(tiny_apply, tiny_params):
    params = _randomize(tiny_params, seed=4)
    idx = jnp.asarray(np.random.default_rng(4).integers(0, TINY.vocab_size, (2, TINY.block_size)))

    def runner(cfg):
        net = model.build(cfg)
        return jax.jit(lambda p, i, key: net.apply({"params": p}, i, rngs={"dropout": key}))

    det = runner(TINY)  # deterministic=True (the default): rngs are ignored
    a = np.asarray(tiny_apply(params, idx))
    np.testing.assert_array_equal(np.asarray(tiny_apply(params, idx)), a)
    np.testing.assert_allclose(np.asarray(det(params, idx, jax.random.key(2))), a, rtol=1e-6, atol=1e-6)
    train = runner(dataclasses.replace(TINY, deterministic=False))
    d1 = np.asarray(train(params, idx, jax.random.key(1)))
    d1b = np.asarray(train(params, idx, jax.random.key(1)))
    d2 = np.asarray(train(params, idx, jax.random.key(2)))
    np.testing.assert_array_equal(d1, d1b)
    assert np.abs(d1 - d2).max() > 1e-3
    assert np.abs(d1 - a).max() > 1e-3
    with pytest.raises(flax.errors.InvalidRngError):  # training mode needs a dropout rng
        model.build(dataclasses.replace(TINY, deterministic=False)).apply({"params": params}, idx)
