"""README's `meta_step` example runs as written, and its links and docs/'s
lead to files of the repository."""

import pathlib
import re

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
