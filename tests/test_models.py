"""HashModel and the backbone registry (SPEC 3)."""

import copy

import pytest
import torch
import torchvision

from saat.errors import WeightsUnavailableError
from saat.models import HashModel, list_backbones


def test_registry_lists_every_backbone_of_the_spec():
    expected = {"alexnet", "small_cnn"} | {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")} | {
        f"resnet{d}" for d in (18, 34, 50, 101)}
    assert set(list_backbones()) == expected
    assert list_backbones("resnet*") == ["resnet101", "resnet18", "resnet34", "resnet50"]
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'; available: alexnet"):
        HashModel("resnet7", 16)


@pytest.mark.parametrize("backbone, size", [("small_cnn", 28), ("small_cnn", 56), ("alexnet", 224),
                                            ("resnet18", 224), ("vgg11_bn", 224)])
def test_forward_shapes_range_and_codes(backbone, size):
    torch.manual_seed(0)
    model = HashModel(backbone, 12).eval()
    x = torch.rand(2, 3, size, size)
    h = model(x)
    assert h.shape == (2, 12) and h.dtype == torch.float32
    assert (h.abs() < 1).all()
    codes = model.encode(x)
    assert codes.dtype == torch.int8 and set(codes.unique().tolist()) <= {-1, 1}
    assert torch.equal(codes, torch.where(h >= 0, 1, -1).to(torch.int8))


def test_alpha_is_an_argument_not_state():
    torch.manual_seed(0)
    model = HashModel("small_cnn", 8).eval()
    x = torch.rand(3, 3, 28, 28)
    z = model.logits(x)
    torch.testing.assert_close(model(x, alpha=0.1), torch.tanh(0.1 * z))
    torch.testing.assert_close(model(x), torch.tanh(z))  # a previous alpha leaves no trace
    assert "alpha" not in dict(model.named_buffers()) and not hasattr(model, "alpha")


def test_imagenet_normalisation_happens_inside_the_model():
    torch.manual_seed(0)
    model = HashModel("small_cnn", 8).eval()
    x = torch.rand(2, 3, 28, 28)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = model.hash_layer(model.features((x - mean) / std))
    torch.testing.assert_close(model.logits(x), expected)
    # normalisation constants are not parameters and not saved
    assert "mean" not in model.state_dict() and all(p is not model.mean for p in model.parameters())


def test_orthohash_head_puts_batchnorm_before_tanh():
    torch.manual_seed(0)
    model = HashModel("small_cnn", 8, head_norm="bn").eval()
    x = torch.rand(4, 3, 28, 28)
    z = model.hash_layer(model.features((x - model.mean) / model.std))
    torch.testing.assert_close(model(x), torch.tanh(model.head_norm(z)))
    assert isinstance(model.head_norm, torch.nn.BatchNorm1d)
    assert torch.equal(model.encode(x), torch.where(model.head_norm(z) >= 0, 1, -1).to(torch.int8))


def test_resnet_hash_layer_init_and_architecture_roundtrip():
    torch.manual_seed(0)
    model = HashModel("resnet18", 64)
    w = model.hash_layer.weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.002 and float(model.hash_layer.bias.detach().abs().max()) == 0
    clone = HashModel.from_architecture(model.architecture())
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(clone.eval()(x), model.eval()(x))


def test_backbone_weights_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    model = HashModel("resnet18", 16, backbone_weights=path)
    torch.testing.assert_close(model.features.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(model.features.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_bad_backbone_weights_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--backbone-weights: file not found"):
        HashModel("alexnet", 16, backbone_weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit torchvision's alexnet"):
        HashModel("alexnet", 16, backbone_weights=wrong)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a loadable state_dict"):
        HashModel("alexnet", 16, backbone_weights=junk)
    with pytest.raises(ValueError, match="small_cnn has no ImageNet weights"):
        HashModel("small_cnn", 16, pretrained=True)


def test_pretrained_offline_fails_with_a_message_saying_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: the weights must be downloaded

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match="put it at .*checkpoints.*or pass --backbone-weights"):
        HashModel("alexnet", 16, pretrained=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits must be a positive integer"):
        HashModel("small_cnn", 0)
    with pytest.raises(ValueError, match="head_norm"):
        HashModel("small_cnn", 8, head_norm="ln")


@pytest.mark.parametrize("channels_last", [False, True])
def test_small_cnn_eval_folds_batchnorm_into_its_convolutions_without_changing_the_function(channels_last):
    """In eval mode small_cnn runs each conv-BN pair as one convolution (the attacks' speed); the outputs, the input
    gradient and the parameters' gradients are those of the layers run one by one, and train mode runs the layers."""
    from saat.models.backbones import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN()
    with torch.no_grad():  # BatchNorm statistics and affine parameters far from their initial identity
        for module in net.body:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.2, 3.0)
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.3, 0.3)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    x = torch.rand(5, 3, 28, 28)

    def run(forward):
        net.zero_grad()
        xv = x.clone().requires_grad_(True)
        out = forward(xv)
        out.square().sum().backward()
        return out.detach(), xv.grad, [p.grad.clone() for p in net.parameters()]

    net.eval()
    calls = []
    norms = [m for m in net.body if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in norms]
    folded = run(net)
    assert calls == []  # eval mode never runs a BatchNorm module: it is folded into the convolution before it
    layered = run(net.body)
    assert len(calls) == 4
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(folded[0], layered[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(folded[1], layered[1], rtol=1e-3, atol=1e-6)
    for a, b in zip(folded[2], layered[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    # train mode runs the layers (batch statistics, running statistics updated) exactly as before
    a, b = copy.deepcopy(net).train(), copy.deepcopy(net).train()
    assert torch.equal(a(x), b.body(x))
    assert torch.equal(a.body[1].running_mean, b.body[1].running_mean)
    assert not torch.equal(a.body[1].running_mean, net.body[1].running_mean)
