"""The README keeps up with the code: two Quickstart commands (the same test
command as .ci/run) and a methods-table row for every registered method."""

import os
import re

from kdjax.distill import registered_methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  return open(os.path.join(ROOT, 'README.md')).read()


def test_every_registered_method_has_a_readme_row():
  rows = set(re.findall(r'^\| `([a-z0-9_]+)` \|', _readme(), flags=re.M))
  missing = sorted(set(registered_methods()) - rows)
  assert not missing, f'add README methods-table rows for {missing} (kdjax methods --markdown)'


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
  text = _readme()
  section = text.split('## Quickstart', 1)[1].split('\n## ', 1)[0]
  block = section.split('```bash', 1)[1].split('```', 1)[0]
  commands = [l.strip() for l in block.splitlines() if l.strip() and not l.strip().startswith('#')]
  assert len(commands) == 2, commands
  ci = open(os.path.join(ROOT, '.ci', 'run')).read()
  assert commands[1] in ci
