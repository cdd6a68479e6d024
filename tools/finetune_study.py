"""Fine-tuning study of issue 28: a network pretrained on six Fashion-MNIST classes (T-shirt/top, Trouser, Pullover,
Dress, Coat, Bag: 36,000 images), fine-tuned on the four others (Sandal, Shirt, Sneaker, Ankle boot) from a few
images per class through fastai's `vision_learner` + `fine_tune`, with each converting callback and its
initialisation policy; the same network trained from scratch on the same images for comparison.

    python tools/finetune_study.py pretrain --arch digits_net      # ~10 min on one thread: models/pretrained/*.pth
    python tools/finetune_study.py run --arch digits_net --seeds 0,1,2 --rows vanilla,cutmixmo_copy,...
    python tools/finetune_study.py table --csv nbs/finetune_study.csv   # mean ± std over seeds from the cached runs

Issue 37's protocols, each with 1,000 training images, fastai's `fine_tune` defaults (base_lr 2e-3, one frozen epoch,
lr_mult 100) and a longer budget, 3 seeds (tasks: `fashion4_250`, the four held-out classes, 250 images each, 500 test
images per class; `hard_digits_100`, across domains: the distorted handwritten digits, 100 images per class, 28x28):

    python tools/finetune_study.py run --task fashion4_250 --epochs 5 --seeds 0,1,2 --rows vanilla,cutmixmo,mimo,ensemble2
    python tools/finetune_study.py run --task hard_digits_100 --epochs 5 --seeds 0,1,2 --rows ...
    python tools/finetune_study.py run --task fashion4_250 --modes plain_learner --epochs 5 --rows vanilla,cutmixmo,mimo
    python tools/finetune_study.py table --protocols-csv nbs/finetune_protocols.csv   # also writes nbs/results/finetune_TASK.csv, .json

Mode plain_learner: the pretrained weights loaded into a plain `Learner` (new last layer), nothing frozen,
fit_one_cycle(epochs, lr). Every record has the NLL before and after temperature scaling (fitted on half of the
test images, measured on the other half: `ts_nll_before`, `ts_nll_after`) and the training time (`train_seconds`).

Modes: finetune (vision_learner(pretrained=True) + fine_tune(epochs, lr)), scratch (pretrained=False,
fit_one_cycle(epochs+1, 1e-2)), bench (the hard_digits benchmark's Learner(digits_net(32)), fit_one_cycle(epochs, 1e-2)):
the `lr` column is the --lr of the invocation, used by finetune only. The documented runs:

    python tools/finetune_study.py run --seeds 0,1,2 --modes finetune --epochs 20 --lr 1e-2 --task fashion4_20 --rows ...
    python tools/finetune_study.py run --seeds 0,1,2 --modes bench --epochs 40 --task hard_digits --rows ...

Every run is cached as one JSON line in bench_out/finetune/runs.jsonl (a run already there is not repeated).
"""
import argparse, json, time, sys
import pandas as pd
from pathlib import Path
import torch
from fastai.vision.all import *
from mixmo_fastai.all import *

OUT = Path('bench_out/finetune'); PRE = Path('models/pretrained')
PRETRAIN = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Bag']
TARGET = ['Sandal', 'Shirt', 'Sneaker', 'Ankle boot']

def base_model(arch, n_out=10, in_chans=1):
    if arch == 'digits_net': return digits_net(32, in_chans, n_out)
    import torchvision.models as tvm
    return tvm.resnet18(num_classes=n_out)  # 3 channels

def channels(arch): return 1 if arch == 'digits_net' else 3

def pretrain(arch, epochs, n_per_class):
    "The network trained on the six pretraining classes of Fashion-MNIST, its state dict saved"
    PRE.mkdir(parents=True, exist_ok=True)
    path = PRE/f'fashion6_{arch}.pth'
    set_seed(0, reproducible=True)
    dls = fashion_mnist_dls(bs=128, n_per_class=n_per_class, channels=channels(arch), classes=PRETRAIN)
    learn = Learner(dls, base_model(arch, len(PRETRAIN), in_chans=channels(arch)), metrics=accuracy)
    t = time.time(); learn.fit_one_cycle(epochs, 1e-2)
    torch.save(learn.model.state_dict(), path)
    print(f"{arch}: Fashion-MNIST accuracy {learn.validate()[1]:.4f} after {epochs} epochs ({time.time()-t:.0f} s); saved {path}")

