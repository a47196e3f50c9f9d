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
