"""Cost of Packed-Ensembles (issue 39) on the machine it runs on: parameters, training step and inference batch of
`packed` (PackedEnsemble(), four members at alpha=2) and `mimo` against plain training, on the bench's own timing
(`bench.run_timing`: fresh learners, interleaved rounds, the first dropped), for digits_net(32) on the digits and fastai's
xresnet18 on Fashion-MNIST. Writes one CSV that nbs/25_packed.ipynb renders.

    OMP_NUM_THREADS=1 python tools/packed_timing.py --csv nbs/packed_timing.csv     # about 2 minutes on one CPU thread
"""
import argparse, platform
import pandas as pd, torch
from mixmo_fastai.bench import run_timing, get_model, arch_channels
from mixmo_fastai.packed import packed_model
from mixmo_fastai.mixmo import mixmo_model

SETTINGS = [('digits', 'digits_net'), ('fashion_mnist', 'xresnet18')]

def n_params(model): return sum(p.numel() for p in model.parameters())

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--csv', default='nbs/packed_timing.csv'); p.add_argument('--methods', default='vanilla,packed,mimo')
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
    out['device'] = f"CPU ({platform.machine()}), 1 thread, torch {torch.__version__.split('+')[0]}, batches of 64"
    out.to_csv(a.csv, index=False, float_format='%.4g')
    print(out.drop(columns='device').to_string(index=False))

if __name__ == '__main__': main()