class Pretrained:
    "Picklable model function for `vision_learner`: the saved network (`pretrained=True`) or a fresh one"
    def __init__(self, arch): self.arch = arch
    def __call__(self, pretrained=False):
        "A 3-channel network, as fastai's model functions make (vision_learner(n_in=1) sums the first layer's weights back)"
        m = base_model(self.arch, len(PRETRAIN), in_chans=3)
        if pretrained:
            sd = torch.load(PRE/f'fashion6_{self.arch}.pth')
            if self.arch == 'digits_net': sd['0.0.weight'] = sd['0.0.weight'].repeat(1, 3, 1, 1) / 3
            m.load_state_dict(sd)
        return m

ROWS = {  # row -> callbacks; the MixMo/line variants differ in how the added members/endpoints start
    'vanilla': lambda: [],
    'cutmixmo': lambda: [CutMixMo()], 'mimo': lambda: [MIMO()], 'lines': lambda: [LinesSubspace()],  # the defaults ('auto')
    'manifold': lambda: [ManifoldMixup()],
    'output': lambda: [OutputMixup()],
    'cutmixmo_fresh': lambda: [CutMixMo(encoder_init='fresh')],
    'cutmixmo_copy': lambda: [CutMixMo(encoder_init='copy')],
    'cutmixmo_noise': lambda: [CutMixMo(encoder_init=0.1)],
    'mimo_fresh': lambda: [MIMO(encoder_init='fresh')],
    'mimo_copy': lambda: [MIMO(encoder_init='copy')],
    'mimo_noise': lambda: [MIMO(encoder_init=0.1)],
    'linear_mixmo_fresh': lambda: [LinearMixMo(encoder_init='fresh')],
    'linear_mixmo_copy': lambda: [LinearMixMo(encoder_init='copy')],
    'cutmixmo_copy_enc_trains': lambda: [CutMixMo(encoder_init='copy')],  # + the encoders in the head's group (see make)
    'cutmixmo_fresh_enc_trains': lambda: [CutMixMo(encoder_init='fresh')],
    'lines_fresh': lambda: [LinesSubspace(point_init='fresh')],
    'lines_copy': lambda: [LinesSubspace(point_init='copy')],
    'lines_noise': lambda: [LinesSubspace(point_init=0.1)],
    'lines_noise5': lambda: [LinesSubspace(point_init=0.5)],
}

class ValidateAtEnd(Callback):
    "No validation during the fits (the study evaluates once, after training)"
    order = 1000
    def before_validate(self): raise CancelValidException()

def fit(learn, mode, epochs, lr, lr_mult=100):
    learn.add_cb(ValidateAtEnd())
    with learn.no_bar(), learn.no_logging():
        if mode == 'finetune': learn.fine_tune(epochs, lr, freeze_epochs=1, lr_mult=lr_mult)
        elif mode == 'plain_learner': learn.fit_one_cycle(epochs, lr)
        elif mode == 'bench': learn.fit_one_cycle(epochs, 1e-2)
        else: learn.fit_one_cycle(epochs + 1, 1e-2)  # from scratch: the benchmark's learning rate
    learn.remove_cb(ValidateAtEnd)

def evaluate_rows(learn, row):
    "(row, metrics) for the learner; a line gives its midpoint and its ends' ensemble"
    def one():
        logits, members, targs = get_member_preds(learn)
        ms = members if members is not None else logits[:, None]
        r, ts = calibration_metrics(logits, targs), temperature_report(logits, targs, calib_pct=0.5)
        return dict(accuracy=r['accuracy'], nll=r['nll'], ece=r['ece'], brier=r['brier'],
                    member_accuracy=member_accuracies(ms, targs).tolist(), temperature=ts['temperature'],
                    ts_nll_before=ts['nll_before'], ts_nll_after=ts['nll_after'], ts_ece_after=ts['ece_after'])
    with learn.no_bar():
        if not row.startswith('lines'): return [(row, one())]
        cb = first(c for c in learn.cbs if isinstance(c, SubspaceCallback))
        out = []
        for name, pts in (('midpoint', (0.5,)), ('ends', (0., 1.))):
            with cb.evaluating(*pts): out.append((f'{row}_{name}', one()))
        return out

