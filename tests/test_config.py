from pathlib import Path

import pytest
import yaml

from tada import config as config_module
from tada.config import Config, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def leaves(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys |= leaves(value, path + ".") if isinstance(value, dict) else {path}
    return keys


def test_params_yaml_mirrors_the_config_tree_one_to_one():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert leaves(params) == leaves(Config().to_dict())
    assert load_config(ROOT / "params.yaml") == Config()  # it validates, and the code's defaults are the file's


def test_dvc_yaml_params_are_sections_or_keys_of_params_yaml():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    known = leaves(Config().to_dict())
    sections = set(Config().to_dict())
    for name, stage in dvc["stages"].items():
        for entry in stage.get("params", []):
            assert isinstance(entry, str), f"stage {name}: params entry {entry!r}"
            assert entry in sections or entry in known or any(k.startswith(f"{entry}.") for k in known), \
                f"stage {name} declares unknown param {entry}"


def test_choices_lists_agree_with_the_registries():
    from tada.methods import METHODS
    from tada.models.backbones import available_backbones

    assert tuple(METHODS) == config_module.METHODS
    assert available_backbones() == config_module.BACKBONES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"iterations": -5}}, "train.iterations must be > 0, got -5"),
        ({"train": {"iterations": 1.5}}, "train.iterations must be an integer, got 1.5"),
        ({"train": {"iterations": "10"}}, "train.iterations must be an integer, got '10'"),
        ({"train": {"deterministic": "yes"}}, "train.deterministic must be true or false"),
        ({"method": {"name": "cdan"}}, "method.name must be one of source_only, dann, tada"),
        ({"model": {"backbone": "vgg"}}, "model.backbone must be one of"),
        ({"optim": {"momentum": 1.0}}, "optim.momentum must be < 1"),
        ({"data": {"render": {"height": [0.9, 0.5]}}}, "data.render.height must be [low, high]"),
        ({"data": {"render": {"height": 0.5}}}, "data.render.height must be a list of 2 numbers"),
        ({"train": {"iteration": 10}}, "unknown key train.iteration"),
        ({"trian": {}}, "unknown key trian"),
        ({"train": 3}, "train must be a mapping"),
        ({"model": {"weights_path": 3}}, "model.weights_path must be str or NoneType"),
    ],
)
def test_bad_values_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(data)
    assert message in str(excinfo.value)


def test_load_config_names_the_file_and_applies_overrides(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  iterations: 0\n")
    with pytest.raises(ConfigError, match=r"params.yaml: train.iterations must be > 0, got 0"):
        load_config(path)
    path.write_text("train:\n  iterations: 7\n")
    config = load_config(path, {"method.name": "dann", "optim.lr": 0.1})
    assert (config.train.iterations, config.method.name, config.optim.lr) == (7, "dann", 0.1)
    with pytest.raises(ConfigError, match="unknown key optim.learning_rate"):
        config.replace({"optim.learning_rate": 1})
    with pytest.raises(ConfigError, match="not valid YAML"):
        path.write_text("train: [\n")
        load_config(path)
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "missing.yaml")


def test_config_round_trips_and_digest_tracks_changes():
    config = Config()
    assert config_from_dict(config.to_dict()) == config
    assert config.digest() == Config().digest()
    assert config.digest() != config.replace({"train.seed": 3}).digest()


def test_exponent_floats_are_numbers_as_dvc_reads_them(tmp_path):
    """YAML 1.1 (PyYAML) reads ``1e-4`` as a string; DVC (YAML 1.2) and every user read it as a number."""
    path = tmp_path / "params.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  weight_decay: 5E-04\ntrain:\n  seed: 1_0\n")
    config = load_config(path)
    assert config.optim.lr == 1e-4 and config.optim.weight_decay == 5e-4 and config.train.seed == 10
