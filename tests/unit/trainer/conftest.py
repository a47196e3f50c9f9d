import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random-init tiny model + tokenizer, built once per session in a private cache."""
    from lorafleet.services.trainer.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("tiny")
    return make_tiny(root / "model", pretrain=False, cache_dir=root / "cache")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def make_config(base_model, training=None, validation=None, data=None, **top):
    """configs/tiny_python_lora.yaml with overrides (the real seed config, not a hand-made one)."""
    from pathlib import Path

    import yaml

    from lorafleet.shared.config import parse_config

    root = Path(__file__).resolve().parents[3]
    raw = yaml.safe_load((root / "configs" / "tiny_python_lora.yaml").read_text())
    raw["base_model"] = str(base_model)
    raw["training"].update(training or {})
    raw["validation"].update(validation or {})
    raw["data"].update(data or {})
    raw.update(top)
    return parse_config(raw, "tiny_python_lora.yaml (test overrides)")


@pytest.fixture
def tiny_config(tiny_dir):
    return lambda **kw: make_config(tiny_dir, **kw)