def make(arch, row, mode, seed, dls):
    set_seed(seed, reproducible=True)
    for dl in dls.loaders: dl.rng = random.Random(seed)
    cbs = ROWS[row]()
    if mode == 'bench': return Learner(dls, digits_net(32), cbs=cbs)  # the hard_digits benchmark's setting (8x8)
    if mode == 'plain_learner':  # a user's checkpoint loaded into the network, its last layer replaced, in a plain Learner
        net = base_model(arch, len(PRETRAIN), in_chans=channels(arch))
        net.load_state_dict(torch.load(PRE/f'fashion6_{arch}.pth'))
        if arch != 'digits_net': raise ValueError("plain_learner: digits_net only")
        net[-1] = nn.Linear(net[-1].in_features, dls.c)
        return Learner(dls, net, cbs=cbs)
    learn = vision_learner(dls, Pretrained(arch), n_in=1, n_out=dls.c, pretrained=mode == 'finetune', cbs=cbs)
    if row.endswith('_enc_trains'):  # the members' encoders train in the frozen phase too: they join the head's group
        enc = mixmo_parts(learn.model)[0]
        ids = {id(p) for p in enc.parameters()}
        learn.splitter = lambda m: [[p for p in m[0].parameters() if id(p) not in ids], list(enc.parameters()) + list(m[1].parameters())]
        learn.create_opt()
        if mode == 'finetune': learn.freeze()
    return learn

def task_dls(task):
    if task == 'hard_digits': return hard_digits_dls(bs=64)  # the benchmark's 8x8 task, from scratch ('bench' mode)
    if task.startswith('hard_digits_'):  # across domains: Fashion-MNIST photos -> distorted handwritten digits, 28x28
        return hard_digits_dls(bs=32, size=28, n_per_class=int(task.split('_')[-1]))
    n_valid = 500 if task == 'fashion4_250' else None
    return fashion_mnist_dls(bs=32, n_per_class=int(task.split('_')[1]), n_valid_per_class=n_valid, classes=TARGET)  # 'fashion4_50': 50 images per class

def run(arch, rows, seeds, modes, epochs, lr, task, lr_mult=100):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT/'runs.jsonl'
    done = {(r['arch'], r['row'], r['mode'], r['seed'], r['epochs'], r['task'], r['lr'], r.get('lr_mult', 100)) for r in map(json.loads, path.read_text().splitlines())} if path.exists() else set()
    dls = task_dls(task)
    ens = {}
    for seed in seeds:
        for mode in modes:
            for row in rows:
                key = (arch, row, mode, seed, epochs, task, lr, lr_mult)
                if key in done: continue
                t = time.time()
                if row == 'ensemble2':  # two vanilla fine-tunes (seeds s and s+100), logits averaged: 2x the compute
                    learns = []
                    for s in (seed, seed + 100):
                        l = make(arch, 'vanilla', mode, s, dls); fit(l, mode, epochs, lr, lr_mult); learns.append(l)
                    learn = Learner(dls, DeepEnsemble([l.model for l in learns]), cbs=MembersToEnsemble())
                else:
                    learn = make(arch, row, mode, seed, dls); fit(learn, mode, epochs, lr, lr_mult)
                train_seconds = round(time.time() - t, 1)
                for name, r in evaluate_rows(learn, row):
                    rec = dict(arch=arch, row=row, name=name, mode=mode, seed=seed, epochs=epochs, task=task, lr=lr,
                               lr_mult=lr_mult, seconds=round(time.time() - t, 1), train_seconds=train_seconds, **r)
                    with open(path, 'a') as f: f.write(json.dumps(rec) + '\n')
                    print(f"{arch} {mode:8s} {name:26s} seed {seed}  acc {r['accuracy']:.4f}  NLL {r['nll']:.4f}  ECE {r['ece']:.4f}  "
                          f"members {' / '.join(f'{a:.3f}' for a in r['member_accuracy'])}  ({time.time()-t:.0f} s)", flush=True)

