"""The same step on 8 virtual CPU devices matches 1 device (run in a subprocess,
because the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from kdjax import recipes
    from kdjax.train import loop, setup as setup_lib
    assert jax.device_count() == 8, jax.devices()

    def run(n_dev, workdir):
        orig = setup_lib.make_mesh
        setup_lib.make_mesh = lambda: orig(jax.devices()[:n_dev])
        try:
            cfg = recipes.digits('resnet8')
            cfg.epochs = 1; cfg.progress_bar = False; cfg.optim.warmup_epochs = 0.0
            res = loop.train_and_evaluate(cfg, workdir, stop_after_steps=6)
            s = setup_lib.build(cfg)
            from kdjax.train import checkpoint as ck
            c = ck.Checkpointer(workdir + '/checkpoints')
            step, state = loop._restore(s, c, setup_lib.init_variables(s)); c.close()
            return step, jax.device_get(state['params'])
        finally:
            setup_lib.make_mesh = orig

    import tempfile
    s1, p1 = run(1, tempfile.mkdtemp())
    s8, p8 = run(8, tempfile.mkdtemp())
    assert s1 == s8 == 6
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), p1, p8))
    print('max_abs_diff', max(diffs))
    assert max(diffs) < 1e-4, max(diffs)
    print('OK')
''')


def test_eight_devices_match_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert 'OK' in out.stdout
