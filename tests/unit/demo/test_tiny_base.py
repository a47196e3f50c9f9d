"""The pretrained tiny base shipped with the package: it matches the current recipe, every file
matches its sha256, `tiny://pretrained` uses it without building anything, and damage is an error."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from lorafleet.services.trainer import tiny_model
from lorafleet.services.trainer.tiny_model import SHIPPED_DIR, Recipe, resolve_base_model, shipped_base
from lorafleet.shared.errors import ConfigError


def test_the_shipped_base_is_the_current_recipes_and_small():
    manifest = json.loads((SHIPPED_DIR / "manifest.json").read_text())
    assert manifest["recipe_key"] == Recipe().key(), (
        "the recipe (or the synthetic corpus it hashes) changed: rebuild the shipped base with "
        "`lorafleet model build-tiny` and commit services/trainer/tiny_base/")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    config = json.loads((SHIPPED_DIR / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM's CPU kernels need head_dim >= 32
    assert 500_000 < manifest["parameters"] < 2_000_000
    size = sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())
    assert size < 8 * 2**20


def test_tiny_pretrained_resolves_to_the_shipped_copy_without_a_build(tmp_path, monkeypatch):
    def no_build(*a, **k):
        raise AssertionError("built the tiny base although a matching one ships with the package")

    monkeypatch.setattr(tiny_model, "_build", no_build)
    assert resolve_base_model("tiny://pretrained", cache_dir=tmp_path) == str(SHIPPED_DIR)
    assert not list(tmp_path.iterdir())


def test_a_damaged_file_is_an_error_and_another_recipe_is_not_served(tmp_path):
    copy = tmp_path / "tiny_base"
    shutil.copytree(SHIPPED_DIR, copy)
    assert shipped_base(shipped_dir=copy) == copy
    assert shipped_base(replace(Recipe(), steps=Recipe().steps + 1), shipped_dir=copy) is None
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256.*build-tiny"):
        shipped_base(shipped_dir=copy)
    weights.unlink()
    with pytest.raises(ConfigError, match="missing"):
        shipped_base(shipped_dir=copy)