PROTOCOLS = ['fashion4_250', 'hard_digits_100']

def protocols_table(df, csv):
    "Issue 37's protocols: mean ± std over seeds of each row, and the Welch p-values of its gaps to plain fine-tuning (vanilla)"
    from scipy.stats import ttest_ind
    df = df[df['task'].isin(PROTOCOLS) & (df['arch'] == 'digits_net')].copy()
    keys = ['task', 'mode', 'epochs', 'lr', 'lr_mult']
    rows = []
    for k, g in df.groupby(keys):
        base = g[g['name'] == 'vanilla'].sort_values('seed')
        for name, r in g.groupby('name'):
            row = dict(zip(keys, k), name=name, n=len(r))
            for m in ('accuracy', 'nll', 'ts_nll_after', 'ece', 'temperature', 'train_seconds'):
                row[m], row[f'{m}_std'] = r[m].mean(), r[m].std()
            row['train_cost'] = r['train_seconds'].mean() / base['train_seconds'].mean() if len(base) else float('nan')
            for m in ('accuracy', 'nll', 'ts_nll_after'):
                ok = len(base) > 1 and len(r) > 1 and name != 'vanilla'
                row[f'{m}_vs_vanilla'] = r[m].mean() - base[m].mean() if len(base) else float('nan')
                row[f'{m}_p'] = ttest_ind(r[m], base[m], equal_var=False).pvalue if ok else float('nan')
            rows.append(row)
    t = pd.DataFrame(rows).round(4)
    pd.set_option('display.width', 250); print(t.to_string(index=False))
    Path(csv).parent.mkdir(parents=True, exist_ok=True); t.to_csv(csv, index=False); print(f"wrote {csv}")
    import mixmo_fastai
    for task in sorted(set(t['task'])):
        write_results(t, task, dict(
            date=time.strftime('%-d %b %Y'), command=f"python tools/finetune_study.py run --task {task} --seeds 0,1,2 (one call per setting of the table), summarised by python tools/finetune_study.py table --protocols-csv {csv}",
            settings=PROTOCOL_META[task], version=mixmo_fastai.__version__, machine="2 CPU cores, this project's virtual machine, one thread per run, two runs at a time",
            note="Mean ± std over seeds 0-2. Temperature scaling (TS) fitted on half of the test images, NLL measured on the other half (also before: the study's CSV). Gaps to plain fine-tuning at the same setting, Welch p-values over the 3 seeds. Cost per training step: the cost page (the runs' wall-clock, two runs sharing two cores, is in the study's CSV and too noisy to show).",
            source=f"the study's own summary, {csv} (every run cached in bench_out/finetune/runs.jsonl)"))

LABELS = {'vanilla': 'plain fine-tuning', 'cutmixmo': '`CutMixMo()`', 'mimo': '`MIMO()`', 'ensemble2': 'deep ensemble of 2 (2x)',
          'lines_midpoint': '`LinesSubspace()`: midpoint', 'lines_ends': '`LinesSubspace()`: ends'}
RESULTS = Path(__file__).resolve().parent.parent/'nbs'/'results'

def _setting(r):
    if r['mode'] == 'plain_learner': return f"plain `Learner`, `fit_one_cycle({r['epochs']}, {r['lr']:g})`, nothing frozen"
    return f"`fine_tune({r['epochs']}, {r['lr']:g}" + (f", lr_mult={r['lr_mult']:g}" if r['lr_mult'] != 100 else '') + ")`"

def _pm(m, s, d=3): return f"{m:.{d}f} ± {s:.{d}f}"
def _gap(d, p): return '' if pd.isna(p) else f"{d:+.3f} (p {'< 0.01' if p < 0.01 else f'= {p:.2f}'})"

