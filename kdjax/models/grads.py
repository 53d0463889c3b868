"""Hand-written gradients for layers whose autodiff (or XLA:CPU lowering) runs slowly.

Synopsis:
  y, mean, var = batch_norm_train(x, scale, bias, eps)   train-mode BN, analytic backward
  conv_general_dilated(lhs, rhs, ...)                     lax's conv; on CPU its gradients are
                                                          written out as plain convs (polyphase
                                                          when strided), its saved input is
                                                          materialised, vmapped weights run
                                                          per seed, depthwise convs are
                                                          shifted multiply-adds, and 3x3 ones
                                                          with >= 128 channels are Winograd
                                                          convs (models/winograd.py)

Both compute the same numbers as autodiff of the plain formula (to float32
rounding; tests/test_grads.py checks them against it).

* Train-mode BatchNorm. Autodiff of the two-pass statistics mean(x), mean((x - mean)^2)
  gives a backward with four reductions over the activation. The analytic form (the
  one PyTorch's native_batch_norm_backward uses) needs two, sum(g) and sum(g * xhat)
  (XLA's optimised program for a [64, 32, 32, 64] BN, forward + backward: 6 reductions
  and 5 full-size element-wise passes with autodiff, 4 and 4 with this VJP):
      dx = scale * rstd * (g - (sum(g) + xhat * sum(g * xhat)) / n)
           + g_mean / n + 2 * g_var * (x - mean) / n
  where the last two terms carry the cotangents of the returned statistics.
  Measured: resnet8x4 forward + backward (CE, batch 64) on the 2-core CPU
  (benchmarks/README.md).

* Strided convolutions on CPU. XLA computes the input gradient of a stride-s conv as
  a conv over the output gradient dilated by s (`lhs_dilation`), which its CPU backend
  runs with s*s times the multiply-adds: 48 ms against PyTorch's 21 ms for resnet8x4's
  64 -> 128 stride-2 3x3 conv at batch 64. Split by the residue (r_h, r_w) of each
  input position modulo s, the same gradient is s*s small stride-1 convs:
      dx_pad[s*q + r] = sum_m dy[q - m] . w[r + s*m]^T
  a full correlation of dy with the flipped sub-kernel w[r::s], interleaved back
  (20 ms for that conv). GPUs and TPUs have native strided input gradients, so this
  applies only when JAX's default backend is the CPU.

* Convolution gradients inside loops on CPU. Outside loops XLA:CPU rewrites lax's
  transposed convs (kernel read as 01oi, input as f01b) into the NHWC/HWIO form its
  Eigen kernel runs, with explicit transposes. Inside a while loop (steps_per_dispatch,
  BSS's attack, PGD) it does not, and falls back to a generic loop: a 64-channel 3x3
  conv's filter gradient took 3.5 s instead of 37 ms, its input gradient 3x longer.
  So both gradients of ungrouped, undilated convs are written in that form here
  (`input_grad`, `filter_grad`, `polyphase_input_grad`): the same convs XLA makes,
  bit-equal to lax's gradients outside loops, and as fast inside them. Grouped
  (depthwise) convs keep lax's gradients.

* The filter gradient's input on CPU. XLA:CPU's filter-gradient conv reads the layer's
  input x transposed to [C, H, W, N]. Left alone, XLA fuses x's producer (BN, residual
  add, ReLU) into that transposing copy, recomputing it with strided reads of every
  operand: 68 ms for a [64, 32, 32, 64] BN + BN + add + ReLU against 2 ms for the
  element-wise pass and 6 ms for a plain transpose. The saved x therefore goes through
  `materialize`, which XLA cannot fuse through; the forward already holds x in memory
  for the conv, so nothing is computed twice. resnet8x4 forward + backward (batch 64,
  2-core CPU): 702 -> 613 ms (benchmarks/README.md).

* Seed groups on CPU. vmap over the seeds' weights would make every conv (forward and
  both gradients) one grouped conv; `per_weight` runs them per seed instead.

* Grouped convs on CPU. XLA:CPU runs them with a generic loop, not Eigen: a depthwise
  3x3 conv on [64, 32, 32, 64] took 282 ms forward where its 9 shifted multiply-adds
  take 8, and a 4-group 3x3 conv 20x the time of its 4 plain convs. So depthwise convs
  (groups = in = out channels: MobileNet, ShuffleNet) are `depthwise_conv`, and convs
  with up to MAX_SPLIT_GROUPS groups (ShuffleNetV1's grouped 1x1s) run as one plain conv
  per group. Student forward + backward, batch 64: mobilenetv2 751 -> 182 ms,
  shufflenetv1 3415 -> 1043, shufflenetv2 2324 -> 609 (PyTorch: 146, 623, 434).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from kdjax.models import winograd

# ----------------------------------------------------------------- BatchNorm


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, eps: float):
  """Train-mode BN over all axes but the last: (y, batch mean, biased two-pass batch variance)."""
  return _bn_forward(x, scale, bias, eps)[0]


def _bn_forward(x, scale, bias, eps):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  rstd = lax.rsqrt(var + eps)
  y = (x - mean) * (rstd * scale) + bias
  return (y, mean, var), (x, mean, rstd, scale)


def _bn_backward(eps, res, cotangents):
  del eps
  x, mean, rstd, scale = res
  g, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  xc = x - mean
  xhat = xc * rstd
  d_bias = jnp.sum(g, axes)
  d_scale = jnp.sum(g * xhat, axes)
  dx = (scale * rstd) * (g - (d_bias + xhat * d_scale) / n) + (g_mean + 2.0 * g_var * xc) / n
  return dx, d_scale, d_bias


batch_norm_train.defvjp(_bn_forward, _bn_backward)

# --------------------------------------------------- conv on CPU: residual, input gradient

_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))   # lax's specs for NHWC / HWIO / NHWC
MAX_SPLIT_GROUPS = 8   # grouped convs with up to this many groups run as one conv per group


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding: Any,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with a CPU backward for 2-D NHWC convs (module docstring).

  Same signature, so it plugs into `nn.Conv(conv_general_dilated=...)`.
  """
  conv = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  if not _cpu_nhwc(lhs, rhs, dimension_numbers):
    return conv(lhs, rhs)
  strides = tuple(window_strides)
  groups = feature_group_count
  explicit = _explicit_grads_apply(lhs_dilation, rhs_dilation, batch_group_count,
                                   preferred_element_type)
  if explicit:
    pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
            if isinstance(padding, str) else padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    c_in, c_out = lhs.shape[-1], rhs.shape[-1]
    if groups > 1 and groups == c_in == c_out:
      return depthwise_conv(lhs, rhs, strides, pads)
    if 1 < groups <= MAX_SPLIT_GROUPS:   # a few groups: one plain conv per group
      cg, og = c_in // groups, c_out // groups
      return jnp.concatenate([
          conv_general_dilated(lhs[..., k * cg:(k + 1) * cg], rhs[..., k * og:(k + 1) * og],
                               strides, pads, dimension_numbers=dimension_numbers, precision=precision)
          for k in range(groups)], axis=-1)
    explicit = groups == 1
    if explicit and winograd.applies(lhs.shape, rhs.shape, strides, pads, groups, lhs.dtype, rhs.dtype):
      conv = winograd.conv3x3   # the forward; input_grad below makes its own choice

  def input_and_filter_grads(x, w, g):
    if not explicit:   # many-group or dilated convs: lax's transposes
      return jax.vjp(conv, x, w)[1](g)
    if max(strides) > 1:
      dx = polyphase_input_grad(g, w, x.shape, strides, pads)
    else:
      dx = input_grad(g, w, pads)
    return dx.astype(x.dtype), filter_grad(x, g, w.shape, strides, pads).astype(w.dtype)

  per_seed_conv = per_weight(conv)
  saved = per_weight(lambda x, w: (conv(x, w), materialize(x, w)))
  grads_of = per_weight(input_and_filter_grads)

  @jax.custom_vjp
  def cpu_conv(x, w):
    return per_seed_conv(x, w)

  def forward(x, w):
    y, x_saved = saved(x, w)
    return y, (x_saved, w)

  def backward(res, g):
    return grads_of(res[0], res[1], g)

  cpu_conv.defvjp(forward, backward)
  return cpu_conv(lhs, rhs)


