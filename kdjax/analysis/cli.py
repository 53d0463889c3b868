"""`kdjax analyze <what> <workdirs...>`: JSON + PNG + PDF for each analysis.

  kdjax analyze transfer  T S1 S2 ...   PGD / FGSM transferability matrices
  kdjax analyze cka       T S1 ...      linear / RBF CKA between nets, layer x layer, IE halves
  kdjax analyze active    T S1 ...      active neurons per stage (and IE parts)
  kdjax analyze sharpness S1 S2 ...     training loss vs Gaussian parameter noise
  kdjax analyze noise     S1 S2 ...     accuracy / loss vs Gaussian input noise
  kdjax analyze clusters  T S1 ...      ||h_T - h_S||^2 to the first net, k-means NMI
  kdjax analyze tsne      T S1 ...      t-SNE of penultimate features
  kdjax analyze tsne SG --masks expected,full,random:3,drop:2,1101
                                        ... and of stochastic-depth sub-networks
  kdjax analyze attribution T S1 ...    LRP (CIFAR ResNets) and gradient x input maps
  kdjax analyze calibration S1 ...      reliability diagrams, risk-coverage curves
  kdjax analyze curves    S1 S2 ...     train / test loss and error per epoch
  kdjax analyze probe     S1 ... --probe_data stl10     linear probe on another dataset (CRD)
  kdjax analyze all       T S1 ...      every analysis but the probe + index.md

The first workdir is the reference (the teacher) where one is needed. A cohort
run (DML) contributes one network per member. Outputs go to --out.
"""

from __future__ import annotations

import json
import os
import time

DEFAULT_MASKS = 'expected,full,random:3'  # `all`: the paper's teacher and three students, + full
ANALYSES = ('transfer', 'cka', 'active', 'sharpness', 'noise', 'clusters', 'tsne', 'attribution',
            'calibration', 'curves', 'probe')


def add_arguments(p):
  p.add_argument('what', choices=ANALYSES + ('all',))
  p.add_argument('workdirs', nargs='+', help='kdjax workdirs; the first is the reference (teacher)')
  p.add_argument('--out', default='analysis', help='output directory (JSON, PNG, PDF, index.md)')
  p.add_argument('--num_examples', type=int, default=0, help='test images used (0 = all)')
  p.add_argument('--batch_size', type=int, default=500, help='images per jitted call')
  p.add_argument('--seed', type=int, default=0, help='k-means, t-SNE and probe seed')
  p.add_argument('--eps', type=float, default=0.031, help='attack radius (pixels in [0, 1])')
  p.add_argument('--step', type=float, default=0.003, help='PGD step size')
  p.add_argument('--iters', type=int, default=20, help='PGD iterations')
  p.add_argument('--cka_examples', type=int, default=1000,
                 help='test images for CKA, active neurons and t-SNE (O(N^2) memory)')
  p.add_argument('--masks', default='',
                 help='t-SNE of stochastic-depth sub-networks: comma-separated full, expected, '
                 'random:K (K Bernoulli(p_l) draws), drop:K (K random blocks dropped) or 0/1 strings '
                 'with one digit per residual block, block 1 first (default: none for `tsne`, '
                 f'{DEFAULT_MASKS} for stochastic-depth runs in `all`)')
  p.add_argument('--tsne_joint', action='store_true',
                 help='sub-network t-SNE: one joint embedding of all masks of a network (comparable '
                 'panels) instead of one embedding per panel')
  p.add_argument('--noise_scales', default='0,0.002,0.005,0.01,0.02,0.03',
                 help='sharpness: std of the Gaussian parameter noise')
  p.add_argument('--filter_normalized', action='store_true',
                 help='sharpness: filter-normalised noise (Li et al. 2018) instead of the paper\'s plain noise')
  p.add_argument('--draws', type=int, default=3, help='sharpness: noise draws per scale')
  p.add_argument('--sigmas', default='0,0.05,0.1,0.2,0.3,0.5', help='input-noise std (pixels in [0, 1])')
  p.add_argument('--probe_data', default='cifar10',
                 help='probe: the dataset of the linear classifier (cifar10, stl10, ...: any '
                 'in-memory dataset kdjax reads; STL-10 is downsampled to the nets\' input size)')
  p.add_argument('--probe_data_dir', default='',
                 help='probe: TFDS data_dir of --probe_data (default $TFDS_DATA_DIR or '
                 '~/tensorflow_datasets)')
  p.add_argument('--probe_path', default='', help='probe: data.path of a folder / fer2013 probe set')
  p.add_argument('--probe_steps', type=int, default=2000, help='probe: Adam steps (batch 256)')