def write_results(t, task, meta):
    "The protocol's table as shown (`nbs/results/finetune_<task>.csv`) and its run (`.json`), for tools/results.py"
    import csv as _csv
    t = t[t['task'] == task].copy()
    t['order'] = t['name'].map({n: i for i, n in enumerate(LABELS)})
    t = t.sort_values(['mode', 'epochs', 'lr', 'lr_mult', 'order'], ascending=[True, True, True, False, True])
    rows = [['training', 'method', 'accuracy', 'NLL', 'NLL after TS', 'temperature', 'accuracy vs plain', 'NLL vs plain', 'NLL after TS vs plain']]
    for _, r in t.iterrows():
        label = 'plain training' if r['name'] == 'vanilla' and r['mode'] == 'plain_learner' else LABELS.get(r['name'], r['name'])
        rows.append([_setting(r), label, _pm(r['accuracy'], r['accuracy_std']), _pm(r['nll'], r['nll_std']),
                     _pm(r['ts_nll_after'], r['ts_nll_after_std']), f"{r['temperature']:.2f}",
                     _gap(r['accuracy_vs_vanilla'], r['accuracy_p']), _gap(r['nll_vs_vanilla'], r['nll_p']), _gap(r['ts_nll_after_vs_vanilla'], r['ts_nll_after_p'])])
    with open(RESULTS/f'finetune_{task}.csv', 'w', newline='') as f: _csv.writer(f).writerows(rows)
    (RESULTS/f'finetune_{task}.json').write_text(json.dumps(meta, indent=1) + '\n')
    print(f"wrote {RESULTS/f'finetune_{task}.csv'}")

PROTOCOL_META = {
    'fashion4_250': "digits_net(32) pretrained on six Fashion-MNIST classes (36,000 photos, 5 epochs), fine-tuned on the four others: 250 training photos per class (1,000), 500 test photos per class (2,000), batch 32, `vision_learner(n_in=1)`",
    'hard_digits_100': "across domains: digits_net(32) pretrained on six Fashion-MNIST classes (photos of clothes), fine-tuned on the hard digits (distorted handwritten digits, 28x28): 100 training images per class (1,000), 1,077 distorted test images, batch 32, `vision_learner(n_in=1)`",
}

OLD_LABELS = {  # issue 28's protocol (fashion4_20): row -> label, in the order shown
    'vanilla': 'plain fine-tuning', 'ensemble2': 'deep ensemble of 2 fine-tunes (2x)', 'manifold': '`ManifoldMixup()`',
    'output': '`OutputMixup()`', 'cutmixmo_fresh': "`CutMixMo(encoder_init='fresh')`", 'cutmixmo_copy': "`CutMixMo(encoder_init='copy')`",
    'cutmixmo_noise': '`CutMixMo(encoder_init=0.1)`', 'cutmixmo_copy_enc_trains': "`CutMixMo('copy')`, encoders trained while the body is frozen",
    'linear_mixmo_fresh': "`LinearMixMo(encoder_init='fresh')`", 'linear_mixmo_copy': "`LinearMixMo(encoder_init='copy')`",
    'mimo_fresh': "`MIMO(encoder_init='fresh')`", 'mimo_copy': "`MIMO(encoder_init='copy')`", 'mimo_noise': '`MIMO(encoder_init=0.1)`',
    'lines_fresh_midpoint': "line, fresh endpoint: midpoint", 'lines_fresh_ends': "line, fresh endpoint: ends",
    'lines_copy_midpoint': "line, exact copy: midpoint", 'lines_copy_ends': "line, exact copy: ends",
    'lines_noise_midpoint': "line, σ = 0.1: midpoint", 'lines_noise_ends': "line, σ = 0.1: ends",
    'lines_noise5_midpoint': "`LinesSubspace()` (σ = 0.5): midpoint", 'lines_noise5_ends': "`LinesSubspace()` (σ = 0.5): ends",
}

