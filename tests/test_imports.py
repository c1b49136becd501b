"""The import graphs of ltjax, benchmarks/ and experiments/ have no circle:
any module imports first. The CLI imports no TensorFlow and no PyTorch."""

import ast
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def module_graph(*packages: str, lazy: bool = False) -> dict[str, set[str]]:
  """``{module: modules it imports}`` within ``packages``: at module level,
  or anywhere in the module (inside functions too) with ``lazy``.

  ``from pkg import name`` counts as importing ``pkg.name`` when that is a
  module, else ``pkg``; a package's ``__init__`` is not counted as a
  dependency of its own submodules (Python has it in ``sys.modules``
  before they run).
  """
  files = {}
  for package in packages:
    for f in (REPO / package).rglob('*.py'):
      parts = f.relative_to(REPO).with_suffix('').parts
      files['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = f
  graph = {}
  for name, f in files.items():
    deps = set()
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree) if lazy else tree.body:
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        subs = {f'{node.module}.{a.name}' for a in node.names}
        deps |= (subs & files.keys()) or {node.module}
    graph[name] = {
      d for d in deps
      if d in files and d != name and not name.startswith(d + '.')
    }  # fmt: skip
  return graph


def cycles(graph) -> list[list[str]]:
  found, state = [], {}

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph[node]):
      if state.get(dep) == 'open':
        found.append(stack[stack.index(dep):] + [dep])
      elif dep not in state:
        visit(dep, stack)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  return found


def test_the_finder_finds_a_circle():
  assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [['a', 'b', 'c', 'a']]
  assert cycles({'a': {'b'}, 'b': set()}) == []


def test_ltjax_has_no_circle_of_imports():
  graph = module_graph('ltjax')
  assert 'ltjax.config_lib' in graph and len(graph) > 30
  assert cycles(graph) == []
  # Nor through the imports inside functions (TensorFlow's, made lazily).
  lazy = module_graph('ltjax', lazy=True)
  assert 'ltjax.data.tfds_sources' in lazy['ltjax.inputs']
  assert cycles(lazy) == []


def test_benchmarks_and_experiments_have_no_circle_of_imports():
  # Imports inside functions count: a circle of lazy imports is still one.
  graph = module_graph('benchmarks', 'experiments', lazy=True)
  assert 'experiments.results_md' in graph['experiments.reproduce']
  assert 'benchmarks.standin_places' in graph['benchmarks.standin']  # lazy
  assert 'experiments.grid' in graph and len(graph) > 15
  assert cycles(graph) == []


def test_the_cli_imports_neither_tensorflow_nor_torch():
  # TensorFlow only where a tf.data pipeline is built; PyTorch (installed
  # with the test extra) not even for tensorboardX (ltjax.summary).
  code = (
    'import sys, ltjax.main; '
    "print(sorted({'tensorflow', 'torch'} & set(sys.modules)))"
  )
  out = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[]'