def per_weight(fn):
  """fn(x, w, ...), whose vmap over a batched weight w runs fn once per weight.

  Seed groups vmap the student's weights. JAX's rule for a conv with batched
  inputs and weights is one grouped conv, which XLA:CPU runs 1.3-1.6x slower than
  the same convs one after another (fwd + bwd of a 64-channel 3x3 conv, 3 seeds,
  batch 64: 461 vs 292 ms); those separate convs give each seed exactly the
  numbers of a single run. A weight shared by the vmapped rows (a seed group's
  teacher) keeps JAX's rule, which folds them into the conv's batch.
  """
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _rule(axis_size, in_batched, *args):
    if not in_batched[1]:
      out = jax.vmap(fn, in_axes=[0 if b else None for b in in_batched])(*args)
    else:
      outs = [wrapped(*(a[i] if b else a for a, b in zip(args, in_batched)))
              for i in range(axis_size)]
      out = jax.tree.map(lambda *o: jnp.stack(o), *outs)
    return out, jax.tree.map(lambda _: True, out)

  return wrapped


@jax.custom_batching.custom_vmap
def materialize(x, key):
  """x, as an array of its own: XLA cannot fuse x's producer into x's consumers.

  A conditional's operand must exist in memory, and XLA keeps a conditional whose
  predicate it cannot evaluate. This one is true for every value of `key`'s first
  element (any bit pattern OR 1 is nonzero); the other branch differs from the identity
  only so that XLA does not merge the two branches and drop the conditional. The conv
  passes its weight as `key`: replicated over a data-parallel mesh, so reading it needs
  no cross-device op (x's first element lives on one device: one all-reduce per conv).
  """
  return _materialize(x, key)


