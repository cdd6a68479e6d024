"The console script, end to end, as a user runs it."

def test_train_prints_metrics(cli, tmp_path):
    out = tmp_path/'learner.pkl'
    r = cli('train', '--epochs', '1', '--out', str(out))
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith('mixup: accuracy'), last
    acc = float(last.split('accuracy')[1].split()[0])
    assert 0.3 < acc <= 1.0
    assert out.exists()

def test_unknown_method_is_one_line_error(cli):
    r = cli('train', '--method', 'nope')
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr
    assert 'unknown method' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_bad_epochs_is_one_line_error(cli):
    r = cli('train', '--epochs', '0')
    assert r.returncode != 0 and 'Traceback' not in r.stderr and '--epochs' in r.stderr
