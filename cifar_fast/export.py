"""A finished run as files that need neither pickle nor this package to serve: ONNX (normalisation, and flip TTA on
request, inside the graph; any batch size), checked with onnxruntime on the run's own test set before it is written,
and the weights as safetensors plus a JSON of what they are (`load_model`, or `timm.create_model` + `load_state_dict`).

fastai's export.pkl executes code when loaded (fastai #4163) and needs fastai and cifar_fast to load: these files do
not. The ONNX file takes RGB images NCHW, 32×32, either uint8 in 0..255 (`input='uint8'`, the default) or float32 in
[0, 1] (`input='float'`); it returns `logits` and `probs` (softmax), shape (batch, classes)."""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CifarFastError, ConfigError
from .rundir import atomic_write_bytes, read_json, write_json

INPUTS = ('uint8', 'float')  # deploy.INPUTS, repeated: the parser is built on every CLI call, without torch
FORMAT = 'cifar_fast.weights/1'  # model.json's `format`: bump when its keys change meaning
ACC_TOLERANCE = 0.001  # the issue's bar: onnxruntime's accuracy within 0.1 point of the run's
PROB_TOLERANCE = 1e-3  # float32 graphs agree to ~1e-6 (docs/export.md); 1e-3 catches a wrong op, not rounding
EXTRAS = {'export': ('onnx', 'onnxruntime', 'onnxscript', 'safetensors'), 'tune': ('optuna',)}

# torch is imported where it is used: the CLI builds this command's parser on every call, `cifar-fast --help` too
if TYPE_CHECKING:
    import torch
    from torch import nn


class ExportCheckFailed(CifarFastError):
    "The exported graph does not reproduce the run: nothing was written."


def require(extra: str, module: str):
    "Import `module`, or say which extra of this package installs it."
    try: return importlib.import_module(module)
    except ImportError as e:
        raise CifarFastError(f"{module} is not installed ({e}); it comes with this package's {extra!r} extra: "
                             f"pip install 'cifar_fast[{extra}]'  (installs {', '.join(EXTRAS[extra])}).") from None


# ---- the graph ------------------------------------------------------------------------------------------------

def onnx_bytes(model: nn.Module, mean, std, input: str = 'uint8', tta: int = 0, dynamo: bool = True,
               name: str = 'model') -> bytes:
    """The ONNX graph of `model` with normalisation (and flip TTA) inside, batch size dynamic; `dynamo=False` uses
    torch's older TorchScript exporter. A model the exporter cannot take raises ConfigError naming it and why."""
    import io

    import torch

    from .deploy import DeployModel
    require('export', 'onnx'); require('export', 'onnxscript')
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    wrapper = DeployModel(model, mean, std, input, tta).eval()
    example = (torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8) if input == 'uint8'
               else torch.rand(2, 3, 32, 32))  # batch 2, not 1: the exporter specialises a size-1 dimension
    kw = dict(input_names=['images'], output_names=['logits', 'probs'], verbose=False)
    if dynamo: kw['dynamic_shapes'] = {'images': {0: torch.export.Dim('batch')}}
    else: kw['dynamic_axes'] = {'images': {0: 'batch'}, 'logits': {0: 'batch'}, 'probs': {0: 'batch'}}
    try:
        with torch.no_grad():
            if dynamo: return torch.onnx.export(wrapper, example, dynamo=True, **kw).model_proto.SerializeToString()
            buf = io.BytesIO()
            torch.onnx.export(wrapper, example, buf, dynamo=False, **kw)
            return buf.getvalue()
    except Exception as e:
        other = '--legacy-exporter (dynamo=False)' if dynamo else 'the default dynamo exporter'
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ''
        raise ConfigError(f"{name} cannot be exported to ONNX by torch.onnx.export(dynamo={dynamo}): "
                          f"{type(e).__name__}: {msg}. Try {other}, or export its weights only (safetensors).") from e


# ---- the check ------------------------------------------------------------------------------------------------