def check_args(args):
  """Every user error before any data is read or anything compiles."""
  for w in args.workdirs:
    if not os.path.exists(os.path.join(w, 'config.json')):
      raise FileNotFoundError(f'{w!r} is not a kdjax workdir (no config.json); pass the --workdir '
                              'of `kdjax train` runs.')
  if not 0 < args.eps <= 1 or args.step <= 0 or args.iters < 1:
    raise ValueError(f'need 0 < eps <= 1, step > 0, iters >= 1; got eps={args.eps}, '
                     f'step={args.step}, iters={args.iters}.')
  if args.num_examples < 0 or args.cka_examples < 3 or args.batch_size < 1 or args.draws < 1:
    raise ValueError('need num_examples >= 0, cka_examples >= 3, batch_size >= 1, draws >= 1.')
  for name in ('noise_scales', 'sigmas'):
    try:
      vals = _floats(getattr(args, name))
    except ValueError:
      raise ValueError(f'--{name} must be comma-separated numbers, got {getattr(args, name)!r}.') from None
    if not vals or min(vals) < 0:
      raise ValueError(f'--{name} must be non-negative numbers, got {getattr(args, name)!r}.')
  if args.what == 'probe':
    from kdjax import data as data_lib
    if args.probe_steps < 1:
      raise ValueError(f'--probe_steps must be >= 1, got {args.probe_steps}.')
    spec = data_lib.spec(args.probe_data)  # unknown name: the known ones and a did-you-mean
    if spec.loader == 'tfds_stream':
      raise ValueError(f'--probe_data {args.probe_data} is streamed; the probe reads its probe set '
                       'into memory (cifar10, cifar100, stl10, folder, fer2013, digits).')
    if spec.loader in ('folder', 'fer2013') and not args.probe_path:
      raise ValueError(f'--probe_data {args.probe_data} reads local files: give --probe_path.')
    if spec.loader == 'tfds':  # a missing dataset: the `tfds build` command, before any load
      from kdjax.data import tfds_source
      tfds_source.check_prepared(spec.source_name, args.probe_data_dir or None)
  if args.masks:
    from kdjax.analysis import masks
    if args.what not in ('tsne', 'all'):
      raise ValueError(f'--masks is used by `kdjax analyze tsne` (and `all`), not {args.what!r}.')
    masks.check_syntax(args.masks)


def mask_plan(nets, args) -> dict:
  """{net index: [(name, mask)]} of the sub-network t-SNE, parsed before anything compiles.

  Explicit --masks apply to the stochastic-depth nets, or, where there are none,
  to every residual net (full, drop:K and 0/1 strings need no survival
  probabilities); `all` without --masks uses DEFAULT_MASKS on stochastic-depth nets.
  """
  from kdjax.analysis import masks
  spec = args.masks or (DEFAULT_MASKS if args.what == 'all' else '')
  if not spec:
    return {}
  sd = [i for i, n in enumerate(nets) if n.survival is not None]
  targets = sd if (sd or not args.masks) else [i for i, n in enumerate(nets) if n.num_blocks > 0]
  if args.masks and not targets:
    raise ValueError('--masks: none of the networks has residual blocks (stochastic-depth '
                     'sub-networks exist for resnet*, resnet*_cifar and wrn_* models).')
  return {i: masks.parse_masks(spec, nets[i].num_blocks, nets[i].survival, args.seed,
                               f'{nets[i].label} ({nets[i].arch})') for i in targets}