@materialize.def_vmap
def _materialize_vmap(axis_size, in_batched, x, key):
  # JAX would turn a conditional with a batched predicate into a select, which XLA fuses
  # through. The predicate is true for any element, so read it from the whole stacked key.
  del axis_size
  return _materialize(x, key), in_batched[0]


def _materialize(x, key):
  first = key.reshape(-1)[0]
  bits = lax.bitcast_convert_type(first, jnp.dtype(f'uint{8 * first.dtype.itemsize}'))
  return lax.cond(lax.bitwise_or(bits, jnp.ones_like(bits)) != 0, lambda v: v, jnp.zeros_like, x)


def _cpu_nhwc(lhs, rhs, dimension_numbers) -> bool:
  if jax.default_backend() != 'cpu' or lhs.ndim != 4:
    return False
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return (tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)) == _NHWC


def _explicit_grads_apply(lhs_dilation, rhs_dilation, batch_group_count,
                          preferred_element_type) -> bool:
  if batch_group_count != 1 or preferred_element_type is not None:
    return False
  return all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))


# ------------------------------------------------------- depthwise conv on CPU


def depthwise_conv(x, w, strides: Sequence[int], padding):
  """A depthwise NHWC conv (w [kh, kw, 1, C], C groups) as kh*kw shifted multiply-adds.

  out[n, p, q, c] = sum_{i,j} x_pad[n, s*p + i, s*q + j, c] w[i, j, 0, c]; its VJP:
  dx is the same sum over the stride-dilated dy with the flipped kernel, and
  dw[i, j, 0, c] = sum_{n,p,q} x_pad[n, s*p + i, s*q + j, c] dy[n, p, q, c].
  """
  n, h, wd, c = x.shape
  (kh, kw), (sh, sw) = w.shape[:2], tuple(strides)
  pads = ((0, 0),) + tuple(padding) + ((0, 0),)
  hp, wp = h + pads[1][0] + pads[1][1], wd + pads[2][0] + pads[2][1]
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1

  def taps(xp, stride, out_hw):
    for i in range(kh):
      for j in range(kw):
        end = (xp.shape[0], i + (out_hw[0] - 1) * stride[0] + 1, j + (out_hw[1] - 1) * stride[1] + 1, c)
        yield (i, j), lax.slice(xp, (0, i, j, 0), end, (1,) + tuple(stride) + (1,))

  def mac(xp, kern, stride, out_hw):   # accumulates in float32 (as a bf16 conv does)
    acc = jnp.promote_types(xp.dtype, jnp.float32)
    terms = [win.astype(acc) * kern[i, j, 0].astype(acc) for (i, j), win in taps(xp, stride, out_hw)]
    return functools.reduce(jnp.add, terms).astype(xp.dtype)

  def forward(x, w):
    return mac(jnp.pad(x, pads), w, (sh, sw), (ho, wo))

  def grads(x, w, g):
    # dy dilated by the stride and padded to a full correlation, then the flipped kernel.
    gd = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (kh - 1, hp - (ho - 1) * sh - 1, sh - 1),
                                             (kw - 1, wp - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
    dx = mac(gd, jnp.flip(w, (0, 1)), (1, 1), (hp, wp))
    dx = dx[:, pads[1][0]:pads[1][0] + h, pads[2][0]:pads[2][0] + wd, :]
    acc = jnp.promote_types(g.dtype, jnp.float32)
    dw = jnp.stack([jnp.sum(win.astype(acc) * g.astype(acc), (0, 1, 2))
                    for _, win in taps(jnp.pad(x, pads), (sh, sw), (ho, wo))])
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)

  primal, grads_of = per_weight(forward), per_weight(grads)

  @jax.custom_vjp
  def conv(x, w):
    return primal(x, w)

  conv.defvjp(lambda x, w: (primal(x, w), (x, w)), lambda res, g: grads_of(res[0], res[1], g))
  return conv(x, w)