def ort_predict(model: bytes | str | Path, images: torch.Tensor, input: str = 'uint8', bs: int = 500) -> torch.Tensor:
    "onnxruntime's probabilities for uint8 images (N,3,32,32), fed as the file's input contract says."
    import torch
    ort = require('export', 'onnxruntime')
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=['CPUExecutionProvider'])
    out = []
    for i in range(0, len(images), bs):
        x = images[i:i + bs].cpu()
        x = x.numpy() if input == 'uint8' else (x.float() / 255.).numpy()
        out.append(torch.from_numpy(sess.run(['probs'], {'images': x})[0]))
    return torch.cat(out)


@dataclass
class ExportCheck:
    "onnxruntime against the run on the run's test set."
    accuracy_onnx: float
    accuracy_torch: float  # the same weights, TTA and images through torch, now
    accuracy_run: float | None  # what the run recorded (summary.json) for these weights and TTA, when it did
    max_abs_prob_diff: float
    n: int
    tta: int
    input: str
    seconds: dict = field(default_factory=dict)

    @property
    def reference(self) -> float: return self.accuracy_run if self.accuracy_run is not None else self.accuracy_torch

    def failures(self, acc_tol: float = ACC_TOLERANCE, prob_tol: float = PROB_TOLERANCE) -> list[str]:
        out = []
        if abs(self.accuracy_onnx - self.reference) > acc_tol:
            which = 'recorded by the run' if self.accuracy_run is not None else 'of torch'
            out.append(f"accuracy {100 * self.accuracy_onnx:.2f}% vs {100 * self.reference:.2f}% {which} "
                       f"(tolerance {100 * acc_tol:.2f} points)")
        if abs(self.accuracy_onnx - self.accuracy_torch) > acc_tol:
            out.append(f"accuracy {100 * self.accuracy_onnx:.2f}% vs torch's {100 * self.accuracy_torch:.2f}% now")
        if not self.max_abs_prob_diff <= prob_tol:  # NaN fails too
            out.append(f"probabilities differ from torch's by up to {self.max_abs_prob_diff:.3g} "
                       f"(tolerance {prob_tol:g})")
        return out

    def record(self) -> dict:
        return dict(accuracy_onnx=self.accuracy_onnx, accuracy_torch=self.accuracy_torch,
                    accuracy_run=self.accuracy_run,
                    max_abs_prob_diff=self.max_abs_prob_diff, n=self.n, tta=self.tta, input=self.input,
                    seconds=self.seconds, passed=not self.failures())


def torch_reference(run_dir, tta: int = 0, data=None, weights: str = 'selected') -> dict:
    "The run's uint8 test images, targets and torch probabilities: the one prediction pass the check and card use."
    from .inference import load_run, run_dls
    from .predictions import predict_loader
    r, net = load_run(run_dir, weights)
    dls = run_dls(r, run_dir, data)
    t0 = time.perf_counter()
    probs, targs, _ = predict_loader(net, dls.valid, tta)
    return dict(images=dls.valid.dataset.x, probs=probs, targs=targs, classes=[str(c) for c in dls.vocab],
                seconds=round(time.perf_counter() - t0, 3))


def check_onnx(model: bytes | str | Path, run_dir, tta: int = 0, input: str = 'uint8', data=None,
               weights: str = 'selected', acc_tol: float = ACC_TOLERANCE, prob_tol: float = PROB_TOLERANCE,
               reference: dict | None = None) -> ExportCheck:
    """Run the ONNX `model` with onnxruntime over the run's test set and compare with torch (`reference`, else
    computed) and with the run's recorded accuracy; ExportCheckFailed if they differ by more than the tolerances."""
    from .predictions import accuracy
    ref = reference or torch_reference(run_dir, tta, data, weights)
    p_torch, targs = ref['probs'], ref['targs']
    t1 = time.perf_counter()
    p_onnx = ort_predict(model, ref['images'], input)
    t2 = time.perf_counter()
    if p_onnx.shape != p_torch.shape:
        raise ExportCheckFailed(f"the ONNX graph returned probabilities of shape {tuple(p_onnx.shape)}, torch "
                                f"{tuple(p_torch.shape)}: the export is broken; nothing was written.")
    summary = read_json(Path(run_dir) / 'summary.json') if (Path(run_dir) / 'summary.json').is_file() else {}
    recorded = None
    if weights == 'selected' and summary and data is None:  # recorded on the run's own images and weights
        recorded = summary.get('test_accuracy') if tta == 0 else (
            summary.get('test_accuracy_tta') if summary.get('tta_level') == tta else None)
    chk = ExportCheck(accuracy(p_onnx, targs), accuracy(p_torch, targs), recorded,
                      float((p_onnx - p_torch).abs().max()), len(targs), tta, input,
                      dict(torch=ref['seconds'], onnxruntime=round(t2 - t1, 3)))
    bad = chk.failures(acc_tol, prob_tol)
    if bad:
        raise ExportCheckFailed(f"the ONNX export of {run_dir} does not reproduce the run on its {chk.n:,} test "
                                f"images: {'; '.join(bad)}. Nothing was written.")
    return chk