def _floats(s):
  return [float(v) for v in s.split(',') if v.strip()]


def _write(out, name, data):
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, f'{name}.json'), 'w') as f:
    json.dump(data, f, indent=1, default=float)


def _features(net, x, bs):
  from kdjax.analysis import runs
  return runs.batched(lambda xb: net(xb)[1], x, batch_size=bs)


def transfer(nets, ds, args):
  from kdjax.analysis import adversarial, plots, runs
  x, y = runs.test_arrays(ds, args.num_examples)
  res, figs = {}, []
  for attack in ('pgd', 'fgsm'):
    r = adversarial.transfer_matrix(nets, x, y, attack=attack, eps=args.eps, step=args.step,
                                    iters=args.iters, batch_size=args.batch_size)
    res[attack] = r
    lab = plots.labels_short(r['labels'])
    # Sarfraz et al. Figure 1 layout: sources in columns, targets in rows.
    import numpy as np
    fig = plots.heatmap(np.asarray(r['success']).T, lab, lab, vmin=0, vmax=1,
                        title=f'{attack.upper()} success rate (eps {args.eps}) on images both classify',
                        xlabel='source', ylabel='target')
    figs += plots.save(fig, args.out, f'transfer_{attack}')
  return res, figs


def cka(nets, ds, args):
  import numpy as np
  from kdjax.analysis import plots, runs, similarity
  x, _ = runs.test_arrays(ds, args.cka_examples)
  feats = [_features(n, x, args.batch_size) for n in nets]
  lab = plots.labels_short([n.label for n in nets])
  res, figs = {'labels': [n.label for n in nets], 'num_images': len(x)}, []
  for kind, fn in (('linear', similarity.linear_cka), ('rbf', similarity.rbf_cka)):
    m = np.array([[float(fn(a['pooled'], b['pooled'])) for b in feats] for a in feats])
    res[f'{kind}_pooled'] = m.tolist()
    figs += plots.save(plots.heatmap(m, lab, lab, vmin=0, vmax=1, title=f'{kind} CKA of pooled features',
                                     xlabel='net', ylabel='net'), args.out, f'cka_{kind}_pooled')
  def layers(f):  # input to output: stem, stage1..S, pooled, logits
    order = ['stem'] + sorted(k for k in f if k.startswith('stage') and not k.endswith('preact')) + [
        'pooled', 'logits']
    return {k: f[k] for k in order if k in f}
  res['layerwise'] = {}
  for j in range(1, len(nets)):
    la, lb = layers(feats[0]), layers(feats[j])
    m = similarity.cka_layers(la, lb, 'linear')
    res['layerwise'][nets[j].label] = {'rows': list(la), 'cols': list(lb), 'linear': m.tolist()}
    figs += plots.save(plots.heatmap(m, list(la), list(lb), vmin=0, vmax=1,
                                     title=f'linear CKA: {nets[0].label} vs {nets[j].label}',
                                     xlabel=nets[j].label, ylabel=nets[0].label), args.out, f'cka_layers_{j}')
  res['halves'] = {}
  for n, f in zip(nets, feats):
    split = n.ie
    h = f[split.feature if split else 'last_map']
    if split:
      inh, exp = (np.asarray(a) for a in split.parts(h))
      kind = 'IE split (inheritance vs exploration)'
    else:  # an independent student: the same-size first / second channel halves
      c = h.shape[-1] // 2
      inh, exp, kind = h[..., :c], h[..., c:], 'first vs second channel half (no IE split)'
    res['halves'][n.label] = {'split': kind, 'linear': float(similarity.linear_cka(inh, exp)),
                              'rbf': float(similarity.rbf_cka(inh, exp))}
  return res, figs