def old_protocol_results(summary=Path(__file__).resolve().parent.parent/'nbs'/'finetune_study.csv'):
    "Issue 28's table (20 images per class) as shown, from the study's committed summary: `nbs/results/finetune_fashion4_20.csv`"
    import csv as _csv
    s = pd.read_csv(summary)
    s = s[(s['task'] == 'fashion4_20') & (s['arch'] == 'digits_net')]
    def cell(mode, name, epochs=20):
        r = s[(s['mode'] == mode) & (s['name'] == name) & (s['epochs'] == epochs)]
        return [f"{r['acc'].item():.3f}", f"{r['nll'].item():.3f}"] if len(r) else ['', '']
    rows = [['method', 'fine-tuned 20 epochs: accuracy', 'NLL', 'from scratch, same callback: accuracy', 'NLL']]
    rows.append(['plain fine-tuning, 40 epochs (2x)'] + cell('finetune', 'vanilla', 40) + cell('scratch', 'vanilla', 40))
    for name, label in OLD_LABELS.items(): rows.append([label] + cell('finetune', name) + cell('scratch', name))
    rows.insert(2, rows.pop(1))
    with open(RESULTS/'finetune_fashion4_20.csv', 'w', newline='') as f: _csv.writer(f).writerows(rows)
    print(f"wrote {RESULTS/'finetune_fashion4_20.csv'}")

def table(csv=None, protocols_csv=None):
    df = pd.read_json(OUT/'runs.jsonl', lines=True)
    if 'lr_mult' not in df: df['lr_mult'] = 100
    df['lr_mult'] = df['lr_mult'].fillna(100)
    if protocols_csv: return protocols_table(df, protocols_csv)
    if csv: df = df[(df['task'] == 'fashion4_20') & (df['lr'] == 1e-2) | (df['task'] == 'hard_digits') & (df['mode'] == 'bench')]
    g = df.groupby(['task', 'arch', 'epochs', 'lr', 'mode', 'name'])
    t = g.agg(acc=('accuracy', 'mean'), acc_std=('accuracy', 'std'), nll=('nll', 'mean'), nll_std=('nll', 'std'),
              ece=('ece', 'mean'), n=('seed', 'count')).reset_index()
    pd.set_option('display.width', 200); pd.set_option('display.max_rows', 500)
    print(t.round(4).to_string(index=False))
    if csv: t.round(4).to_csv(csv, index=False); print(f"wrote {csv}")

DETECT_FAMILIES = {  # name -> (model, epochs that make it trained)
    'digits_net(16)': (lambda: digits_net(16, channels=3), 1),
    "fastai's xresnet18": (lambda: xresnet18(n_out=10), 1),
    '`vision_learner` body + head (resnet18)': (lambda: create_vision_model(resnet18, 10, pretrained=False), 1),
    "torchvision's resnet18": (lambda: __import__('torchvision').models.resnet18(weights=None, num_classes=10), 1),
    "torchvision's mobilenet_v3_small": (lambda: __import__('torchvision').models.mobilenet_v3_small(weights=None, num_classes=10), 1),
    "timm's resnet18": (lambda: __import__('timm').create_model('resnet18', num_classes=10), 1),
    "timm's efficientnet_b0": (lambda: __import__('timm').create_model('efficientnet_b0', num_classes=10), 1),
    'a CNN without norm layers': (lambda: nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)), 12),
    "timm's vit_tiny_patch16_224 (LayerNorm)": (lambda: __import__('timm').create_model('vit_tiny_patch16_224', num_classes=10), 0),
    "timm's convnext_atto (LayerNorm)": (lambda: __import__('timm').create_model('convnext_atto', num_classes=10), 0),
}

