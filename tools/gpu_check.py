"""GPU readiness in one call (issue 31): every callback trains torchvision's `resnet18` on random 32x32 batches in
fp32, `to_fp16()` and `to_bf16()`, then `get_preds` and `export`/`load_learner`; step time against plain training
in each precision (medians over interleaved rounds, warm-up dropped; CUDA events on a GPU), inference time, peak
GPU memory and host reads per training step. Writes gpu_check.md (one markdown table) and gpu_check.csv.

    python tools/gpu_check.py --out gpu_out           # on a GPU: batches of 128, 32x32 (sized for under 5 minutes; not yet run on one)
    python tools/gpu_check.py --tiny --out /tmp/gc    # on a CPU (CI runs this): batches of 8, 16x16, the same code paths

On a GPU machine that has PyTorch, torchvision, timm, pandas and scikit-learn but no fastai and no package index,
`bash tools/gpu_wheels.sh` here first (wheels into .whl/), then there:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    python3 tools/gpu_check.py --out $OUT

Exit status 1 when a check fails (a non-finite loss, a dtype error, predictions that are not probabilities, an
exported learner that predicts differently); the table says which.
"""
import argparse, collections, statistics, sys, tempfile, time, traceback, warnings
from pathlib import Path
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from fastai.vision.all import *
from mixmo_fastai.all import *

METHODS = {
    'vanilla': lambda: [], 'manifold': lambda: [ManifoldMixup()], 'output': lambda: [OutputMixup()],
    'patchup': lambda: [PatchUp()], 'mimo': lambda: [MIMO()], 'linear_mixmo': lambda: [LinearMixMo()],
    'cutmixmo': lambda: [CutMixMo()], 'lines': lambda: [LinesSubspace()], 'swa': lambda: [SWA(start=0)],
    'packed': lambda: [PackedEnsemble()],  # grouped convolutions: cuDNN's grouped kernels, slower per FLOP on a CPU
}
PRECISIONS = {'fp32': lambda learn: learn, 'fp16': lambda learn: learn.to_fp16(), 'bf16': lambda learn: learn.to_bf16()}
_READS = ('_local_scalar_dense', 'aminmax', 'nonzero', 'is_nonzero', 'equal')  # operations that read a tensor back to the host

def random_dls(n_batches:int, bs:int, size:int, device)->DataLoaders:
    "Random images `(3, size, size)` and labels of 10 classes: `n_batches` training batches, one validation batch"
    g = torch.Generator().manual_seed(0)
    n = (n_batches + 1) * bs
    items = list(zip(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)))
    # fastai `Datasets` (picklable transforms), so that `export` can save an empty copy of the loaders
    dsets = Datasets(items, tfms=[[ItemGetter(0)], [ItemGetter(1)]], splits=[list(range(n - bs)), list(range(n - bs, n))])
    return dsets.dataloaders(bs=bs, drop_last=True, device=device, num_workers=0)

def make_learner(method:str, precision:str, dls:DataLoaders)->Learner:
    import torchvision
    set_seed(0)
    learn = Learner(dls, torchvision.models.resnet18(num_classes=10), loss_func=CrossEntropyLossFlat(), cbs=METHODS[method]())
    return PRECISIONS[precision](learn)

class _Clock(Callback):
    "Duration of each training step (CUDA events on a GPU); with `detail`, host reads per step, the loss scale, skipped steps"
    order = -1000
    def __init__(self, cuda:bool, detail:bool=False):
        self.cuda,self.detail,self.times,self.reads,self.skipped,self.mode,self.scale = cuda,detail,[],[],0,None,float('nan')
    def before_batch(self):
        if not self.training: return
        if self.cuda: self.start = torch.cuda.Event(enable_timing=True); self.start.record()
        else: self.t0 = time.perf_counter()
        if not self.detail: return  # the dispatch mode costs time: not while timing
        counts = collections.Counter()
        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in _READS: counts[func.overloadpacket.__name__] += 1
                return func(*args, **(kwargs or {}))
        self.reads.append(counts); self.mode = _Mode(); self.mode.__enter__()
    def _off(self):
        if self.mode is not None: self.mode.__exit__(None, None, None); self.mode = None
    def after_step(self):
        self._off()
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True); end.record(); self.times.append((self.start, end))
        else: self.times.append(time.perf_counter() - self.t0)
        scaler = getattr(self.learn, 'scaler', None)
        if self.detail and scaler is not None and scaler.is_enabled(): self.scale = scaler.get_scale()
    def after_cancel_step(self): self.skipped += 1; self._off()
    def after_cancel_batch(self): self._off()
    def after_fit(self): self._off()
    def durations(self)->list:
        if not self.cuda: return list(self.times)
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / 1e3 for s, e in self.times]

def train_steps(learn:Learner, n:int, cuda:bool, detail:bool=False)->_Clock:
    "`n` training steps of `learn` (one epoch of `n` batches), timed"
    clock = _Clock(cuda, detail)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-3, cbs=[clock])
    return clock

