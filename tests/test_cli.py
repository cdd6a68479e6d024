"The console script, end to end, as a user runs it."
import csv
from pathlib import Path
import pytest
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

def _row(stdout, name):
    "The line of results of row `name`"
    lines = [l for l in stdout.splitlines() if l.startswith(f'{name}: accuracy')]
    assert len(lines) == 1, stdout
    return lines[0]

def _acc(line, name):
    assert line.startswith(f'{name}: accuracy'), line
    return float(line.split('accuracy')[1].split()[0])

def test_train_prints_metrics(cli, tmp_path):
    out = tmp_path/'learner.pkl'
    r = cli('train', '--method', 'mixup', '--epochs', '1', '--out', str(out), '--no-baseline')
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert 0.3 < _acc(last, 'mixup') <= 1.0
    assert 'plain training' not in r.stdout
    assert 'NLL' in last and 'ECE' in last and 'Brier' in last
    assert out.exists()

def test_train_default_is_cutmixmo_with_members(cli, tmp_path):
    "The README's main job: the flagship method, its ensemble and its two members, beside plain training on the same budget"
    out = tmp_path/'cutmixmo.pkl'
    r = cli('train', '--epochs', '2', '--out', str(out))
    assert r.returncode == 0, r.stderr
    last = _row(r.stdout, 'cutmixmo')
    assert 0.3 < _acc(last, 'cutmixmo') <= 1.0
    plain = _acc(_row(r.stdout, 'vanilla (plain training)'), 'vanilla (plain training)')
    # the difference printed is the difference of the two rows printed
    versus = r.stdout.strip().splitlines()[-1]
    assert versus.startswith('cutmixmo against plain training: accuracy'), versus
    d = float(versus.split('accuracy')[1].split('pt')[0])
    assert abs(d - 100*(_acc(last, 'cutmixmo') - plain)) < 0.011, (d, last)
    members = last.split("members' accuracy")[1].split('disagreement')[0].split('/')
    assert len(members) == 2, last
    assert out.exists()

def test_unknown_method_is_one_line_error(cli):
    r = cli('train', '--method', 'nope')
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr
    assert 'unknown method' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_bad_epochs_is_one_line_error(cli):
    r = cli('train', '--epochs', '0')
    assert r.returncode != 0 and 'Traceback' not in r.stderr and '--epochs' in r.stderr

def _one_line_error(capsys, argv, *words):
    "In-process (each subprocess costs seconds of imports): exit status 2 and one line on stderr"
    from mixmo_fastai.cli import main
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mixmo-fastai: error:'), err
    for w in words: assert w in lines[0], lines[0]

def test_argument_errors_are_one_line(capsys, tmp_path):
    _one_line_error(capsys, ['train', '--epochs', 'many'], '--epochs')
    _one_line_error(capsys, ['frobnicate'], 'frobnicate')
    _one_line_error(capsys, ['train', '--data', str(tmp_path/'nowhere')], 'does not exist')
    (tmp_path/'train').mkdir()
    _one_line_error(capsys, ['train', '--data', str(tmp_path)], 'valid/')
    _one_line_error(capsys, ['train', '--arch', 'no_such_net'], 'unknown architecture')
    _one_line_error(capsys, ['bench', '--methods', 'vanilla,nope'], "unknown method 'nope'")
    _one_line_error(capsys, ['bench', '--seeds', '0'], '--seeds')
    _one_line_error(capsys, ['bench', '--shift-images', '-1'], '--shift-images')
    _one_line_error(capsys, ['show', '--method', 'vanilla'], 'nothing to show')

def test_train_on_a_folder_of_images(cli, tmp_path):
    "Your own data: train/ and valid/ folders of class folders, read by ImageDataLoaders.from_folder"
    from sklearn.datasets import load_digits
    d = load_digits()
    for split, idx in (('train', range(0, 120)), ('valid', range(120, 160))):
        for i in idx:
            if d.target[i] > 1: continue
            folder = tmp_path/split/str(d.target[i]); folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((d.images[i]*16).astype(np.uint8)).convert('RGB').save(folder/f'{i}.png')
    r = cli('train', '--method', 'cutmixmo', '--data', str(tmp_path), '--size', '16', '--epochs', '2',
            '--bs', '8', '--out', str(tmp_path/'l.pkl'), '--no-baseline')
    assert r.returncode == 0, r.stderr
    assert 0 <= _acc(r.stdout.strip().splitlines()[-1], 'cutmixmo') <= 1

