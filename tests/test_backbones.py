import pytest
import torch
import torchvision

from tada.methods import build_model
from tada.models.backbones import available_backbones, build_backbone, feature_shape


@pytest.mark.parametrize(("name", "channels", "size", "expected"), [
    ("lenet", 1, 28, (50, 4, 4)),
    ("lenet", 1, 32, (50, 5, 5)),
    ("dtn", 3, 32, (256, 4, 4)),
    ("resnet18", 3, 64, (512, 2, 2)),
])
def test_backbones_expose_the_unpooled_last_feature_map(name, channels, size, expected):
    backbone = build_backbone(name, in_channels=channels)
    assert feature_shape(backbone, channels, size) == expected
    assert backbone.out_channels == expected[0]


def test_registry_lists_the_paper_resnets():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "lenet", "dtn"} == set(available_backbones())


def test_scratch_backbones_refuse_pretrained_weights():
    with pytest.raises(ValueError, match="has no pretrained weights"):
        build_backbone("lenet", in_channels=1, pretrained=True)


def test_resnet_loads_weights_from_a_local_file_offline(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", in_channels=3, weights_path=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        body = torch.nn.Sequential(*list(reference.children())[:-2]).eval()
        torch.testing.assert_close(backbone(x), body(x))


def test_weights_that_do_not_fit_are_rejected_with_the_path(tmp_path):
    partial = tmp_path / "partial.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, partial)
    with pytest.raises(ValueError, match=r"partial.pth does not fit resnet18: missing \['bn1"):
        build_backbone("resnet18", in_channels=3, weights_path=str(partial))
    path = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"(?s)wrong.pth does not fit resnet18: .*size mismatch"):
        build_backbone("resnet18", in_channels=3, weights_path=str(path))
    with pytest.raises(FileNotFoundError, match="model.weights_path"):
        build_backbone("resnet18", in_channels=3, weights_path=str(tmp_path / "missing.pth"))


def test_resnet_tada_model_has_k_regions_and_lr_groups(tiny_config):
    config = tiny_config.replace({"model.backbone": "resnet18", "data.image_size": 64})
    model = build_model(config, num_classes=5, in_channels=3)
    assert model.region_discriminators.num_regions == 4  # 2 x 2 at 64 px
    groups = {g["name"]: g for g in model.param_groups(backbone_lr_mult=0.1, region_lr_mult=2.0)}
    assert groups["backbone"]["lr_mult"] == 0.1 and groups["new_layers"]["lr_mult"] == 1.0
    assert groups["region_discriminators"]["lr_mult"] == 2.0
    n_params = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters())
    out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 5) and out.local_attention.shape == (2, 4)


def test_pretrained_resnet50_from_a_weights_file_trains_its_backbone_at_a_tenth(tmp_path):
    """The paper's setting, offline: ImageNet-style ResNet-50 weights from a file, backbone lr = 0.1 x new layers."""
    from tada.config import Config
    from tada.optim import build_optimizer, set_learning_rate

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)  # stands in for the ImageNet weights
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(reference.state_dict(), path)
    config = Config().replace({"model.backbone": "resnet50", "model.pretrained": True,
                               "model.weights_path": str(path), "data.image_size": 224, "data.color_mode": "RGB",
                               "model.region_discriminator_hidden": 8, "optim.backbone_lr_mult": 0.1,
                               "optim.region_lr_mult": 1.0, "optim.lr": 0.01})
    model = build_model(config, num_classes=31, in_channels=3)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():  # the backbone computes exactly what the weights file's network computes
        body = torch.nn.Sequential(*list(reference.children())[:-2]).eval()
        torch.testing.assert_close(model.backbone.eval()(x), body(x))
    assert model.region_discriminators.num_regions == 49  # 7 x 7 at 224 px
    optimizer = build_optimizer(model, config.optim)
    set_learning_rate(optimizer, 0.004)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["backbone"] == pytest.approx(0.1 * rates["new_layers"]) and rates["new_layers"] == 0.004
    assert rates["region_discriminators"] == rates["new_layers"]
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    [group] = [g for g in optimizer.param_groups if g["name"] == "backbone"]
    assert {id(p) for p in group["params"]} == backbone_ids

