"""README's `meta_step` example runs as written, and its links and docs/'s
lead to files of the repository."""

import pathlib
import re
import shlex

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_readme_meta_step_example_runs_verbatim(capsys):
  text = (REPO / 'README.md').read_text()
  section = text[text.index('### `meta_step`') :]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  namespace = {}
  exec(compile(code, 'README.md', 'exec'), namespace)  # noqa: S102
  out = namespace['out']
  assert out.eps.shape == (100,) and np.isfinite(float(out.dev_loss))
  # The official rates keep the unrolled step sane: the dev loss of a fresh
  # network is near log 10.
  assert float(out.dev_loss) < 10
  assert 'dev loss' in capsys.readouterr().out


def test_readme_and_docs_link_to_files_that_exist():
  readme = (REPO / 'README.md').read_text()
  docs = sorted((REPO / 'docs').glob('*.md'))
  assert docs and all(f'](docs/{d.name})' in readme for d in docs)
  for page in [REPO / 'README.md', *docs]:
    for target in re.findall(r'\]\(([^)#]+)[^)]*\)', page.read_text()):
      if '://' in target:
        continue
      path = (page.parent / target).resolve()
      assert path.is_relative_to(REPO) and path.exists(), (page.name, target)


def readme_commands() -> list[list[str]]:
  """Every command of README's ``bash`` blocks, continued lines joined,
  comments dropped, split at ``&&``."""
  text = (REPO / 'README.md').read_text()
  out = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.splitlines():
      for command in line.split('#')[0].split('&&'):
        if command.strip():
          out.append(shlex.split(command))
  return out


def test_every_readme_training_command_names_a_valid_config():
  # Training itself is tested elsewhere (test_train, test_configs); here
  # each command README gives is loaded as --config and --config.* would
  # load it, and checked as the trainer checks it before reading data.
  from ltjax import config_check, config_lib

  commands = readme_commands()
  trainer = [c for c in commands if c[:3] == ['python', '-m', 'ltjax.main']]
  assert len(trainer) >= 4
  others = {' '.join(c[:3]) for c in commands if c not in trainer}
  # The rest: the install, the test command and the grid (test_reproduce).
  assert others == {
    'pip install -e', 'python -m pytest', 'python -m experiments.reproduce'
  }
  for command in trainer:
    flags = dict(a[2:].split('=', 1) for a in command[3:])
    assert 'workdir' in flags
    path, _, variant = flags.pop('config').partition(':')
    config = config_lib.from_file(REPO / path, variant)
    for key, value in flags.items():
      if not key.startswith('config.'):
        continue
      *parents, leaf = key.removeprefix('config.').split('.')
      node = config
      for p in parents:
        node = node[p]
      old = node[leaf]
      node[leaf] = value == 'True' if isinstance(old, bool) else type(old)(value)
    config_check.check(config)
