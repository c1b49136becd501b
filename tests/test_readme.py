"""README's `meta_step` example runs as written."""

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