def infer_time(learn:Learner, cuda:bool, n:int=3)->float:
    "Median time of `get_preds` on the validation batch"
    ts = []
    for _ in range(n):
        if cuda: torch.cuda.synchronize()
        t = time.perf_counter()
        with learn.no_bar(): learn.get_preds()
        if cuda: torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def check(method:str, precision:str, dls:DataLoaders, steps:int, cuda:bool, tmp:Path)->dict:
    "Train, predict, export and reload one method in one precision: what went wrong, if anything, and the figures"
    res = dict(method=method, precision=precision, ok=False, problem='')
    try:
        learn = make_learner(method, precision, dls)
        if cuda: torch.cuda.reset_peak_memory_stats()
        clock = train_steps(learn, steps, cuda, detail=True)
        losses = [float(l) for l in learn.recorder.losses]
        res.update(final_loss=losses[-1] if losses else float('nan'), skipped_steps=clock.skipped,
                   scale=clock.scale,
                   reads_per_step=statistics.mean(sum(c.values()) for c in clock.reads[1:]) if len(clock.reads) > 1 else float('nan'),
                   peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else float('nan'))
        if not losses or not all(map(math.isfinite, losses)): raise AssertionError(f"non-finite training losses {losses}")
        probs, _ = learn.get_preds()
        if not torch.isfinite(probs).all() or not torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-3):
            raise AssertionError("get_preds did not return probabilities")
        learn.export(tmp/f'{method}_{precision}.pkl')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            loaded = load_learner(tmp/f'{method}_{precision}.pkl', cpu=not cuda)
        loaded.dls = learn.dls
        with loaded.no_bar(): again, _ = loaded.get_preds()
        if not torch.allclose(again.float(), probs.float(), atol=2e-2): raise AssertionError("the exported learner predicts differently")
        res.update(ok=True)
    except Exception as e:
        res['problem'] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        traceback.print_exc()
    return res

def timings(dls:DataLoaders, methods:list, precision:str, steps:int, rounds:int, cuda:bool)->dict:
    "Median step and inference time of each method, over `rounds` interleaved rounds (the first dropped)"
    learners = {m: make_learner(m, precision, dls) for m in methods}
    step, infer = collections.defaultdict(list), collections.defaultdict(list)
    for r in range(rounds):
        for m, learn in learners.items():
            d = train_steps(learn, steps, cuda).durations()[1:]  # the first step of a fit warms up
            t = infer_time(learn, cuda, 1)
            if r: step[m] += d; infer[m].append(t)
    return {m: (statistics.median(step[m]), statistics.median(infer[m])) for m in methods}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tiny', action='store_true', help='small sizes for a CPU (CI): batches of 8, 16x16 images')
    p.add_argument('--bs', type=int, default=None); p.add_argument('--size', type=int, default=None)
    p.add_argument('--steps', type=int, default=None, help='training steps per check and per timing round')
    p.add_argument('--rounds', type=int, default=None, help='interleaved timing rounds (the first is dropped)')
    p.add_argument('--methods', default=','.join(METHODS)); p.add_argument('--precisions', default=','.join(PRECISIONS))
    p.add_argument('--out', default='gpu_out')
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    bs, size, steps, rounds = (a.bs or (8 if a.tiny else 128), a.size or (16 if a.tiny else 32),
                               a.steps or (3 if a.tiny else 20), a.rounds or (2 if a.tiny else 4))
    methods, precisions = a.methods.split(','), a.precisions.split(',')
    device = torch.device('cuda' if cuda else 'cpu')
    name = torch.cuda.get_device_name() if cuda else 'CPU'
    print(f"{name}, torch {torch.__version__}, batches of {bs} at {size}x{size}, {steps} steps, {rounds} timing rounds", flush=True)
    dls = random_dls(steps, bs, size, device)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for prec in precisions:
            for m in methods:
                rows.append(check(m, prec, dls, steps, cuda, Path(tmp)))
                print(f"{prec} {m:13s} {'ok' if rows[-1]['ok'] else 'FAILED ' + rows[-1]['problem']}", flush=True)
            ok = [r['method'] for r in rows if r['precision'] == prec and r['ok']]
            ts = timings(dls, ['vanilla'] + [m for m in ok if m != 'vanilla'], prec, steps, rounds, cuda) if 'vanilla' in ok else {}
            for r in rows:
                if r['precision'] != prec or r['method'] not in ts: continue
                (s, i), (s0, i0) = ts[r['method']], ts['vanilla']
                r.update(step_ms=1e3*s, step_x=s/s0, own_pct=100*(s-s0)/s0, infer_ms=1e3*i, infer_x=i/i0)
    import pandas as pd
    df = pd.DataFrame(rows)
    df.to_csv(out/'gpu_check.csv', index=False)
    cols = ['precision', 'method', 'ok', 'final_loss', 'skipped_steps', 'scale', 'step_ms', 'step_x', 'own_pct',
            'infer_ms', 'infer_x', 'peak_mib', 'reads_per_step', 'problem']
    md = [f"{name}, torch {torch.__version__}, torchvision resnet18, batches of {bs} at {size}x{size}, {steps} steps "
          f"per fit, medians over {rounds - 1} timed rounds ({time.perf_counter() - t0:.0f} s in all)", '',
          '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    fmt = lambda v: f'{v:.3g}' if isinstance(v, float) else str(v)
    for _, r in df.reindex(columns=cols).iterrows(): md.append('| ' + ' | '.join(fmt(r[c]) if r[c] == r[c] else '—' for c in cols) + ' |')
    (out/'gpu_check.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))
    return 0 if df['ok'].all() else 1

if __name__ == '__main__': sys.exit(main())