def active(nets, ds, args):
  from kdjax.analysis import plots, runs, sensitivity
  x, y = runs.test_arrays(ds, args.cka_examples)
  res, vals = {}, {}
  for n in nets:
    if not hasattr(n.model, 'forward_from'):
      res[n.label] = f'skipped: {n.arch} has no forward_from'
      continue
    if n.survival is not None:  # forward_from would run the rest unscaled: not the deployed net
      res[n.label] = 'skipped: stochastic depth (forward_from has no branch_scale)'
      continue
    r = {}
    num_stages = len(n.model.stage_sizes) if hasattr(n.model, 'stage_sizes') else 3  # WRN: 3 groups
    for k in range(1, num_stages + 1):
      g = runs.batched(lambda xb, yb: sensitivity.feature_loss_grads(n, xb, yb, k), x, y,
                       batch_size=args.batch_size)
      r[f'stage{k}'] = sensitivity.active_neurons(g.reshape(len(g), -1))[0]
      if n.ie and k == num_stages and n.ie.feature == 'last_map':
        inh, exp = (a.reshape(len(g), -1) for a in n.ie.parts(g))
        r['inheritance'] = sensitivity.active_neurons(inh)[0]
        r['exploration'] = sensitivity.active_neurons(exp)[0]
    res[n.label] = r
    vals[n.label] = r
  figs = plots.save(plots.bars(vals, ylabel='active neurons (95% gradient energy)',
                               title='Active neurons per layer (Cui et al. 2019)'), args.out, 'active') if vals else []
  return res, figs


def sharpness(nets, ds, args):
  import jax.numpy as jnp
  from kdjax.analysis import plots, runs, sensitivity
  x, y = runs.train_arrays(ds, args.num_examples or 2000)
  res, series, band = {}, {}, {}
  for n in nets:
    bstats = n.variables['batch_stats']
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    loss_fn = lambda p, n=n, bstats=bstats: sensitivity.ce_sum(
        n.apply({'params': p, 'batch_stats': bstats}, xs)[0], ys) / len(ys)
    r = sensitivity.sharpness(loss_fn, n.variables['params'], _floats(args.noise_scales), args.draws,
                              filter_normalized=args.filter_normalized)
    res[n.label] = r
    series[n.label], band[n.label] = (r['scales'], r['mean']), r['std']
  fig = plots.lines(series, band=band, xlabel='noise scale' + (' (filter-normalised)' if args.filter_normalized else ' (std of N(0, s^2) per parameter)'),
                    ylabel='training loss', title=f'Sharpness: {len(x)} training images, {args.draws} draws')
  return res, plots.save(fig, args.out, 'sharpness')


def noise(nets, ds, args):
  from kdjax.analysis import plots, runs, sensitivity
  x, y = runs.test_arrays(ds, args.num_examples)
  res = {n.label: sensitivity.input_noise(n.logits_fn(), x, y, _floats(args.sigmas),
                                          batch_size=args.batch_size) for n in nets}
  figs = []
  for key, name in (('top1', 'test accuracy'), ('loss', 'test loss')):
    s = {l: (r['sigmas'], r[key]) for l, r in res.items()}
    figs += plots.save(plots.lines(s, xlabel='input noise sigma (pixels in [0, 1])', ylabel=name,
                                   title='Robustness to Gaussian input noise'), args.out, f'noise_{key}')
  return res, figs


def clusters(nets, ds, args):
  from kdjax.analysis import plots, runs, similarity
  x, y = runs.test_arrays(ds, args.num_examples)
  feats = [_features(n, x, args.batch_size)['pooled'] for n in nets]
  res = {'reference': nets[0].label, 'nets': {}}
  for n, f in zip(nets, feats):
    d = (float(similarity.feature_distance(feats[0], f)) if f.shape == feats[0].shape else None)
    res['nets'][n.label] = {'nmi': similarity.kmeans_nmi(f, y, ds.num_classes, args.seed),
                            'distance_to_reference': d}
  vals = {l: {'NMI': r['nmi']} for l, r in res['nets'].items()}
  return res, plots.save(plots.bars(vals, ylabel='NMI', title='k-means NMI of pooled features'),
                         args.out, 'clusters_nmi')