def input_grad(dy, w, padding):
  """d(conv(x, w))/dx applied to dy, for a stride-1 NHWC/HWIO conv with explicit `padding`:
  the full correlation of dy with the flipped kernel, I/O swapped (XLA's own form outside loops;
  a 3x3 one with padding 1 and enough channels is itself a Winograd conv, models/winograd.py)."""
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = padding
  pads = ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))
  if winograd.applies(dy.shape, (kh, kw, w.shape[3], w.shape[2]), (1, 1), pads, 1, dy.dtype, dy.dtype):
    return winograd.conv3x3(dy, w.astype(dy.dtype), flipped=True)
  flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(dy.dtype)
  return lax.conv_general_dilated(dy, flipped, (1, 1), pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def filter_grad(x, dy, w_shape, strides: Sequence[int], padding):
  """d(conv(x, w))/dw applied to dy, for an NHWC/HWIO conv with `strides` and explicit `padding`.

  A conv of x read as [C, H, W, N] (batch C, features N) with dy read as an [Ho, Wo, N, O]
  kernel dilated by the strides: out[c, i, j, o] = sum_{n,p,q} x_pad[n, i + s*p, j + s*q, c]
  dy[n, p, q, o]. Its first kh x kw outputs are dw (more when the stride skips the last rows).
  """
  kh, kw = w_shape[:2]
  out = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3).astype(x.dtype),
                                 (1, 1), padding, rhs_dilation=tuple(strides),
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return out[:, :kh, :kw, :].transpose(1, 2, 0, 3)


def polyphase_input_grad(dy, w, x_shape, strides: Sequence[int], padding):
  """d(conv(x, w))/dx applied to dy, for an NHWC/HWIO conv with `strides` and explicit `padding`.

  Every input position u (in the padded frame) with u = s*q + r only meets the kernel
  taps r, r + s, ...; for each residue pair those taps form a stride-1 conv of dy.
  """
  n, h, wd, c = x_shape
  (sh, sw), ((ph, _), (pw, _)) = strides, padding
  ho, wo = dy.shape[1], dy.shape[2]
  qh = -(-(h + padding[0][0] + padding[0][1]) // sh)   # padded rows per residue, rounded up
  qw = -(-(wd + padding[1][0] + padding[1][1]) // sw)
  rows = []
  for rh in range(sh):
    cols = []
    for rw in range(sw):
      sub = w[rh::sh, rw::sw]
      mh, mw = sub.shape[0], sub.shape[1]
      if mh == 0 or mw == 0:   # a residue no tap reaches (kernel smaller than the stride)
        cols.append(jnp.zeros((n, qh, qw, c), dy.dtype))
        continue
      # Full correlation with the flipped sub-kernel, I/O swapped: dy's O channels in, C out.
      sub = jnp.flip(sub, (0, 1)).transpose(0, 1, 3, 2)
      cols.append(lax.conv_general_dilated(
          dy, sub.astype(dy.dtype), (1, 1), ((mh - 1, qh - ho), (mw - 1, qw - wo)),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    rows.append(jnp.stack(cols, 3))                       # [n, qh, qw, sw, c]
  dx_pad = jnp.stack(rows, 2).reshape(n, qh * sh, qw * sw, c)   # interleave the residues
  return dx_pad[:, ph:ph + h, pw:pw + wd, :]
