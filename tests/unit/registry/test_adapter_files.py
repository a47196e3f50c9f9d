import json
import subprocess
import sys

import pytest

from lorafleet.services.registry.adapter_files import parse_adapter_config, read_adapter_dir
from lorafleet.services.registry.core import RegistryError


def test_reads_rank_modules_alpha_and_base():
    info = parse_adapter_config({"r": 64, "lora_alpha": 128, "target_modules": ["v_proj", "q_proj"],
                                 "base_model_name_or_path": "Qwen/Qwen2.5-Coder-7B"})
    assert (info.rank, info.lora_alpha, info.target_modules) == (64, 128.0, ["q_proj", "v_proj"])
    assert parse_adapter_config({"r": 8, "target_modules": "all-linear"}).target_modules == ["all-linear"]


@pytest.mark.parametrize("data, match", [({"target_modules": ["q"]}, "rank"), ({"r": 8}, "target_modules"),
                                         ({"r": 0, "target_modules": ["q"]}, "rank")])
def test_bad_configs_name_the_problem(data, match):
    with pytest.raises(RegistryError, match=match):
        parse_adapter_config(data)


def test_directory_needs_adapter_config(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(RegistryError, match="no adapter_config.json"):
        read_adapter_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": ["q_proj"]}))
    (tmp_path / "training_summary.json").write_text(json.dumps({"config": {"adapter_name": "x"}}))
    info, config = read_adapter_dir(tmp_path)
    assert info.rank == 4 and config == {"adapter_name": "x"}


def test_registry_imports_no_torch():
    code = ("import sys, lorafleet.services.registry.app, lorafleet.services.registry.cli; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
