from pathlib import Path

import pytest

from lorafleet.shared.config import load_config
from lorafleet.shared.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
SPEC_FIELDS = {
    "lora": ["r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type"],
    "training": ["num_epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler",
                 "warmup_ratio", "weight_decay", "max_seq_length", "gradient_checkpointing", "optim", "bf16"],
    "data": ["train_file", "eval_file", "domains", "min_examples"],
    "validation": ["eval_steps", "metric", "early_stopping_patience"],
}


@pytest.mark.parametrize("name", ["python_lora", "math_lora", "tiny_python_lora", "tiny_math_lora"])
def test_seed_configs_validate(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.adapter_name == name.replace("_", "-")


@pytest.mark.parametrize("name,rank", [("python_lora", 32), ("math_lora", 64)])
def test_spec_configs_carry_every_spec_field(name, rank):
    import yaml

    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    for section, fields in SPEC_FIELDS.items():
        missing = [f for f in fields if f not in raw[section]]
        assert not missing, f"{name}.{section} lacks {missing}"
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.lora.r == rank and config.quantization == "nf4"
    assert config.serve_base_model and "AWQ" in config.serve_base_model and "AWQ" not in config.base_model


def test_unknown_key_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text((CONFIGS / "tiny_python_lora.yaml").read_text().replace("  lora_dropout:", "  lora_dropuot:"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "lora.lora_dropuot" in str(err.value) and "unknown field" in str(err.value)


def test_wrong_type_names_field_and_expectation(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text((CONFIGS / "tiny_python_lora.yaml").read_text().replace("batch_size: 4", "batch_size: four"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "training.batch_size" in str(err.value) and "integer" in str(err.value) and "'four'" in str(err.value)


def test_unknown_scheduler_and_optimizer_fail(tmp_path):
    for old, new, field in [("lr_scheduler: cosine", "lr_scheduler: cosinus", "training.lr_scheduler"),
                            ("optim: adamw_torch", "optim: adam_w", "training.optim")]:
        path = tmp_path / "bad.yaml"
        path.write_text((CONFIGS / "tiny_python_lora.yaml").read_text().replace(old, new))
        with pytest.raises(ConfigError, match=field):
            load_config(path)


def test_save_steps_must_align_with_eval_steps(tiny_config, tmp_path):
    from lorafleet.services.trainer.train import sft_config

    config = tiny_config(training={"save_steps": 15}, validation={"eval_steps": 10})
    with pytest.raises(ConfigError, match="save_steps=15 must be a multiple of validation.eval_steps=10"):
        sft_config(config, tmp_path, has_eval=True)
    assert sft_config(config, tmp_path, has_eval=False).save_steps == 15


def test_cpu_maps_gpu_only_settings(tiny_config, tmp_path):
    from lorafleet.services.trainer.train import sft_config

    args = sft_config(tiny_config(training={"optim": "paged_adamw_8bit", "bf16": True, "warmup_ratio": 0.1,
                                            "packing_strategy": "bfd"}), tmp_path, has_eval=True)
    assert args.optim == "adamw_torch" and not args.bf16 and args.use_cpu
    assert args.warmup_steps == 0.1 and args.metric_for_best_model == "eval_pass_at_1"
    assert args.assistant_only_loss and args.packing and args.packing_strategy == "bfd"
    # bfd_rows: train.datasets_for() packs and builds the assistant-only labels itself
    rows = sft_config(tiny_config(training={"packing_strategy": "bfd_rows"}), tmp_path, has_eval=True)
    assert not rows.packing and not rows.assistant_only_loss


def test_nf4_without_gpu_or_bitsandbytes_is_a_clear_config_error(tiny_config, monkeypatch):
    from lorafleet.services.trainer import train

    monkeypatch.setattr(train, "bitsandbytes_available", lambda: False)  # the `gpu` extra is not installed
    with pytest.raises(ConfigError, match="quantization: nf4 needs bitsandbytes"):
        train.load_base(tiny_config(quantization="nf4"))
