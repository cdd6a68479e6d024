"Fine-tuning a pretrained network with the converting callbacks through fastai's `vision_learner` + `fine_tune` (issue 28)"
import pytest, torch, torchvision, timm
from fastai.vision.all import *
from mixmo_fastai.all import *
from helpers import subset_dls

CONVERTING = {
    'CutMixMo': lambda **kw: CutMixMo(**kw), 'LinearMixMo': lambda **kw: LinearMixMo(**kw), 'MIMO': lambda **kw: MIMO(**kw),
    'LinesSubspace': lambda **kw: LinesSubspace(**kw), 'CurvesSubspace': lambda **kw: CurvesSubspace(**kw),
    'SimplexSubspace': lambda **kw: SimplexSubspace(**kw),
}
_MIXMO = ('CutMixMo', 'LinearMixMo', 'MIMO')

@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    "A digits_net whose weights are not an initialisation and whose BatchNorm statistics have seen data (as if pretrained), saved like a user's checkpoint"
    torch.manual_seed(1)
    net = digits_net(16, channels=3)  # fastai's model functions make 3-channel networks
    with torch.no_grad():
        for p in net.parameters(): p.add_(torch.randn_like(p) * 0.05)
        net.train(); net(torch.randn(32, 3, 16, 16))
    path = tmp_path_factory.mktemp('pre')/'net.pth'
    torch.save(net.state_dict(), path)
    return path

class Saved:
    "A model function for `vision_learner`: the saved network with `pretrained=True`, a fresh one otherwise (picklable)"
    def __init__(self, path): self.path = path
    def __call__(self, pretrained=False):
        net = digits_net(16, channels=3)
        if pretrained: net.load_state_dict(torch.load(self.path))
        return net

def _learner(weights, cb, pretrained=True, n_train=128):
    dls = subset_dls(n_train, 64, bs=32, size=16, channels=3)
    return vision_learner(dls, Saved(weights), n_out=10, pretrained=pretrained, cbs=cb, metrics=accuracy)

def _stem(weights):
    return torch.load(weights)['0.0.weight']

def _new_weights(learn, name):
    "The weights of the first convolution of every member (MixMo) or control point (subspace)"
    if name in _MIXMO:
        enc, _ = mixmo_parts(learn.model)
        return [first(m for m in l.modules() if isinstance(m, nn.Conv2d)).weight for l in enc.layers]
    layer = first(l for l in subspace_layers(learn.model) if isinstance(l.layer, nn.Conv2d))
    return [p.weight for p in layer.points]

@pytest.mark.parametrize('name', list(CONVERTING))
@pytest.mark.parametrize('init', ['copy', 'fresh', 0.1])
def test_initialisation_policy(weights, name, init):
    key = 'encoder_init' if name in _MIXMO else 'point_init'
    learn = _learner(weights, CONVERTING[name](**{key: init}))
    ws, pre = _new_weights(learn, name), _stem(weights)
    test_close(ws[0], pre)  # member 0 / control point 0 is the pretrained layer
    for w in ws[1:]:
        rel = ((w - pre).std() / pre.std()).item()
        if init == 'copy': test_close(w, pre)
        elif init == 'fresh': assert rel > 0.5, rel  # an independent draw at the layer's scale
        else: assert 0.05 < rel < 0.2, rel

def _trainable(learn): return {n for n, p in learn.model.named_parameters() if p.requires_grad}

@pytest.mark.parametrize('name', list(CONVERTING))
def test_what_trains_when_frozen(weights, name):
    "After `freeze()` the body (every member's encoder, every control point of the body) is frozen but its norm layers; `unfreeze()` trains all"
    learn = _learner(weights, CONVERTING[name]())
    learn.freeze()
    params = dict(learn.model.named_parameters())
    # every parameter of the converted model is in the optimizer, once
    in_opt = [p for pg in learn.opt.param_lists for p in pg]
    test_eq(len(in_opt), len(params)); test_eq(len({id(p) for p in in_opt}), len(params))
    trainable = _trainable(learn)
    body = {n for n in params if n.startswith('0.')}
    bn_body = {n for n, m in learn.model[0].named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for n in [f'0.{n}.{k}' for k, _ in m.named_parameters(recurse=False)]}
    assert bn_body and bn_body < body
    test_eq(trainable & body, bn_body)  # fastai's train_bn: the body's norm layers train while it is frozen
    assert {n for n in params if n.startswith('1.')} <= trainable  # the head (and the members' head rows) trains
    learn.unfreeze()
    test_eq(_trainable(learn), set(params))

@pytest.mark.parametrize('name', list(CONVERTING))
def test_fine_tune_end_to_end_and_export(weights, name, tmp_path):
    learn = _learner(weights, CONVERTING[name]())
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    test_eq(len(learn.recorder.values), 1)  # the unfrozen fit (the frozen one is an earlier fit)
    assert all(np.isfinite(v).all() for v in learn.recorder.values)
    probs, targs = learn.get_preds()
    test_close(probs.sum(1), torch.ones(len(probs)), eps=1e-4)
    _, members, _ = get_member_preds(learn, learn.dls.valid)
    if name in _MIXMO: test_eq(members.shape[1], 2)
    learn.export(tmp_path/'ft.pkl')
    loaded = load_learner(tmp_path/'ft.pkl')
    dl = learn.dls.test_dl([learn.dls.valid_ds[i][0] for i in range(8)])
    with learn.no_bar(): expected = learn.get_preds(dl=dl)[0]
    with loaded.no_bar(): got = loaded.get_preds(dl=dl)[0]
    test_close(got, expected, eps=1e-5)