def test_bench_tiny(cli, tmp_path):
    out = tmp_path/'bench'
    r = cli('bench', '--methods', 'vanilla,cutmixmo,ensemble2', '--seeds', '1', '--epochs', '1', '--width', '16',
            '--rounds', '2', '--steps', '2', '--out', str(out), '--compute', '0')
    assert r.returncode == 0, r.stderr
    for f in ('results.md', 'results.csv', 'runs.csv', 'accuracy_nll.png', 'reliability.png'): assert (out/f).exists(), f
    rows = list(csv.DictReader(open(out/'results.csv')))
    assert [row['method'] for row in rows] == ['vanilla', 'cutmixmo', 'ensemble2']
    by = {row['method']: row for row in rows}
    assert float(by['vanilla']['train_ratio']) == 1.0 and float(by['vanilla']['infer_ratio']) == 1.0
    assert len(by['cutmixmo']['member_accuracy'].split('/')) == 2
    assert float(by['ensemble2']['disagreement']) >= 0
    assert '| cutmixmo |' in r.stdout
    # the results files the docs render (tools/results.py): the table as printed, and the run it comes from
    import json, sys
    sys.path.insert(0, str(ROOT/'tools'))
    import results
    rows = list(csv.reader(open(out/'table.csv')))
    assert results.table_md(rows) in r.stdout
    meta = json.loads((out/'table.json').read_text())
    assert meta['command'].startswith('mixmo-fastai bench --methods vanilla,cutmixmo,ensemble2') and meta['version'] and meta['date']

def test_bench_task_and_equal_compute(cli, tmp_path):
    "The hard task, and each method also at the compute of two vanilla trainings"
    out = tmp_path/'bench'
    r = cli('bench', '--task', 'hard_digits', '--methods', 'vanilla,mimo,ensemble2', '--compute-methods', 'mimo',
            '--seeds', '2', '--epochs', '1', '--width', '8', '--rounds', '2', '--steps', '2', '--out', str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out/'results.csv')))
    assert [row['label'] for row in rows] == ['vanilla', 'mimo', 'vanilla @ compute ×2', 'ensemble2 @ compute ×2', 'mimo @ compute ×2']
    by = {row['label']: row for row in rows}
    assert by['vanilla @ compute ×2']['epochs'] == '2' and float(by['ensemble2 @ compute ×2']['compute']) == 2.0
    # each budget has its own vanilla reference: the difference is to it
    for label, ref in (('mimo', 'vanilla'), ('mimo @ compute ×2', 'vanilla @ compute ×2')):
        assert abs(float(by[label]['d_accuracy']) - (float(by[label]['accuracy']) - float(by[ref]['accuracy']))) < 1e-9
    runs = list(csv.DictReader(open(out/'runs.csv')))
    assert len(runs) == 2 * len(rows)
    assert 'vs vanilla, same budget' in r.stdout and 'Welch' in r.stdout

def test_help_lists_tasks(cli):
    r = cli('bench', '--help')
    assert r.returncode == 0 and 'hard_digits' in r.stdout and 'digits:' in r.stdout

