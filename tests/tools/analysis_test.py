"""birthjax.tools.analysis (A5 written part 1, numerically) and birthjax.tools.complexity (FLOPs vs l)."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from birthjax.tools import analysis, cli, complexity

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_attend_hand_worked():
  keys = np.array([[1.0, 0.0], [0.0, 1.0]])
  values = np.array([[4.0, 0.0], [0.0, 8.0]])
  alpha, c = analysis.attend(np.array([math.log(3.0), 0.0]), keys, values)
  np.testing.assert_allclose(alpha, [0.75, 0.25], atol=1e-12)  # e^ln3 / (e^ln3 + e^0)
  np.testing.assert_allclose(c, [3.0, 2.0], atol=1e-12)


def test_copying_weight_grows_to_one():
  n = 8
  ortho = analysis.copying_curve([0.0, math.log(n - 1), 20.0], n=n, orthogonal=True)
  np.testing.assert_allclose(ortho, [1 / n, 0.5, math.exp(20) / (math.exp(20) + n - 1)], atol=1e-12)
  curve = analysis.copying_curve(np.linspace(0, 12, 25), n=n, d=64)
  assert np.all(np.diff(curve) > 0) and curve[-1] > 0.99


def test_averaging_error_falls_with_L():
  n = 8
  assert analysis.averaging_error(20.0, n=n) < 1e-3
  errs = [analysis.averaging_error(l, n=n) for l in (0.0, 5.0, 10.0, 20.0)]
  assert all(a > b for a, b in zip(errs, errs[1:]))
  # L = 0: uniform weights, c = mean of the values (same seed, same draws as the function)
  rng = np.random.default_rng(0)
  analysis.orthonormal(rng, 16, n)
  values = rng.standard_normal((n, 16))
  want = np.linalg.norm(values.mean(0) - (values[0] + values[1]) / 2)
  assert errs[0] == pytest.approx(want, rel=1e-12)


def test_projection_AAT_recovers_v_a_and_AT_gives_coordinates():
  a, b, v_a, v_b, x = analysis.projection_setup(d=12, m=3, p=4, seed=3)
  s = v_a + v_b
  np.testing.assert_allclose(a.T @ a, np.eye(3), atol=1e-12)
  np.testing.assert_allclose(a.T @ b, np.zeros((3, 4)), atol=1e-12)
  assert np.linalg.norm(a @ a.T @ s - v_a) < 1e-10
  assert np.linalg.norm(a @ a.T @ v_b) < 1e-10
  coords = a.T @ s
  assert coords.shape == (3,) and v_a.shape == (12,)
  np.testing.assert_allclose(coords, x, atol=1e-10)
  np.testing.assert_allclose(a @ coords, v_a, atol=1e-10)
  res = analysis.projection_residuals(trials=10)
  assert res["AAT"].max() < 1e-10 and res["AT_coords"].max() < 1e-10
  assert res["identity"].min() > 0.1  # M = I keeps v_b


def test_two_head_tail_probability():
  # Phi((ln 7 / 20 - 1) / sqrt(1/2)) = Phi(-1.2766) = 0.1009; L -> inf: Phi(-sqrt 2) = 0.0786
  assert analysis.two_head_tail(8, 20.0) == pytest.approx(0.1009, abs=5e-4)
  assert analysis.two_head_tail(8, 1e9) == pytest.approx(0.0786, abs=5e-4)


@functools.lru_cache(maxsize=None)
def _noise():
  return analysis.key_noise(n=8, length_scale=20.0, samples=2000)


def test_key_noise_single_head_flips_two_heads_average():
  gamma, single, two = _noise()
  assert gamma.mean() == pytest.approx(1.0, abs=0.05) and gamma.var() == pytest.approx(0.5, abs=0.05)
  assert np.mean(single < 0.25) > 0.3 and np.mean(single > 0.75) > 0.3
  assert np.median(two) == pytest.approx(0.5, abs=1e-6)
  mad = lambda v: np.median(np.abs(v - np.median(v)))
  assert mad(two) * 10 < mad(single)
  # The brief's 10x-smaller std holds where head 1 still finds k_a (L gamma > ln 7 + 3) ...
  ok = 20.0 * gamma > math.log(7) + 3
  assert two[ok].std() * 10 < single[ok].std()
  # ... but over all samples only ~3x: ~10% have gamma < ln 7 / 20 and the v_a weight drops to ~0.
  assert 2.5 < single.std() / two.std() < 10
  assert np.mean(two < 0.25) == pytest.approx(analysis.two_head_tail(8, 20.0), abs=0.03)


def test_attention_cli_writes_pngs(tmp_path, capsys):
  out = tmp_path / "new" / "figs"
  assert cli.call(analysis.main, ["attention", f"--out={out}"]) == 0
  printed = capsys.readouterr().out
  assert "A A^T is right" in printed and "two heads" in printed
  names = ["attention_a_copying.png", "attention_b_averaging.png", "attention_c_projection.png",
           "attention_d_key_noise.png"]
  for name in names:
    data = (out / name).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
  assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary files left


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
  def error(*args):
    code, err = cli.call(analysis.main, list(args)), capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return code, err

  code, err = error("complexity", f"--out={tmp_path}", "--lengths=64,abc")
  assert code == 1 and err.startswith("error: bad --lengths")
  blocker = tmp_path / "file"
  blocker.write_text("x")
  code, err = error("attention", f"--out={blocker}")
  assert code == 1 and "cannot create the output folder" in err
  # usage errors: exit 2, nothing written
  code, err = error("attention")
  assert code == 2 and "--out is required" in err and "fix: pass --out=DIR" in err
  code, err = error("plots", f"--out={tmp_path}")
  assert code == 2 and "unknown subcommand 'plots'" in err and "attention, complexity" in err
  code, err = error(f"--out={tmp_path}")
  assert code == 2 and "no subcommand" in err
  code, err = error("complexity", f"--out={tmp_path}", "--m=abc")
  assert code == 2 and "--m=abc" in err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# Complexity: D = 128, 4 heads, 4 layers, m = 16, vocab 64; one compile per (variant, l, layers).
TINY = dict(m=16, n_embd=128, n_head=4, vocab=64)


@functools.lru_cache(maxsize=None)
def _measured(variant, length, n_layer=4):
  cfg = complexity.sweep_config(variant, length, n_layer=n_layer, **TINY)
  return complexity.forward_cost(cfg)[1], complexity.closed_form(cfg, length)


def test_closed_form_hand_worked():
  # vanilla, D = 4, V = 2, L = 1, l = 3: 24*3*16 + 4*9*4 + 2*3*4*2 = 1152 + 144 + 48
  cfg = complexity.sweep_config("vanilla", 3, m=2, n_layer=1, n_embd=4, n_head=1, vocab=2)
  assert complexity.closed_form(cfg, 3) == 1344
  assert complexity.block_flops(2, 3, 4) == 20 * 2 * 16 + 4 * 3 * 16 + 4 * 2 * 3 * 4


@pytest.mark.parametrize("variant", complexity.VARIANTS)
def test_closed_form_matches_xla_within_15_percent(variant):
  measured, closed = _measured(variant, 128)
  assert closed <= measured <= 1.15 * closed  # XLA adds elementwise work (~8% at D = 128)


def test_vanilla_superlinear_perceiver_linear_in_l():
  van = [_measured("vanilla", l)[0] for l in (128, 256, 512)]
  per = [_measured("perceiver", l)[0] for l in (128, 256, 512)]
  assert van[1] / van[0] > 2.15 and van[2] / van[1] > van[1] / van[0]  # closed form: 2.29x, 2.5x
  assert per[1] / per[0] < 2 and per[2] / per[1] < 2
  # linear: equal steps in l add equal FLOPs (F(512) - F(256) = 2 (F(256) - F(128)))
  assert (per[2] - per[1]) / (per[1] - per[0]) == pytest.approx(2.0, rel=0.01)
  assert (van[2] - van[1]) / (van[1] - van[0]) > 2.3
  # one middle (latent) layer costs the same at l = 128 and 256: it depends on m only
  mid = [_measured("perceiver", l)[0] - _measured("perceiver", l, n_layer=3)[0] for l in (128, 256)]
  assert mid[0] > 0 and mid[1] == pytest.approx(mid[0], rel=1e-3)


def test_sweep_plot_is_a_png(tmp_path):
  rows = [(v, l, 1.1 * f, f) for v, k in (("vanilla", 2), ("perceiver", 1)) for l, f in
          ((64, 1e6 * k), (128, 2.2e6 * k))]
  assert "| vanilla | 128 | 4.8 | 4.4 | 1.100 | 2.20x |" in complexity.sweep_table(rows)
  path = analysis.save_png(complexity.plot_sweep(rows, "test"), str(tmp_path / "c.png"))
  data = open(path, "rb").read()
  assert data[:8] == PNG_MAGIC and len(data) > 10_000