# ---- weights without pickle -----------------------------------------------------------------------------------

def model_record(r, run_dir) -> dict:
    "model.json: what the weights are and what their inputs must be."
    from .inference import run_data
    from .models.timm_adapter import TIMM_PREFIX
    from .recipe import recipe_hash
    info = run_data(run_dir)
    timm_name = None if r.model.startswith('timm/') else TIMM_PREFIX + r.model
    return dict(format=FORMAT, model=r.model, model_kwargs=dict(r.model_kwargs), num_classes=len(info['classes']),
                classes=list(info['classes']), mean=list(info['stats'][0]), std=list(info['stats'][1]),
                input=dict(layout='NCHW', size=32, channels='RGB',
                           normalise='x / 255 (uint8) then (x - mean) / std, per channel'),
                timm_name=timm_name, recipe=r.name, recipe_hash=recipe_hash(r), run=Path(run_dir).name)


def safetensors_bytes(model: nn.Module) -> bytes:
    "The state_dict as safetensors (contiguous copies: safetensors refuses shared or strided storage)."
    st = require('export', 'safetensors.torch')
    return st.save({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()})


def _weights_pair(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir(): p = p / 'model.safetensors'
    if p.suffix != '.safetensors': p = p.with_suffix('.safetensors')
    return p, p.with_suffix('.json')


def load_model(path: str | Path) -> nn.Module:
    "The model in eval mode from model.safetensors + model.json (a file or their folder): no pickle anywhere."
    from .models import create_model
    st = require('export', 'safetensors.torch')
    weights, meta = _weights_pair(path)
    for f in (weights, meta):
        if not f.is_file(): raise ConfigError(f"{f} does not exist; write it with `cifar-fast export RUN`.")
    info = read_json(meta)
    if info.get('format') != FORMAT: raise ConfigError(f"{meta}: format {info.get('format')!r}, expected {FORMAT!r}.")
    model = create_model(info['model'], num_classes=int(info['num_classes']), **info['model_kwargs'])
    model.load_state_dict(st.load_file(str(weights)))
    return model.eval()


# ---- the whole export -----------------------------------------------------------------------------------------

def export_run(run_dir, out: str | Path | None = None, input: str = 'uint8', tta: int = 0, onnx: bool = True,
               check: bool = True, data=None, weights: str = 'selected', dynamo: bool = True, card: bool = True,
               acc_tol: float = ACC_TOLERANCE, prob_tol: float = PROB_TOLERANCE) -> dict:
    """RUN/export/ (or `out`): model.onnx (checked with onnxruntime first), model.safetensors + model.json,
    export_check.json and model_card.md. Returns name -> path plus the check's record."""
    from .inference import load_run, run_data
    from .rundir import check_run_dir
    if input not in INPUTS: raise ConfigError(f"--input must be one of {', '.join(INPUTS)}, not {input!r}.")
    d = check_run_dir(run_dir, ('recipe.json', 'model.pth'))
    for mod in ('onnx', 'onnxruntime', 'onnxscript', 'safetensors') if onnx else ('safetensors',):
        require('export', mod)
    out = Path(out) if out else d / 'export'
    r, model = load_run(d, weights)
    info = run_data(d)
    files, res = {}, dict(out=out)
    ref = torch_reference(d, tta, data, weights) if (onnx and check) or card else None
    t0 = time.perf_counter()
    if onnx:
        graph = onnx_bytes(model, *info['stats'], input=input, tta=tta, dynamo=dynamo, name=r.model)
        res['export_seconds'] = round(time.perf_counter() - t0, 2)
        if check:
            chk = check_onnx(graph, d, tta, input, data, weights, acc_tol, prob_tol, reference=ref)
            res['check'] = chk.record()
        files['model.onnx'] = atomic_write_bytes(out / 'model.onnx', graph)
    meta = dict(model_record(r, d), weights=weights, onnx=dict(input=input, tta=tta, outputs=['logits', 'probs'],
                                                              dynamic_batch=True) if onnx else None)
    files['model.safetensors'] = atomic_write_bytes(out / 'model.safetensors', safetensors_bytes(model))
    files['model.json'] = write_json(out / 'model.json', meta)
    if 'check' in res: files['export_check.json'] = write_json(out / 'export_check.json', res['check'])
    if card:
        from .model_card import prediction_scores, write_model_card
        scores = dict(prediction_scores(ref['probs'], ref['targs'], ref['classes']), tta=tta)
        res['scores'] = dict(scores, per_class=None)
        files['model_card.md'] = write_model_card(d, out / 'model_card.md', scores, res.get('check'), meta)
    res['files'] = files
    res['sizes'] = {k: Path(v).stat().st_size for k, v in files.items()}
    return res


# ---- the command line -----------------------------------------------------------------------------------------

def add_commands(sub) -> None:
    "`cifar-fast export RUN` on an argparse subparsers object."
    hlp = 'write a checked ONNX model, safetensors weights and a model card from a finished run'
    e = sub.add_parser('export', help=hlp, description=hlp, allow_abbrev=False)
    e.add_argument('run_dir', metavar='RUN', help='a finished run folder')
    e.add_argument('--out', help='folder to write (default RUN/export)')
    e.add_argument('--input', default='uint8', choices=INPUTS,
                   help="the ONNX input: uint8 images in 0..255 (default) or float32 in [0, 1]; NCHW RGB 32×32")
    e.add_argument('--tta', type=int, default=0, choices=(0, 1), help='1: flip TTA inside the graph (default 0)')
    e.add_argument('--weights', default='selected', choices=('selected', 'best', 'last'))
    e.add_argument('--data', help="the run's CIFAR-10 copy on this machine, for the check (default: as evaluate)")
    e.add_argument('--no-onnx', action='store_true', help='safetensors, model.json and the card only')
    e.add_argument('--no-check', action='store_true', help='skip the onnxruntime check (the card then says so)')
    e.add_argument('--legacy-exporter', action='store_true', help="torch's TorchScript exporter (dynamo=False)")
    e.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    "Export, check and print what was written."
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = Console() if sys.stdout.isatty() else Console(width=150)  # as cli.py: logs read better wide
    with console.status('Exporting and checking with onnxruntime…'):
        res = export_run(args.run_dir, args.out, args.input, args.tta, onnx=not args.no_onnx, check=not args.no_check,
                         data=args.data, weights=args.weights, dynamo=not args.legacy_exporter)
    t = Table('file', 'size', title=f"exported to {escape(str(res['out']))}", title_justify='left')
    for name, size in res['sizes'].items(): t.add_row(name, f'{size / 1e6:.2f} MB' if size > 1e5 else f'{size:,} B')
    console.print(t)
    c = res.get('check')
    if c:
        run = f", the run recorded {100 * c['accuracy_run']:.2f}%" if c['accuracy_run'] is not None else ''
        console.print(f"checked: onnxruntime [bold green]{100 * c['accuracy_onnx']:.2f}%[/bold green] on {c['n']:,} "
                      f"test images (torch {100 * c['accuracy_torch']:.2f}%{run}); max |Δp| "
                      f"{c['max_abs_prob_diff']:.2e}; input {c['input']}, TTA {c['tta']}", highlight=False)
    elif not args.no_onnx: console.print('[yellow]not checked (--no-check)[/yellow]')
    return 0
