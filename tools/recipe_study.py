"""Recipe study of issue 27 (section 3): on the Fashion-MNIST task, the settings under which the one-network ensembles
(CutMixMo, MIMO, the line) beat plain training at equal training compute, and how close they come to a deep ensemble.

A recipe is a bench method with optional keyword arguments for its callback: `cutmixmo`, `cutmixmo:keep_frac=0.25`, `cutmixmo:alpha=1+box_prob=0.2`,
`mimo:alpha=0`, `lines`, `vanilla`, `ensemble2` (two vanilla runs of seeds s and s+100, logits averaged). Each run trains
`digits_net(width)` (or, with `--net`, a deeper network: `resnet3`, a third `ResBlock` stage of 4 x width
channels at 7x7; `xresnet18`, fastai's 18-layer ResNet, 64 to 512 channels, `width` unused) with `fit_one_cycle(epochs, lr)` on a balanced `n` images per class of the 60,000 (300 test images
per class, the benchmark's 3,000) and is cached as one JSON line in bench_out/recipes/runs.jsonl (never repeated):

    python tools/recipe_study.py run --recipes vanilla,cutmixmo,mimo,lines --epochs 30 --seeds 0,1,2
    python tools/recipe_study.py table                   # mean ± std over seeds, Welch's p against vanilla
    python tools/recipe_study.py table --csv nbs/recipe_study.csv
    python tools/recipe_study.py plot --net xresnet18 --png nbs/images/recipe_xresnet18.png   # accuracy, NLL vs compute

Equal training compute: run vanilla for the epochs whose cost matches (a method's step time over vanilla's, from
`mixmo-fastai bench --task fashion_mnist --timing-only` on an idle machine).
"""
import argparse, json, os, random, time
from pathlib import Path
import torch
from fastai.vision.all import *
from mixmo_fastai.all import *
from mixmo_fastai.bench import METHODS, evaluations, get_model, welch_p

OUT = Path('bench_out/recipes')
CALLBACKS = {'vanilla': None, 'mixup': MixUp, 'manifold': ManifoldMixup, 'output': OutputMixup, 'mimo': MIMO,
             'linear_mixmo': LinearMixMo, 'cutmixmo': CutMixMo, 'lines': LinesSubspace, 'swa': SWA}

def parse(recipe):
    "'cutmixmo:keep_frac=0.25+alpha=1' -> ('cutmixmo', {'keep_frac': 0.25, 'alpha': 1.0})"
    name, _, args = recipe.partition(':')
    kw = {}
    for a in filter(None, args.split('+')):
        k, v = a.split('=')
        try: kw[k] = float(v)
        except ValueError: kw[k] = v
    return name, kw

def network(net, width, c):
    "The study's networks: `digits_net`, the same with a third stage (`resnet3`), fastai's `xresnet18`"
    if net == 'digits': return get_model('digits_net', 1, c, width)
    if net == 'resnet3': return nn.Sequential(ConvLayer(1, width, ks=3), ResBlock(1, width, width),
                                              ResBlock(1, width, 2*width, stride=2), ResBlock(1, 2*width, 4*width, stride=2),
                                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4*width, c))
    if net == 'xresnet18': return get_model('xresnet18', 1, c)
    raise ValueError(f"unknown --net {net!r}: digits, resnet3 or xresnet18")

def learner(recipe, dls, width, seed, net='digits'):
    name, kw = parse(recipe)
    set_seed(seed, reproducible=True)
    for dl in dls.loaders: dl.rng = random.Random(seed)
    cb = CALLBACKS[name]
    return Learner(dls, network(net, width, dls.c), cbs=[cb(**kw)] if cb else [])

def fit(learn, epochs, lr):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr)
    return learn

def run(recipes, seeds, n, width, epochs, lr, bs, net='digits'):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT/'runs.jsonl'
    key = lambda r: (r['recipe'], r['n'], r['width'], r['epochs'], r['lr'], r['bs'], r['seed'], r.get('net', 'digits'))
    done = {key(json.loads(l)) for l in path.read_text().splitlines()} if path.exists() else set()
    dls = fashion_mnist_dls(bs=bs, n_per_class=n, n_valid_per_class=300)
    for seed in seeds:
        for recipe in recipes:
            cfg = dict(recipe=recipe, n=n, width=width, epochs=epochs, lr=lr, bs=bs, seed=seed, net=net)
            if key(cfg) in done: continue
            t = time.time()
            name, _ = parse(recipe)
            if name == 'ensemble2':
                models = [fit(learner('vanilla', dls, width, s, net), epochs, lr).model for s in (seed, seed + 100)]
                learn, method = Learner(dls, DeepEnsemble(models), cbs=MembersToEnsemble()), 'ensemble2'
            else: learn, method = fit(learner(recipe, dls, width, seed, net), epochs, lr), name
            if method not in METHODS: method = 'vanilla'  # one evaluation row
            for row, r in evaluations(method, learn).items():
                r.pop('logits'), r.pop('targs')
                row = recipe if name != 'lines' else recipe + row[len('lines'):]
                rec = dict(cfg, row=row, seconds=round(time.time() - t, 1), **r)
                with open(path, 'a') as f: f.write(json.dumps(rec) + '\n')
                print(f"{row:32s} {net} n {n} w {width} ep {epochs} lr {lr:g} seed {seed}: acc {r['accuracy']:.4f}  "
                      f"NLL {r['nll']:.4f}  ECE {r['ece']:.4f}  ({time.time() - t:.0f} s)", flush=True)

