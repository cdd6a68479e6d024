"""Cost of Packed-Ensembles (issue 39) on the machine it runs on: parameters, training step and inference batch of
`packed` (PackedEnsemble(), four members at alpha=2) and `mimo` against plain training, on the bench's own timing
(`bench.run_timing`: fresh learners, interleaved rounds, the first dropped), for digits_net(32) on the digits and fastai's
xresnet18 on Fashion-MNIST. Writes the results file nbs/results/packed_timing.csv (the table as nbs/25_packed.ipynb
shows it, rendered by tools/results.py) and its run (.json).

    OMP_NUM_THREADS=1 python tools/packed_timing.py     # about 2 minutes on one CPU thread
"""
import argparse, json, platform, time
from pathlib import Path
import pandas as pd, torch
import mixmo_fastai
from mixmo_fastai.bench import run_timing, get_model, arch_channels
from mixmo_fastai.packed import packed_model
from mixmo_fastai.mixmo import mixmo_model

SETTINGS = [('digits', 'digits_net'), ('fashion_mnist', 'xresnet18')]

def n_params(model): return sum(p.numel() for p in model.parameters())

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--csv', default='nbs/results/packed_timing.csv'); p.add_argument('--methods', default='vanilla,packed,mimo')
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for task, arch in SETTINGS:
        df = run_timing(a.methods.split(','), arch=arch, task=task, log=None)
        model = lambda: get_model(arch, arch_channels(arch), 10)
        params = dict(vanilla=n_params(model()), packed=n_params(packed_model(model(), 4, 2.)), mimo=n_params(mixmo_model(model(), 2)))
        df['params'] = [params.get(m) for m in df['method']]
        df.insert(0, 'arch', arch); df.insert(0, 'task', task)
        rows.append(df)
    out = pd.concat(rows)
    print(out.to_string(index=False))
    write_results(out, Path(a.csv))

def write_results(out, csv:Path):
    "The table as shown (results file) and its run"
    shown = pd.DataFrame({'task': out['task'], 'network': out['arch'], 'method': out['method'],
        'parameters': out['params'].map('{:,}'.format), 'train step (ms)': out['train_step_ms'].map('{:.1f}'.format),
        'step x plain': out['train_ratio'].map('{:.2f}'.format), "callbacks' own (ms)": out['callbacks_ms'].map('{:.2f}'.format),
        'inference batch (ms)': out['infer_batch_ms'].map('{:.1f}'.format), 'inference x plain': out['infer_ratio'].map('{:.2f}'.format)})
    shown.to_csv(csv, index=False)
    csv.with_suffix('.json').write_text(json.dumps(dict(date=time.strftime('%-d %b %Y'), command='OMP_NUM_THREADS=1 python tools/packed_timing.py',
        settings="PackedEnsemble() (4 members, alpha=2) and MIMO() against plain training, the bench's timing (fresh learners, interleaved rounds, the first dropped), batches of 64; digits_net(32) on the 8x8 digits, xresnet18 on 28x28 Fashion-MNIST",
        version=mixmo_fastai.__version__, machine=f"CPU ({platform.machine()}), 1 thread, torch {torch.__version__.split('+')[0]}, a shared 2-core machine (two runs differ by 10 to 20%)",
        source='the run itself'), indent=1) + '\n')
    print(f"wrote {csv}")

if __name__ == '__main__': main()
