"""Numerical checks of the CS224N A5 written part 1 (attention exploration) and the measured
forward cost of the three variants; each writes one PNG plot.

  python -m birthjax.analysis attention --out=DIR
  python -m birthjax.analysis complexity --out=DIR [--lengths=64,128,256,512,1024] [--m=32]
      [--n_layer=4] [--n_embd=256] [--batch=1]

Attention here is the handout's single head, unscaled: alpha = softmax_i(k_i . q),
c = sum_i alpha_i v_i. Every experiment is a small pure numpy function (float64, seeded RNG,
deterministic) that the tests call; the CLI runs them, prints a summary and plots.

a. Copying: with q = s k_j, alpha_j -> 1 as s grows (orthonormal keys: alpha_j =
   e^s / (e^s + n - 1), so alpha_j = 1/2 at s = ln(n - 1)); so c ~ v_j.
b. Averaging two values: orthogonal unit keys, q = L (k_a + k_b): alpha_a = alpha_b =
   e^L / (2 e^L + n - 2) -> 1/2 and c -> (v_a + v_b) / 2, the error falling as ~n e^-L.
c. Projection: A = [a_1..a_m], B = [b_1..b_p] with orthonormal columns and span{a} orthogonal
   to span{b}; s = v_a + v_b. The matrix that returns v_a is M = A A^T, the orthogonal
   projector onto span{a}: A A^T v_a = v_a (v_a = A x and A^T A = I) and A A^T v_b = 0
   (A^T B = 0). M = A^T gives A^T s = x, the m coordinates of v_a in the a-basis, an
   m-vector, not v_a in R^d: it equals v_a only in coordinates (A x = v_a).
d. Key noise: k_i ~ N(mu_i, alpha I) with orthogonal unit means, except
   k_a ~ N(mu_a, alpha I + 1/2 mu_a mu_a^T), i.e. k_a ~ gamma mu_a, gamma ~ N(1, 1/2).
   One head, q = L (mu_a + mu_b): the v_a weight is 1 / (1 + e^{L (1 - gamma)}), so c
   jumps between ~v_b (gamma < 1) and ~v_a (gamma > 1) from sample to sample. Two heads,
   q1 = L mu_a, q2 = L mu_b, c = (c1 + c2) / 2: the v_a weight is ~1/2 whenever
   L gamma >> ln(n - 1). Caveat (measured, not in the handout's answer): gamma < ln(n-1)/L
   has probability Phi((ln(n-1)/L - 1) / sqrt(1/2)) (~10% at n = 8, L = 20; 7.9% as
   L -> inf, the chance that k_a points backwards); then head 1 loses k_a and the v_a
   weight drops to ~0. So the two-head output is exactly (v_a + v_b)/2 for ~90% of samples
   (its median absolute deviation is ~1e-8) but its standard deviation is only ~3x smaller
   than the single head's.
"""
from __future__ import annotations

import math
import os

import numpy as np
from absl import flags

from birthjax.infer import evaluate
from birthjax import files
from birthjax.errors import UserError
from birthjax.tools import cli

flags.declare_key_flag(cli.OUT)  # --out: the folder for the plots (created if missing)
flags.DEFINE_string("lengths", "64,128,256,512,1024",
                    "complexity: input lengths l, comma-separated")
flags.DEFINE_integer("m", 32, "complexity: bottleneck_dim")
flags.DEFINE_integer("n_layer", 4, "complexity: layers")
flags.DEFINE_integer("n_embd", 256, "complexity: embedding width")
flags.DEFINE_integer("batch", 1, "complexity: batch size")

COMMANDS = ("attention", "complexity")
USAGE = "python -m birthjax.analysis {attention,complexity} --out=DIR"


def attend(q, keys_NxD, values_NxD):
  """(alpha_N, c_D): softmax(k_i . q) over the n keys, then the weighted sum of the values.
  Batched: q [..., D], keys/values [..., N, D]."""
  scores = np.einsum("...nd,...d->...n", keys_NxD, q)
  e = np.exp(scores - scores.max(axis=-1, keepdims=True))
  alpha = e / e.sum(axis=-1, keepdims=True)
  return alpha, np.einsum("...n,...nd->...d", alpha, values_NxD)


def orthonormal(rng, d: int, n: int):
  """[d, n]: n orthonormal columns in R^d (QR of a Gaussian matrix)."""
  q, r = np.linalg.qr(rng.standard_normal((d, n)))
  return q * np.sign(np.diag(r))