def detect():
    "`looks_pretrained` on a fresh and a trained network of each family (trained: `fit_one_cycle(epochs, 3e-3)` on 256 digits, 32x32): the results file"
    import csv as _csv, mixmo_fastai
    from fastai.data.transforms import IndexSplitter
    block = digits_block(size=32, channels=3); train, valid = digits_split(); items = train[:256] + valid[:64]
    block.get_items = lambda _: items; block.splitter = IndexSplitter(list(range(256, 320)))
    dls = block.dataloaders(None, bs=32, device='cpu', num_workers=0)
    def spectra(m): r = spectral_ratios(m); return f"{r.median():.2f} / {(r > 1.3).float().mean():.2f}" if len(r) else '—'
    def say(v): return {True: 'pretrained', False: 'fresh', None: 'cannot tell'}[v]
    rows = [['network', 'signal', 'fresh: answer', 'fresh: median ratio / share > 1.3', 'trained: epochs on 256 digits', 'trained: answer', 'trained: median ratio / share > 1.3', 'trained: accuracy']]
    for name, (make, epochs) in DETECT_FAMILIES.items():
        set_seed(0); m = make()
        signal = 'BatchNorm statistics' if bn_has_seen_data(m) is not None else 'weight spectra'
        row = [name, signal, say(looks_pretrained(m)), spectra(m)]
        if epochs:
            learn = Learner(dls, m, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
            with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 3e-3); acc = learn.validate()[1]
            row += [str(epochs), say(looks_pretrained(m)), spectra(m), f"{acc:.3f}"]
        else: row += ['not trained here', '', '', '']
        rows.append(row); print(row, flush=True)
    net = base_model('digits_net', len(PRETRAIN)); net.load_state_dict(torch.load(PRE/'fashion6_digits_net.pth'))
    fresh = base_model('digits_net', len(PRETRAIN))
    rows.append(["digits_net(32) pretrained on six Fashion-MNIST classes (this study's, 5 epochs)", 'BatchNorm statistics', say(looks_pretrained(fresh)),
                 spectra(fresh), 'pretrained', say(looks_pretrained(net)), spectra(net), '', ])
    with torch.no_grad(): acc6 = Learner(fashion_mnist_dls(bs=256, classes=PRETRAIN), net, metrics=accuracy).validate()[1]  # the pretraining's data: its normalisation
    rows[-1][-1] = f"{acc6:.3f} (its 6,000 test photos)"
    with open(RESULTS/'pretrained_detector.csv', 'w', newline='') as f: _csv.writer(f).writerows(rows)
    (RESULTS/'pretrained_detector.json').write_text(json.dumps(dict(
        date=time.strftime('%-d %b %Y'), command='python tools/finetune_study.py detect',
        settings='trained: fit_one_cycle(epochs, 3e-3) on 256 digits at 32x32, 3 channels, batch 32; accuracy on 64 held-out digits',
        version=mixmo_fastai.__version__, machine="2 CPU cores, this project's virtual machine, one thread",
        note="Ratio: a layer's largest singular value over std*(sqrt(rows)+sqrt(cols)), about 1 for any i.i.d. draw; read only where the network keeps no BatchNorm statistics. The LayerNorm networks were not trained here (no pretrained weights offline, too slow on a CPU).",
        source='the run itself'), indent=1) + '\n')
    print(f"wrote {RESULTS/'pretrained_detector.csv'}")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('cmd', choices=['pretrain', 'run', 'table', 'detect'])
    p.add_argument('--arch', default='digits_net')
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--n-per-class', type=int, default=None)
    p.add_argument('--rows', default='vanilla')
    p.add_argument('--seeds', default='0')
    p.add_argument('--modes', default='finetune')
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--lr-mult', type=float, default=100, help="fine_tune's lr_mult (the head's rate over the body's first layers')")
    p.add_argument('--task', default='fashion4_50')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--csv', default=None, help='table: also write the summary of the documented settings here')
    p.add_argument('--protocols-csv', default=None, help="table: write issue 37's protocols (mean, std, gaps to vanilla and their p-values) here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd == 'pretrain': pretrain(a.arch, a.epochs, a.n_per_class)
    elif a.cmd == 'table' and a.csv is None and a.protocols_csv is None: old_protocol_results()
    elif a.cmd == 'detect': detect()
    elif a.cmd == 'run': run(a.arch, a.rows.split(','), [int(s) for s in a.seeds.split(',')], a.modes.split(','), a.epochs, a.lr, a.task, a.lr_mult)
    else: table(a.csv, a.protocols_csv)
