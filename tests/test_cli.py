"""The command line's own start: a command that trains nothing must not wait for the training stack."""
import json
import subprocess
import sys

HEAVY = ('torch', 'fastai', 'timm', 'torchvision', 'optuna', 'scipy', 'sklearn', 'matplotlib', 'wandb')


def test_help_runs_and_a_mistyped_command_import_no_training_stack(tmp_path):
    """`cifar-fast --help`, `runs` and a mistyped command build every command's parser and answer without importing
    torch or fastai (3.4-3.7 s here when the export and tune parsers pulled them in, 0.2-0.3 s without). A fresh
    process: this one has them all loaded."""
    code = f"""
import contextlib, io, json, sys
from cifar_fast.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    codes = [main(['runs', '--runs', {str(tmp_path)!r}])]
    for argv in (['--help'], ['recipes']):
        try: main(argv)
        except SystemExit as e: codes.append(e.code)
print(json.dumps(dict(codes=codes, heavy=[m for m in {HEAVY!r} if m in sys.modules], text=out.getvalue())))
"""
    res = json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout)
    assert res['codes'] == [0, 0, 2], res['text']
    assert 'invalid choice' in res['text'] and 'export' in res['text'] and 'tune' in res['text']
    assert res['heavy'] == [], f"the CLI's start imported {res['heavy']}"


def test_the_run_console_shows_a_spinner_on_a_terminal_only():
    "The run's silent steps (its end: prediction and files) say what they do on a terminal, and nowhere else."
    import io

    from rich.console import Console

    from cifar_fast.console import RunConsole
    outs = {kind: io.StringIO() for kind in ('terminal', 'pipe')}
    for kind, buf in outs.items():
        with RunConsole(terminal=Console(file=buf, force_terminal=kind == 'terminal', width=100)).working(
                'Predicting the test set [plain] and writing the run folder…'):
            pass
    assert 'Predicting the test set [plain] and writing the run folder…' in outs['terminal'].getvalue()  # literally
    assert outs['pipe'].getvalue() == ''
    with RunConsole().working('no terminal at all'): pass  # a library call: nothing to show, nothing raised