def copying_curve(scales, n: int = 8, d: int = 16, orthogonal: bool = False, seed: int = 0):
  """alpha_j (j = 0) for q = s k_j at each scale s: n orthonormal keys, or n random unit keys."""
  rng = np.random.default_rng(seed)
  if orthogonal:
    keys = orthonormal(rng, d, n).T
  else:
    keys = rng.standard_normal((n, d))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
  values = rng.standard_normal((n, d))
  return np.array([attend(s * keys[0], keys, values)[0][0] for s in scales])


def averaging_error(length_scale: float, n: int = 8, d: int = 16, seed: int = 0) -> float:
  """||c - (v_a + v_b)/2|| for q = L (k_a + k_b), n orthonormal keys, Gaussian values."""
  rng = np.random.default_rng(seed)
  keys = orthonormal(rng, d, n).T
  values = rng.standard_normal((n, d))
  _, c = attend(length_scale * (keys[0] + keys[1]), keys, values)
  return float(np.linalg.norm(c - (values[0] + values[1]) / 2))


def projection_setup(d: int = 12, m: int = 3, p: int = 4, seed: int = 0):
  """(A [d,m], B [d,p], v_a, v_b, x): orthonormal columns, span{a} orthogonal to span{b},
  v_a = A x, v_b = B y with random coordinates x, y."""
  rng = np.random.default_rng(seed)
  q = orthonormal(rng, d, m + p)
  a_dxm, b_dxp = q[:, :m], q[:, m:]
  x, y = rng.standard_normal(m), rng.standard_normal(p)
  return a_dxm, b_dxp, a_dxm @ x, b_dxp @ y, x


def projection_residuals(trials: int = 50, **setup_kw):
  """Per trial: ||A A^T s - v_a|| (M = A A^T), ||A^T s - x|| (M = A^T against v_a's
  coordinates), ||A (A^T s) - v_a|| (those coordinates mapped back), ||s - v_a|| (M = I)."""
  keys = ("AAT", "AT_coords", "A_AT_back", "identity")
  out = {k: [] for k in keys}
  for t in range(trials):
    a, _, v_a, v_b, x = projection_setup(seed=t, **setup_kw)
    s = v_a + v_b
    out["AAT"].append(np.linalg.norm(a @ a.T @ s - v_a))
    out["AT_coords"].append(np.linalg.norm(a.T @ s - x))
    out["A_AT_back"].append(np.linalg.norm(a @ (a.T @ s) - v_a))
    out["identity"].append(np.linalg.norm(s - v_a))
  return {k: np.array(v) for k, v in out.items()}


def key_noise(n: int = 8, d: int = 16, length_scale: float = 20.0, alpha: float = 1e-6,
              samples: int = 2000, seed: int = 0):
  """(gamma_S, single_S, two_S): the scale of k_a along mu_a and the coefficient of v_a in c
  for the single head q = L (mu_a + mu_b) and the two-head c = (c1 + c2)/2, q1 = L mu_a,
  q2 = L mu_b; a = 0, b = 1, orthonormal means and values (coefficient = c . v_a)."""
  rng = np.random.default_rng(seed)
  mu = orthonormal(rng, d, n).T
  values = orthonormal(rng, d, n).T
  keys = mu + math.sqrt(alpha) * rng.standard_normal((samples, n, d))
  gamma_z = rng.standard_normal(samples)
  keys[:, 0] += math.sqrt(0.5) * gamma_z[:, None] * mu[0]
  _, c_single = attend(length_scale * (mu[0] + mu[1]), keys, values)
  _, c1 = attend(length_scale * mu[0], keys, values)
  _, c2 = attend(length_scale * mu[1], keys, values)
  c_two = (c1 + c2) / 2
  return keys[:, 0] @ mu[0], c_single @ values[0], c_two @ values[0]


def two_head_tail(n: int = 8, length_scale: float = 20.0) -> float:
  """P(gamma < ln(n-1)/L), gamma ~ N(1, 1/2): the share of samples where head 1 loses k_a."""
  z = (math.log(n - 1) / length_scale - 1) / math.sqrt(0.5)
  return 0.5 * math.erfc(-z / math.sqrt(2))


def _mad(x) -> float:
  return float(np.median(np.abs(x - np.median(x))))


def save_png(fig, path: str):
  """Save a matplotlib figure as PNG (tight layout), written then renamed."""
  fig.tight_layout()
  return evaluate.save_png(fig, path, dpi=110)


def _figure(ncols: int = 1):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.6))


