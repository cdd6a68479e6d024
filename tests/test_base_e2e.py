"The safe base of the mixing callbacks on a real learner: crashes, get_preds, export."
import pytest, torch
from fastai.vision.all import *
from mixmo_fastai.all import *

class InputMix(MixingCallback):
    "The smallest honest mixing callback: fastai's MixUp on top of the package's base"
    def __init__(self, alpha=0.4): self.alpha = alpha
    def before_batch(self):
        super().before_batch()
        if self.skip_batch: return
        lam = sample_lam(self.alpha, (self.x.shape[0],), self.x.device)
        perm = torch.randperm(self.x.shape[0], device=self.x.device)
        self.learn.xb = (mix(self.x, self.x[perm], lam),)
        self.set_mix(lam, perm)

class Fail(Callback):
    order = 50
    def __init__(self, exc, at=3): self.exc,self.at,self.n = exc,at,0
    def after_batch(self):
        self.n += 1
        if self.n == self.at: raise self.exc

def _learn():
    set_seed(0)
    return Learner(digits_dls(bs=64), digits_net(16), metrics=accuracy, cbs=InputMix())

@pytest.mark.parametrize('exc', [RuntimeError('mid-epoch failure'), KeyboardInterrupt()])
def test_exception_mid_fit_leaves_learner_usable(exc):
    learn = _learn()
    orig = learn.loss_func
    fail = Fail(exc)
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(type(exc)): learn.fit(1, 1e-2, cbs=fail)
    assert learn.loss_func is orig
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-2)
    assert learn.loss_func is orig
    assert learn.validate()[1] > 0.8

def test_get_preds_predict_after_training(tmp_path):
    learn = _learn()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-2)
    preds, targs = learn.get_preds()
    torch.testing.assert_close(preds.sum(1), torch.ones(len(preds)))
    assert (preds >= 0).all()
    _, dec, probs = learn.predict(learn.dls.valid_ds[0][0])
    assert isinstance(int(dec), int) and abs(probs.sum().item() - 1) < 1e-5
    learn.export(tmp_path/'learn.pkl')
    learn2 = load_learner(tmp_path/'learn.pkl')
    torch.testing.assert_close(learn2.get_preds(dl=learn.dls.valid)[0], preds)
