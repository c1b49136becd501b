"""Tests of ltjax.provenance: the commit a result records."""

import shutil
import subprocess

import pytest

from ltjax import provenance


@pytest.mark.skipif(shutil.which('git') is None, reason='needs git')
def test_commit_is_dirty_for_code_changes_not_for_the_grids_outputs(
  tmp_path,
):
  def git(*args):
    subprocess.run(
      ['git', *args], cwd=tmp_path, check=True, capture_output=True
    )

  (tmp_path / 'results').mkdir()
  files = {'code.py': 'x = 1\n', 'RESULTS.md': 'a\n', 'results/r.json': '{}\n'}
  for name, text in files.items():
    (tmp_path / name).write_text(text)
  git('init', '-q')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'c')
  head = subprocess.run(
    ['git', 'rev-parse', 'HEAD'], cwd=tmp_path, capture_output=True, text=True
  ).stdout.strip()

  def commit():  # the same from the top and from a folder below it
    commits = {
      provenance.git_commit(str(tmp_path / d)) for d in ('', 'results')
    }
    assert len(commits) == 1
    return commits.pop()

  assert commit() == head
  (tmp_path / 'RESULTS.md').write_text('b\n')
  (tmp_path / 'results' / 'r.json').write_text('{"a": 1}\n')
  (tmp_path / 'results' / 'new.json').write_text('{}\n')  # untracked
  assert commit() == head
  (tmp_path / 'code.py').write_text('x = 2\n')
  assert commit() == head + '-dirty'