def plot_copying(out: str, n_values=(2, 8, 64)):
  fig, ax = _figure()
  scales = np.linspace(0, 12, 121)
  for i, n in enumerate(n_values):
    ax.plot(scales, copying_curve(scales, n=n, d=64), color=f"C{i}",
            label=f"n = {n} random unit keys (measured)")
    ax.plot(scales, np.exp(scales) / (np.exp(scales) + n - 1), "--", color=f"C{i}",
            label=f"n = {n} orthonormal keys: e^s/(e^s+n-1)")
  ax.set(xlabel="s, the scale of q along k_j (q = s k_j)", ylabel="attention weight alpha_j",
         title="a. Copying: alpha_j -> 1 as k_j . q grows (c -> v_j)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_png(fig, os.path.join(out, "attention_a_copying.png"))


def plot_averaging(out: str, n_values=(2, 8, 64)):
  fig, ax = _figure()
  ls = np.linspace(0, 30, 61)
  for i, n in enumerate(n_values):
    err = [max(averaging_error(l, n=n, d=max(16, n)), 1e-17) for l in ls]
    note = " (alpha = 1/2 at every L: rounding only)" if n == 2 else ""
    ax.semilogy(ls, err, "o-", ms=3, color=f"C{i}", label=f"n = {n} orthonormal keys{note}")
  ax.axhline(1e-3, color="gray", ls=":", label="1e-3")
  ax.set(xlabel="L (q = L (k_a + k_b))", ylabel="||c - (v_a + v_b)/2||",
         title="b. Averaging two values: error vs L (float64 floor ~1e-16)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 0.3))
  return save_png(fig, os.path.join(out, "attention_b_averaging.png"))


def plot_projection(out: str, res):
  fig, ax = _figure()
  labels = {"AAT": "M = A A^T\n||M s - v_a||", "A_AT_back": "M = A^T, mapped back\n||A (A^T s) - v_a||",
            "AT_coords": "M = A^T (an m-vector)\n||A^T s - x||, v_a = A x",
            "identity": "M = I\n||s - v_a|| = ||v_b||"}
  for i, (k, lab) in enumerate(labels.items()):
    y = np.maximum(res[k], 1e-18)
    ax.semilogy(np.full(len(y), i) + np.linspace(-0.15, 0.15, len(y)), y, "o", ms=3, color=f"C{i}")
  ax.set_xticks(range(len(labels)), list(labels.values()), fontsize=8)
  ax.set(ylabel="residual norm (50 random draws)", ylim=(1e-18, 1e2),
         title="c. Extracting v_a from s = v_a + v_b: A A^T is the projector")
  ax.grid(alpha=0.3, axis="y")
  return save_png(fig, os.path.join(out, "attention_c_projection.png"))


def plot_key_noise(out: str, gamma, single, two, length_scale: float):
  fig, (ax1, ax2) = _figure(2)
  bins = np.linspace(-0.0125, 1.0125, 42)  # 0, 1/2 and 1 at bin centres
  ax1.hist(single, bins, alpha=0.6, label="one head, q = L (mu_a + mu_b)")
  ax1.hist(two, bins, alpha=0.6, label="two heads, q1 = L mu_a, q2 = L mu_b")
  ax1.set_yscale("log")
  ax1.set(xlabel="coefficient of v_a in c", ylabel=f"samples (of {len(single)})",
          title=f"d. Key noise (L = {length_scale:g}): v_a weight in c")
  ax1.legend(fontsize=8, loc="center right", bbox_to_anchor=(1.0, 0.72))
  ax2.plot(gamma, single, ".", ms=3, alpha=0.5, label="one head")
  ax2.plot(gamma, two, ".", ms=3, alpha=0.5, label="two heads")
  ax2.set(xlabel="scale of k_a along mu_a (gamma ~ N(1, 1/2))", ylabel="coefficient of v_a in c",
          title="one head flips at gamma = 1; two heads only fail for gamma < ~0.1")
  ax2.grid(alpha=0.3)
  ax2.legend(fontsize=8)
  return save_png(fig, os.path.join(out, "attention_d_key_noise.png"))


def attention_report(out: str) -> list[str]:
  """Run a-d, write the four PNGs into `out`, return the summary lines."""
  n, length = 8, 20.0
  s_half = math.log(n - 1)
  fine = np.linspace(0, 20, 2001)
  rand_curve = copying_curve(fine, n=n, d=64)
  s99 = fine[np.argmax(rand_curve > 0.99)]
  res = projection_residuals()
  a, _, v_a, v_b, x = projection_setup()
  gamma, single, two = key_noise(n=n, length_scale=length)
  paths = [plot_copying(out), plot_averaging(out), plot_projection(out, res),
           plot_key_noise(out, gamma, single, two, length)]
  at = a.T @ (v_a + v_b)
  lines = [
      f"a. copying (n = {n}): alpha_j = {copying_curve([s_half], n=n, orthogonal=True)[0]:.4f} at "
      f"s = ln(n-1) = {s_half:.3f} (orthonormal keys; closed form 1/2); alpha_j > 0.99 from "
      f"s = {s99:.2f} (random unit keys in R^64)",
      f"b. averaging (n = {n}): ||c - (v_a+v_b)/2|| = " + ", ".join(
          f"{averaging_error(l, n=n):.2e} at L = {l:g}" for l in (0, 5, 10, 20)),
      f"c. projection (d = 12, m = 3, p = 4, 50 draws): M = A A^T is right: max ||A A^T s - v_a|| = "
      f"{res['AAT'].max():.1e} (the orthogonal projector onto span{{a}} keeps v_a, kills v_b); "
      f"M = A^T gives shape {at.shape}, the coordinates x of v_a (max ||A^T s - x|| = "
      f"{res['AT_coords'].max():.1e}), equal to v_a only after mapping back A (A^T s) "
      f"(max residual {res['A_AT_back'].max():.1e}); M = I leaves ||v_b|| ~ "
      f"{np.median(res['identity']):.2f}",
      f"d. key noise (n = {n}, L = {length:g}, alpha = 1e-6, {len(single)} samples): v_a coefficient "
      f"one head: std {single.std():.3f}, below 0.25 in {np.mean(single < 0.25):.1%}, above 0.75 in "
      f"{np.mean(single > 0.75):.1%}; two heads: median {np.median(two):.4f}, std {two.std():.3f} "
      f"({single.std() / two.std():.1f}x smaller), median abs deviation {_mad(two):.1e} (one head "
      f"{_mad(single):.2f}); two heads fail (< 0.25) in {np.mean(two < 0.25):.1%} of samples, "
      f"predicted P(gamma < ln(n-1)/L) = {two_head_tail(n, length):.1%}",
  ]
  return lines + ["wrote " + ", ".join(paths)]


def complexity_report(out: str, lengths, m: int, n_layer: int, n_embd: int, batch: int):
  """The l-sweep table (measured and closed form), complexity.md and complexity.png in `out`."""
  from birthjax.tools import complexity
  results = complexity.sweep(lengths, batch=batch, m=m, n_layer=n_layer, n_embd=n_embd)
  table = complexity.sweep_table(results, batch, m=m, n_layer=n_layer, n_embd=n_embd)
  files.atomic_write(os.path.join(out, "complexity.md"), table + "\n")
  fig = complexity.plot_sweep(results, f"Forward FLOPs vs l (m = {m}, {n_layer} layers, "
                              f"n_embd {n_embd}, batch {batch})")
  path = save_png(fig, os.path.join(out, "complexity.png"))
  return [table, "", f"wrote {os.path.join(out, 'complexity.md')}, {path}"]


def _int_list(text: str):
  try:
    vals = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    vals = []
  if not vals or min(vals) < 1:
    raise UserError(f"bad --lengths {text!r}", "--lengths", "pass positive integers, e.g. 64,128,256")
  return vals


def _make_out(out: str) -> str:
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the output folder ({e.strerror or e})", out,
                    "pass --out=DIR, a folder path you can write") from e
  return out


def _check_usage(argv):
  """A UsageError unless argv is one subcommand and --out is given."""
  what = argv[1] if len(argv) > 1 else None
  if what is None:
    raise cli.UsageError("no subcommand", cli.where(argv), f"usage: {USAGE}")
  if what not in COMMANDS:
    raise cli.UsageError(f"unknown subcommand {what!r} (there are {', '.join(COMMANDS)})",
                     cli.where(argv), f"usage: {USAGE}")
  if len(argv) > 2:
    raise cli.UsageError(f"{what} takes no arguments, got {' '.join(argv[2:])!r}",
                     cli.where(argv), f"usage: {USAGE}")
  if not cli.OUT.value:
    raise cli.UsageError("--out is required", f"python -m birthjax.analysis {what}",
                     "pass --out=DIR, the folder for the plots (created if missing)")


def main(argv) -> int:
  """argv[1]: the subcommand (attention or complexity); the rest comes in flags."""
  _check_usage(argv)
  f = flags.FLAGS
  out = _make_out(cli.OUT.value)
  if argv[1] == "attention":
    lines = attention_report(out)
  else:
    lines = complexity_report(out, _int_list(f.lengths), f.m, f.n_layer, f.n_embd, f.batch)
  print("\n".join(lines))
  return 0
