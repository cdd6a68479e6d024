"""Packed-Ensembles on the networks users bring (issue 39): after `packed_model`, member i's output gives exactly zero
gradient to every parameter block of member j != i, in training and in evaluation mode, on fastai's xresnet18,
torchvision's resnet18 and mobilenet_v3_small, timm's resnet10t and mobilenetv3_small_050, and `digits_net`; the
parameter count is the paper's formula; a network whose members meet is refused, naming the layer."""
import pytest, torch
from torch import nn
import torchvision.models as tvm
from fastai.vision.models.xresnet import xresnet18
from mixmo_fastai.data import digits_net
from mixmo_fastai.surgery import conv_types, is_depthwise_conv
from mixmo_fastai.packed import packed_model, packed_head, member_leaks, check_members_apart

timm = pytest.importorskip('timm')

NETS = {
    'digits_net': (lambda: digits_net(16), (1, 8)),
    'xresnet18': (lambda: xresnet18(c_in=3, n_out=10), (3, 32)),
    'resnet18': (lambda: tvm.resnet18(num_classes=10), (3, 32)),
    'mobilenet_v3_small': (lambda: tvm.mobilenet_v3_small(num_classes=10), (3, 32)),
    'timm_resnet10t': (lambda: timm.create_model('resnet10t', pretrained=False, num_classes=10), (3, 32)),
    'timm_mobilenetv3_small_050': (lambda: timm.create_model('mobilenetv3_small_050', pretrained=False, num_classes=10), (3, 32)),
}

def paper_count(model, n_members, alpha)->float:
    "The paper's count for `model` packed with gamma=1: `alpha`× for the first layer, norm layers, depthwise convolutions, biases and the head's weight (`M`× its bias), `alpha²/M`× for the other weights"
    convs = [m for m in model.modules() if isinstance(m, conv_types)]
    lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first, head = convs[0], lins[-1]
    tot = 0
    for m in model.modules():
        for n, p in m.named_parameters(recurse=False):
            if m is head: tot += p.numel() * (alpha if n == 'weight' else n_members)
            elif n == 'weight' and m is not first and isinstance(m, conv_types + (nn.Linear,)) and not is_depthwise_conv(m):
                tot += p.numel() * alpha**2 / n_members
            else: tot += p.numel() * alpha
    return tot

def _wake(model):
    "Zero-initialised parameters (xresnet's last BatchNorm of a block) set to one: no gradient path stays shut, a leak's included"
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 and (p == 0).all(): p.fill_(1.)
    return model

def _member_grads(model, x, i):
    "Gradients of member i's cross-entropy (training mode) with respect to every parameter"
    head = packed_head(model)
    model.train()
    model(x)
    logits = head.member_logits[:, i]
    loss = nn.functional.cross_entropy(logits, torch.arange(len(x)) % logits.shape[-1])
    return torch.autograd.grad(loss, list(model.parameters()))

@pytest.mark.parametrize('name', list(NETS))
def test_members_independent_and_paper_count(name):
    make, (c, size) = NETS[name]
    torch.manual_seed(0)
    model = make()
    expected = paper_count(model, 4, 2.)
    _wake(packed_model(model, n_members=4, alpha=2., gamma=1))
    assert sum(p.numel() for p in model.parameters()) == expected
    x = torch.randn(4, c, size, size)
    assert member_leaks(model, x) == [] and member_leaks(model, x, training=True) == []
    for i in range(4):
        for (n, p), g in zip(model.named_parameters(), _member_grads(model, x, i)):
            blocks = g.chunk(4)
            assert len(blocks) == 4, n
            for j, b in enumerate(blocks):
                if j != i: assert torch.count_nonzero(b) == 0, f"{name}: member {i}'s loss reaches member {j}'s block of {n}"
            # and the member's own weights learn (the test can fail)
            if p.ndim > 1: assert torch.count_nonzero(blocks[i]) > 0, f"{name}: member {i} gets no gradient in {n}"

def test_densenet_refused_naming_the_layer():
    "torchvision's DenseNet concatenates each layer's input and output: its members meet, and the check says where"
    torch.manual_seed(0)
    model = tvm.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10)
    packed_model(model, 4, 2.)
    x = torch.randn(2, 3, 32, 32)
    assert member_leaks(model, x)
    with pytest.raises(ValueError, match=r"the members are not independent: .* the last 'features\.\w+.*'\. An operation after"):
        check_members_apart(model, x)

@pytest.mark.parametrize('kwargs,match', [(dict(n_members=0), 'n_members'), (dict(alpha=0.), 'alpha'), (dict(gamma=0), 'gamma'),
                                          (dict(gamma=1.5), 'gamma'), (dict(ensemble='mean'), 'ensemble')])
def test_bad_arguments_refused(kwargs, match):
    from mixmo_fastai.packed import PackedEnsemble
    with pytest.raises(ValueError, match=match): PackedEnsemble(**kwargs)
    with pytest.raises(ValueError, match=match): packed_model(digits_net(8), **kwargs)

def test_mlp_packed_from_its_first_linear():
    "Without a convolution the first linear layer reads the whole input; a LayerNorm becomes one per member"
    torch.manual_seed(0)
    model = packed_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 32),
                                       nn.ReLU(), nn.Linear(32, 10)), 4, 2.)
    assert model[1].weight.shape == (64, 64) and model[4].groups == 4
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    assert member_leaks(model, x) == [] and member_leaks(model, x, training=True) == []
