"""The package's shape: every import of every module (read with `ast`, lazy ones inside functions included) goes to
the same or a lower layer of the table in cifar_fast/__init__.py, and no modules import each other in a circle."""
import ast
import re
from pathlib import Path

import pytest

import cifar_fast

PKG = Path(cifar_fast.__file__).parent
MODULES = {'.'.join(p.relative_to(PKG.parent).with_suffix('').parts).removesuffix('.__init__'): p
           for p in PKG.rglob('*.py')}


def layers() -> dict[str, int]:
    "Top-level module or subpackage -> layer number, from the package docstring's table."
    out, layer = {}, None
    for line in cifar_fast.__doc__.splitlines():
        m = re.match(r'\s{4}(\d)?\s+([a-z_, ]+?)(?:\s{2,}|$)', line)
        if not m: continue
        layer = int(m.group(1)) if m.group(1) else layer
        out.update({n.strip(): layer for n in m.group(2).split(',') if n.strip()})
    return out


def _type_checking(node) -> bool:
    return isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test)


def imports(name: str) -> set[str]:
    "The cifar_fast modules `name` imports anywhere in its file (annotation-only TYPE_CHECKING blocks excepted)."
    path, out = MODULES[name], set()
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    tree = ast.parse(path.read_text())
    skip = {id(n) for t in ast.walk(tree) if _type_checking(t) for n in ast.walk(t)}
    for node in ast.walk(tree):
        if id(node) in skip: continue
        if isinstance(node, ast.Import): out |= {a.name for a in node.names if a.name.startswith('cifar_fast')}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parts + ([node.module] if node.module else []))
            if not base.startswith('cifar_fast'): continue
            for a in node.names:  # `from . import augment` names a module; `from .x import f` a thing in x
                out.add(f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base)
    return out - {name}


def top(module: str) -> str: return module.split('.')[1] if module.count('.') else ''


def test_the_table_names_every_module():
    tops = {top(m) for m in MODULES} - {''}
    assert tops == set(layers()), (f'modules missing from the table: {tops - set(layers())}; '
                                   f'stale: {set(layers()) - tops}')


@pytest.mark.parametrize('name', sorted(m for m in MODULES if m != 'cifar_fast'))
def test_no_import_goes_up_a_layer(name):
    lay = layers()
    up = [m for m in imports(name) if top(m) and lay[top(m)] > lay[top(name)]]
    assert not up, f'{name} (layer {lay[top(name)]}) imports {up} from a higher layer'


def test_no_import_circles():
    graph = {m: imports(m) & set(MODULES) for m in MODULES if m != 'cifar_fast'}
    state, stack = {}, []

    def visit(m):
        state[m] = 'open'; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n == 'cifar_fast': continue  # the public façade, which imports lazily on attribute access
            if state.get(n) == 'open': pytest.fail('import circle: ' + ' -> '.join(stack[stack.index(n):] + [n]))
            if n not in state: visit(n)
        state[m] = 'done'; stack.pop()

    for m in sorted(graph):
        if m not in state: visit(m)


def test_the_check_catches_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    "The checker itself fails on what it must: a data module that imports training lazily."
    fake = tmp_path / 'cifar_fast' / 'data'
    fake.mkdir(parents=True)
    (fake / 'bad.py').write_text('def f():\n    from ..training import train\n')
    monkeypatch.setitem(MODULES, 'cifar_fast.data.bad', fake / 'bad.py')
    assert 'cifar_fast.training' in imports('cifar_fast.data.bad')
    with pytest.raises(AssertionError, match='higher layer'): test_no_import_goes_up_a_layer('cifar_fast.data.bad')
