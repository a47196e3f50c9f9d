import pytest


@pytest.fixture(scope="session")
def tiny_cache():
    """The model cache ($LORAFLEET_CACHE_DIR or ~/.cache/lorafleet): entries are keyed by a hash of
    the recipe and its corpus, so a cached random-init model is exactly what a rebuild would give."""
    from lorafleet.services.trainer.tiny_model import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def tiny_dir(tiny_cache):
    """The random-init tiny model + tokenizer, built once per session."""
    from lorafleet.services.trainer.tiny_model import cached_tiny

    return cached_tiny(False, cache_dir=tiny_cache)


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