@pytest.mark.parametrize('name', list(CONVERTING))
@pytest.mark.parametrize('pretrained', [True, False])
def test_auto_init_follows_the_frozen_body(weights, name, pretrained):
    "The default 'auto': copies when the first fit starts on pretrained weights (vision_learner(pretrained=True), fine_tune), fresh draws on a fresh body, frozen or not"
    cb = CONVERTING[name]()
    learn = _learner(weights, cb, pretrained=pretrained)
    w0 = [w.detach().clone() for w in _new_weights(learn, name)]
    learn.lr_find(num_it=12, show_plot=False)  # lr_find decides nothing: the learner's first real fit does
    for a, b in zip(_new_weights(learn, name), w0): test_close(a, b)
    learn.freeze()  # as fine_tune does, also to a fresh body: frozen is not pretrained when BatchNorm has seen no data
    with learn.no_bar(), learn.no_logging(): learn.fit(0)  # `before_fit` only
    ws, pre, mixmo = _new_weights(learn, name), w0[0], name in _MIXMO
    used = cb.encoder_init_used if mixmo else cb.point_init_used
    test_eq(used, (cb.pretrained_init if pretrained else 'fresh'))
    for w, fresh in zip(ws[1:], w0[1:]):
        if not pretrained: test_close(w, fresh)  # the draws of the conversion, untouched
        elif mixmo: test_close(w, pre)  # copies (pretrained_init 'copy')
        else: test_close(w, pre + cb.pretrained_init * fresh)  # the copy plus σ times the conversion's draw
    ids = {id(p) for pg in learn.opt.param_lists for p in pg}
    assert all(id(w) in ids for w in ws)  # restarted in place: the optimizer holds them
    learn.fit(0)  # decided once
    for a, b in zip(_new_weights(learn, name), ws): test_close(a, b)

def test_bad_init_is_refused_at_creation():
    for cb in (lambda: CutMixMo(encoder_init='pretrained'), lambda: LinesSubspace(point_init=-1), lambda: MIMO(encoder_init=True)):
        with pytest.raises(ValueError, match="'auto'"): cb()

# --- issue 37: pretrained weights recognised however they arrive, and 'auto' starting the members from them

def _no_norm_cnn(channels=3):
    "A CNN without norm layers (the weight spectra decide for it)"
    return nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

FAMILIES = {  # -> (model, epochs of training that make it 'trained')
    'digits_net': (lambda: digits_net(16, channels=3), 1),
    'fastai_xresnet18': (lambda: xresnet18(n_out=10), 1),
    'vision_learner_resnet18': (lambda: create_vision_model(resnet18, 10, pretrained=False), 1),
    'tv_resnet18': (lambda: torchvision.models.resnet18(weights=None, num_classes=10), 1),
    'tv_mobilenet_v3_small': (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), 1),
    'timm_resnet18': (lambda: timm.create_model('resnet18', pretrained=False, num_classes=10), 1),
    'timm_efficientnet_b0': (lambda: timm.create_model('efficientnet_b0', pretrained=False, num_classes=10), 1),
    'no_norm_cnn': (_no_norm_cnn, 12),
}