def tsne(nets, ds, args):
  from kdjax.analysis import masks, plots, runs, similarity
  x, y = runs.test_arrays(ds, args.cka_examples)
  pts = {n.label: similarity.tsne(_features(n, x, args.batch_size)['pooled'], args.seed) for n in nets}
  fig = plots.scatter_panels(pts, y, title='t-SNE of penultimate features')
  res = {'num_images': len(x), 'labels': list(pts)}
  figs = plots.save(fig, args.out, 'tsne')
  plan = mask_plan(nets, args) if getattr(args, 'mask_plan', None) is None else args.mask_plan
  if plan:
    res['subnetworks'] = {'joint_embedding': bool(args.tsne_joint), 'nets': {}}
  for i, ms in plan.items():
    n = nets[i]
    r, panels = masks.subnetwork_tsne(n, x, y, ms, ds.num_classes, seed=args.seed,
                                      joint=args.tsne_joint, batch_size=args.batch_size)
    res['subnetworks']['nets'][n.label] = r
    how = 'one joint embedding' if args.tsne_joint else 'one embedding per panel'
    fig = plots.scatter_panels(panels, y, share=args.tsne_joint,
                               title=f'{n.label}: t-SNE of penultimate features of sub-networks '
                               f"('1' block active; {how})")
    figs += plots.save(fig, args.out, f'tsne_subnetworks_{i}')
  return res, figs


def attribution(nets, ds, args):
  from kdjax.analysis import lrp, plots, runs
  x, y = runs.test_arrays(ds, 6)
  maps, res = {}, {}
  for n in nets:
    maps[f'{n.label} gxi'] = lrp.gradient_x_input(n, x, y)
    try:
      maps[f'{n.label} LRP'], sums = lrp.lrp(n, x, y, return_sums=True)
      res[n.label] = {'relevance_sum_per_layer': sums.mean(0).tolist()}
      if n.ie:
        p = n.ie.perm
        maps[f'{n.label} LRP inh'] = lrp.lrp(n, x, y, channels=p[:n.ie.n_inh])
        maps[f'{n.label} LRP exp'] = lrp.lrp(n, x, y, channels=p[n.ie.n_inh:])
    except ValueError as e:
      res[n.label] = {'lrp': f'skipped: {e}'}
  fig = plots.image_grid(x, maps, title='Attribution of the true class (red +, blue -)')
  return res, plots.save(fig, args.out, 'attribution')


def calibration(nets, ds, args):
  from kdjax.analysis import calibration as cal, plots, runs
  x, y = runs.test_arrays(ds, args.num_examples)
  rels, rcs = {}, {}
  for n in nets:
    logits = runs.batched(lambda xb: n(xb)[0], x, batch_size=args.batch_size)
    rels[n.label], rcs[n.label] = cal.reliability(logits, y, 15), cal.risk_coverage(logits, y)
  figs = plots.save(plots.reliability_diagrams(rels), args.out, 'reliability')
  s = {f'{l} (AURC {r["aurc"]:.4f})': (r['coverage'], r['risk']) for l, r in rcs.items()}
  figs += plots.save(plots.lines(s, xlabel='coverage', ylabel='risk (error rate)',
                                 title='Risk-coverage'), args.out, 'risk_coverage')
  return {'reliability': rels, 'aurc': {l: r['aurc'] for l, r in rcs.items()}}, figs