def test_show_saves_a_png(cli, tmp_path):
    out = tmp_path/'show.png'
    r = cli('show', '--method', 'cutmixmo', '--n', '4', '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.stat().st_size > 1000

def test_train_help_lists_recipes_and_recipe_conflicts_are_one_line(cli):
    r = cli('train', '--help')
    assert r.returncode == 0 and 'cutmixmo-hard' in r.stdout and 'lines-hard' in r.stdout
    r = cli('train', '--recipe', 'cutmixmo-hard', '--epochs', '2')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'drop --epochs' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

def test_bench_timing_only(cli, tmp_path):
    "The timing table's structure (never its values: speed is a benchmark figure, not a test)"
    out = tmp_path/'timing'
    r = cli('bench', '--timing-only', '--methods', 'mixup,manifold,mimo', '--width', '8', '--rounds', '2', '--steps', '2',
            '--out', str(out))
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith('|')]
    assert lines[0].startswith('| method | train step (ms) | train step × vanilla |'), lines[0]
    assert "callbacks' own time per step (ms)" in lines[0] and 'inference × vanilla' in lines[0]
    rows = [l.strip('|').split('|') for l in lines[2:]]
    assert [c[0].strip() for c in rows] == ['vanilla', 'mixup', 'manifold', 'mimo']
    assert all(len(c) == 6 for c in rows)
    for c in rows: [float(x) for x in c[1:]]
    assert float(rows[0][2]) == 1.0 and float(rows[0][3]) == 0.0 and float(rows[0][5]) == 1.0
    assert (out/'timing.md').exists() and len(list(csv.DictReader(open(out/'timing.csv')))) == 4
    assert not (out/'results.csv').exists()  # nothing was trained

def test_train_on_fashion_mnist(cli):
    "The real-data task reads the files of Debian's dataset-fashion-mnist (tools/test.sh installs it): never skipped"
    r = cli('train', '--task', 'fashion_mnist', '--method', 'vanilla', '--epochs', '1', '--width', '8')
    assert r.returncode == 0, r.stderr
    assert 0.2 < _acc(r.stdout.strip().splitlines()[-1], 'vanilla') <= 1.0  # chance: 0.1; measured 0.28 after 1 epoch

def test_fashion_mnist_missing_is_one_line_error(capsys, monkeypatch, tmp_path):
    import mixmo_fastai.data as data
    monkeypatch.setattr(data, 'FASHION_MNIST_DIRS', [str(tmp_path)])
    _one_line_error(capsys, ['train', '--task', 'fashion_mnist', '--epochs', '1'],
                    'apt-get install dataset-fashion-mnist', 'path=', 'download=True')

def test_importing_the_cli_leaves_warning_filters_alone():
    "Only the console script silences torch's warnings (in its own process); a library import of the cli does not"
    import subprocess, sys
    code = ("import warnings, mixmo_fastai.cli\n"
            "print(any(f[0] == 'ignore' and f[3] is not None and f[3].pattern == r'torch\\.' for f in warnings.filters))")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == 'False'
    code = ("import warnings, sys; sys.argv = ['mixmo-fastai', '--help']\n"
            "from mixmo_fastai import _console\n"
            "try: _console.main(['--help'])\n"
            "except SystemExit: pass\n"
            "print(any(f[0] == 'ignore' and f[3] is not None and f[3].pattern == r'torch\\.' for f in warnings.filters))")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == 'True'

def test_recipe_sets_method_task_epochs_and_network(monkeypatch, capsys):
    "`--recipe mimo-fashion` trains MIMO on Fashion-MNIST with xresnet18 (the training itself is replaced: a benchmark's length)"
    import mixmo_fastai.cli as c
    seen = []
    def fake_train(method, epochs, lr, seed, width, bs, size, out, arch, data, task):
        seen.append(dict(method=method, epochs=epochs, arch=arch, task=task))
        return None, {}
    monkeypatch.setattr(c, 'train', fake_train)
    c.main(['train', '--recipe', 'mimo-fashion', '--out', 'unused.pkl'])
    # the recipe, then plain training on the same task, network and epochs
    assert seen == [dict(method='mimo', epochs=15, arch='xresnet18', task='fashion_mnist'),
                    dict(method='vanilla', epochs=15, arch='xresnet18', task='fashion_mnist')]
    with pytest.raises(SystemExit): c.main(['train', '--recipe', 'mimo-fashion', '--arch', 'resnet18'])
    assert 'drop --arch' in capsys.readouterr().err

def test_train_with_a_fastai_xresnet(cli, tmp_path):
    "`--arch xresnet18`: fastai's network trains end to end, converted to MIMO's two members (its input channels: the notebook's `arch_channels` test)"
    r = cli('train', '--method', 'mimo', '--arch', 'xresnet18', '--epochs', '1', '--out', str(tmp_path/'m.pkl'), '--no-baseline')
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert 0.1 < _acc(last, 'mimo') <= 1.0
    assert len(last.split("members' accuracy")[1].split('disagreement')[0].split('/')) == 2, last