def _runs():
    "Every cached run; runs from before `--net` existed are on `digits_net`"
    import pandas as pd
    df = pd.read_json(OUT/'runs.jsonl', lines=True)
    df['net'] = df['net'].fillna('digits') if 'net' in df else 'digits'
    return df

def table(csv=None):
    import pandas as pd
    df = _runs()
    rows = []
    for (net, n, w, lr, bs), g in df.groupby(['net', 'n', 'width', 'lr', 'bs']):
        for (row, ep), r in g.groupby(['row', 'epochs']):
            rows.append(dict(net=net, n=n, width=w, lr=lr, bs=bs, row=row, epochs=ep, seeds=len(r), seconds=r['seconds'].mean(),
                             accuracy=r['accuracy'].mean(), accuracy_std=r['accuracy'].std(), nll=r['nll'].mean(),
                             nll_std=r['nll'].std(), ece=r['ece'].mean(),
                             members=' / '.join(f'{a:.3f}' for a in np.mean(r['member_accuracy'].tolist(), 0))))
    t = pd.DataFrame(rows).sort_values(['net', 'n', 'width', 'lr', 'bs', 'epochs', 'row'])
    pd.set_option('display.width', 250); pd.set_option('display.max_rows', 500)
    print(t.round(4).to_string(index=False))
    if csv:
        t.round(4).to_csv(csv, index=False)
        # what the summary comes from, next to it (the format of the results files, nbs/results/*.json)
        import platform, mixmo_fastai
        meta = dict(date=time.strftime('%d %b %Y').lstrip('0'), command=f"python tools/recipe_study.py table --csv {csv}",
                    settings=f"mean ± std over the cached runs of {OUT/'runs.jsonl'} ({len(df)} runs)",
                    version=mixmo_fastai.__version__, machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                    note='', source='written by tools/recipe_study.py')
        Path(csv).with_suffix('.json').write_text(json.dumps(meta, indent=1, ensure_ascii=False) + '\n')
        print(f"wrote {csv} and its .json")

def versus(row, epochs, ref_epochs, n=200, width=32, lr=1e-2, bs=64, net='digits'):
    "Accuracy and NLL of `row` at `epochs` against vanilla at `ref_epochs`: differences and Welch's p over the seeds"
    df = _runs()
    sel = (df['net'] == net) & (df['n'] == n) & (df['width'] == width) & (df['lr'] == lr) & (df['bs'] == bs)
    a, b = df[sel & (df['row'] == row) & (df['epochs'] == epochs)], df[sel & (df['row'] == 'vanilla') & (df['epochs'] == ref_epochs)]
    for c in ('accuracy', 'nll'):
        print(f"{row} @ {epochs} vs vanilla @ {ref_epochs}: {c} {a[c].mean() - b[c].mean():+.4f} (p = {welch_p(a[c], b[c]):.3f}, "
              f"{len(a)} / {len(b)} seeds)")

def plot(out, n=200, width=32, lr=1e-2, bs=64, net='digits'):
    "Accuracy and NLL against epochs (mean ± std over seeds) of every row trained in one setting, ensembles' cost marked"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    df = _runs()
    df = df[(df['net'] == net) & (df['n'] == n) & (df['width'] == width) & (df['lr'] == lr) & (df['bs'] == bs)]
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    for row, g in df.groupby('row'):
        s = g.groupby('epochs')[['accuracy', 'nll']].agg(['mean', 'std']).fillna(0)
        if row == 'ensemble2': s.index = s.index * 2  # two networks: twice the training compute of one at those epochs
        for ax, c in zip(axs, ('accuracy', 'nll')):
            ax.errorbar(s.index, s[(c, 'mean')], s[(c, 'std')], marker='o', capsize=3,
                        label=row + (' (x-axis: 2 x its epochs)' if row == 'ensemble2' else ''))
    for ax, c in zip(axs, ('accuracy', 'NLL')):
        ax.set_xlabel("epochs (the deep ensemble: its two networks' epochs together)"); ax.set_ylabel(c); ax.grid(alpha=.3)
    axs[0].legend(fontsize=8)
    fig.suptitle(f"Fashion-MNIST, {n} images per class, {net}" + (f" width {width}" if net != 'xresnet18' else '')
                 + f", fit_one_cycle(epochs, {lr:g}): mean ± std over seeds", fontsize=10)
    fig.tight_layout(); fig.savefig(out, dpi=110); print(f"wrote {out}")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('cmd', choices=['run', 'table', 'versus', 'plot'])
    p.add_argument('--recipes', default='vanilla')
    p.add_argument('--seeds', default='0')
    p.add_argument('--n', type=int, default=200, help='training images per class')
    p.add_argument('--width', type=int, default=32)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--ref-epochs', type=int, default=None, help='versus: vanilla\'s epochs')
    p.add_argument('--lr', type=float, default=1e-2)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--net', default='digits', choices=['digits', 'resnet3', 'xresnet18'])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--csv', default=None)
    p.add_argument('--png', default='nbs/images/recipe_study.png', help='plot: where the figure goes')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd == 'run': run(a.recipes.split(','), [int(s) for s in a.seeds.split(',')], a.n, a.width, a.epochs, a.lr, a.bs, a.net)
    elif a.cmd == 'table': table(a.csv)
    elif a.cmd == 'plot': plot(a.png, a.n, a.width, a.lr, a.bs, a.net)
    else:
        for r in a.recipes.split(','): versus(r, a.epochs, a.ref_epochs or a.epochs, a.n, a.width, a.lr, a.bs, a.net)