def curves(workdirs, args):
  from kdjax.analysis import curves as curves_lib, plots
  res = {os.path.basename(os.path.normpath(w)): curves_lib.read(w) for w in workdirs}
  figs = []
  for key in ('loss', 'error'):
    s, st = {}, {}
    for l, r in res.items():
      for split, ls in (('train', ':'), ('test', '-')):
        s[f'{l} {split}'] = (r[split]['epoch'], r[split][key])
        st[f'{l} {split}'] = {'linestyle': ls}
    figs += plots.save(plots.lines(s, styles=st, xlabel='epoch', ylabel=key,
                                   title=f'{key}: train (dotted) and test (solid)'), args.out, f'curves_{key}')
  return res, figs


def probe(nets, ds, args):
  import numpy as np
  from kdjax import data as data_lib
  from kdjax.analysis import plots, probe as probe_lib
  size = ds.image_shape[0]
  # The real loader: TFDS (ArrayRecord), with STL-10's 96x96 -> size x size resampling done
  # by kdjax.data (data.image_size, as a training run on 32x32 STL-10 would see it).
  target = data_lib.load({'name': args.probe_data, 'data_dir': args.probe_data_dir,
                          'path': args.probe_path, 'image_size': size})
  xtr, xte = probe_lib.to_input(target.train_images, size), probe_lib.to_input(target.test_images, size)
  if xtr.shape[-1] != ds.image_shape[-1]:
    raise ValueError(f'{args.probe_data} has {xtr.shape[-1]} channels, the networks {ds.image_shape[-1]}.')
  res = {'probe_data': args.probe_data, 'image_size': size, 'source_image_shape': list(target.image_shape),
         'num_train': len(xtr), 'num_test': len(xte), 'steps': args.probe_steps, 'nets': {}}
  for n in nets:
    ftr, fte = probe_lib.penultimate(n, xtr, args.batch_size), probe_lib.penultimate(n, xte, args.batch_size)
    res['nets'][n.label] = probe_lib.linear_probe(ftr, target.train_labels, fte, target.test_labels,
                                                  target.num_classes, steps=args.probe_steps, seed=args.seed)
  vals = {l: {'test top-1': r['top1'], 'train top-1': r['train_top1']} for l, r in res['nets'].items()}
  fig = plots.bars(vals, ylabel='top-1', title=f'Linear probe on frozen pooled features: {args.probe_data} '
                   f'({size}x{size}, {len(xtr)} train / {len(xte)} test images)')
  return res, plots.save(fig, args.out, f'probe_{args.probe_data}')


def run(args) -> int:
  from kdjax.analysis import runs
  check_args(args)
  what = ANALYSES[:-1] if args.what == 'all' else (args.what,)
  nets = ds = None
  report = []
  for w in what:
    t0, c0 = time.time(), time.process_time()
    if w == 'curves':
      res, figs = curves(args.workdirs, args)
    else:
      if nets is None:
        nets, ds = runs.load_many(args.workdirs)
        if 'tsne' in what:  # mask errors (lengths, survival) before anything compiles
          args.mask_plan = mask_plan(nets, args)
      res, figs = globals()[w](nets, ds, args)
    sec = time.time() - t0
    res = {'seconds': sec, 'cpu_seconds': time.process_time() - c0, **res}
    _write(args.out, w, res)
    report.append((w, sec, [f for f in figs if f.endswith('.png')]))
    print(f'{w}: {sec:.1f} s -> {args.out}/{w}.json' + ''.join(f', {os.path.basename(f)}' for f in figs), flush=True)
  if args.what == 'all':
    _index(args, report)
  return 0


def _index(args, report):
  lines = ['# kdjax analysis', '', 'Runs: ' + ', '.join(f'`{w}`' for w in args.workdirs), '']
  for w, sec, pngs in report:
    lines += [f'## {w}', '', f'{sec:.1f} s; data: [{w}.json]({w}.json)', '']
    lines += [f'![{os.path.basename(p)}]({os.path.basename(p)})' for p in pngs] + ['']
  with open(os.path.join(args.out, 'index.md'), 'w') as f:
    f.write('\n'.join(lines))