@pytest.mark.parametrize('name', list(FAMILIES))
def test_looks_pretrained_on_fresh_and_trained_networks(name):
    "No fresh network called pretrained, no trained one called fresh: BatchNorm statistics, or the spectra without BatchNorm"
    make, epochs = FAMILIES[name]
    set_seed(0)
    model = make()
    test_eq(looks_pretrained(model), False)
    learn = Learner(subset_dls(256, 64, bs=32, size=32, channels=3), model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.get_preds(); learn.lr_find(num_it=5, show_plot=False)  # evaluation and lr_find leave it fresh
        test_eq(looks_pretrained(model), False)
        learn.fit_one_cycle(epochs, 3e-3)
    test_eq(looks_pretrained(model), True)
    if name == 'no_norm_cnn': assert learn.validate()[1] > 0.3  # trained indeed, far above chance (0.1): the spectra need real training

@pytest.mark.parametrize('name', ['timm_vit_tiny', 'timm_convnext_atto'])
def test_fresh_networks_without_batchnorm(name):
    "Networks with LayerNorm only: fresh ones read fresh (trained ViTs cannot be downloaded here; see the fine-tuning notebook)"
    model = timm.create_model(name.removeprefix('timm_') + ('_patch16_224' if 'vit' in name else ''), pretrained=False, num_classes=10)
    assert bn_has_seen_data(model) is None
    test_eq(looks_pretrained(model), False)

@pytest.fixture(scope='module')
def trained_weights(tmp_path_factory):
    "A digits_net trained on the digits for one epoch, saved as a user's checkpoint (`torch.save` of the state dict)"
    set_seed(0)
    net = digits_net(16, channels=3)
    learn = Learner(subset_dls(512, 64, bs=32, size=16, channels=3), net, loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-2)
    path = tmp_path_factory.mktemp('trained')/'net.pth'
    torch.save(net.state_dict(), path)
    return path

@pytest.mark.parametrize('name', list(CONVERTING))
def test_auto_copies_pretrained_weights_in_a_plain_learner(trained_weights, name):
    "Weights loaded into a plain `Learner` and trained unfrozen (no `vision_learner`, no `freeze`): 'auto' starts the members from them"
    net = digits_net(16, channels=3); net.load_state_dict(torch.load(trained_weights))
    cb = CONVERTING[name]()
    learn = Learner(subset_dls(128, 64, bs=32, size=16, channels=3), net, loss_func=CrossEntropyLossFlat(), cbs=cb)
    assert not is_frozen(learn.model)
    with learn.no_bar(), learn.no_logging(): learn.fit(0)
    ws, pre = _new_weights(learn, name), torch.load(trained_weights)['0.0.weight']
    test_close(ws[0], pre)
    used = cb.encoder_init_used if name in _MIXMO else cb.point_init_used
    test_eq(used, cb.pretrained_init)
    for w in ws[1:]:
        if name in _MIXMO: test_close(w, pre)  # copies: the members start as the pretrained network
        else: assert 0.3 < ((w - pre).std() / pre.std()).item() < 0.7  # the copy plus σ = 0.5 times a fresh draw

def test_learn_load_of_a_plain_checkpoint_into_two_conversions(trained_weights, tmp_path):
    "A subspace of a MixMo model (two conversions): a plain checkpoint loads into member 0 at point 0, the rest keep theirs"
    plain = Learner(subset_dls(128, 64, bs=32, size=16, channels=3), digits_net(16, channels=3), path=tmp_path)
    plain.model.load_state_dict(torch.load(trained_weights)); plain.save('plain')
    learn = Learner(plain.dls, digits_net(16, channels=3), path=tmp_path, cbs=[CutMixMo(), LinesSubspace()])
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.load('plain')
    after, sd = learn.model.state_dict(), torch.load(trained_weights)
    test_eq(after['0.0.layers.0.0.points.0.weight'], sd['0.0.weight'])  # member 0's encoder, point 0
    test_eq(after['5.linear.points.0.weight'][:10], sd['5.weight'])  # member 0's head rows
    test_eq(after['0.0.layers.1.0.points.0.weight'], before['0.0.layers.1.0.points.0.weight'])  # member 1 kept
    test_eq(after['5.linear.points.0.weight'][10:], before['5.linear.points.0.weight'][10:])

@pytest.mark.parametrize('name', list(CONVERTING))
def test_learn_load_of_a_plain_checkpoint_before_fit(trained_weights, name, tmp_path):
    "`learn.load` of a plain network's checkpoint into a converted learner: member 0 gets the weights, 'auto' copies them at the first fit"
    plain = Learner(subset_dls(128, 64, bs=32, size=16, channels=3), digits_net(16, channels=3), path=tmp_path)
    plain.model.load_state_dict(torch.load(trained_weights)); plain.save('plain')
    cb = CONVERTING[name]()
    learn = Learner(plain.dls, digits_net(16, channels=3), path=tmp_path, cbs=cb)
    learn.load('plain')
    with learn.no_bar(), learn.no_logging(): learn.fit(0)
    ws, pre = _new_weights(learn, name), torch.load(trained_weights)['0.0.weight']
    test_close(ws[0], pre)
    test_eq(cb.encoder_init_used if name in _MIXMO else cb.point_init_used, cb.pretrained_init)
    if name in _MIXMO:
        for w in ws[1:]: test_close(w, pre)
    learn.save('converted'); learn.load('converted')  # the converted learner's own checkpoints load as before

def test_calibrate_after_fine_tune_survives_export(weights, tmp_path):
    "The recommended fine-tuning path: plain fine_tune, then `calibrate` on held-out data; the temperature is exported with the learner"
    learn = _learner(weights, None)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3)
    held_out = subset_dls(192, 64, bs=32, size=16, channels=3).train.new(shuffle=False, drop_last=False)
    logits, _, targs = get_member_preds(learn, held_out)
    t = calibrate(learn, held_out)
    test_close(t, fit_temperature(logits, targs), eps=1e-3)
    probs, _ = learn.get_preds()
    raw, _, _ = get_member_preds(learn.remove_cb(TemperatureScaling))
    test_close(probs, (raw / t).softmax(-1), eps=1e-5)  # get_preds' probabilities come from the scaled logits
    learn.add_cb(TemperatureScaling(t)); learn.export(tmp_path/'cal.pkl')
    loaded = load_learner(tmp_path/'cal.pkl')
    with loaded.no_bar(): test_close(loaded.get_preds(dl=learn.dls.valid)[0], probs, eps=1e-5)
