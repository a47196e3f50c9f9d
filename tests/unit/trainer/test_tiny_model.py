import json

from lorafleet.services.trainer.tiny_model import (
    Recipe, cached_tiny, resolve_base_model, tokenizer_corpus, train_tokenizer,
)


def test_saved_tokenizer_reloads_to_identical_ids(tiny_dir, tiny_tokenizer):
    # transformers 5 re-builds qwen2 tokenizers' pre-tokenizer on load: what we trained must survive it.
    trained = train_tokenizer(Recipe())
    assert type(tiny_tokenizer).__name__ == "Qwen2Tokenizer"
    for text in tokenizer_corpus(Recipe())[::250] + ["x 170 y 1234 (n + 1) 07 ☃ \t tab"]:
        assert tiny_tokenizer.encode(text, add_special_tokens=False) == trained.encode(text, add_special_tokens=False)
        assert tiny_tokenizer.decode(tiny_tokenizer.encode(text, add_special_tokens=False)) == text


def test_chatml_template_with_generation_markers(tiny_tokenizer):
    assert "{% generation %}" in tiny_tokenizer.chat_template
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    text = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_model_shape_and_special_ids(tiny_dir, tiny_tokenizer):
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["hidden_size"] == 128 and config["num_hidden_layers"] == 4
    assert config["num_attention_heads"] == 4 and config["num_key_value_heads"] == 2 and config["tie_word_embeddings"]
    assert config["eos_token_id"] == tiny_tokenizer.eos_token_id != config["pad_token_id"] == tiny_tokenizer.pad_token_id
    assert config["vocab_size"] == len(tiny_tokenizer)


def test_cache_is_reused_and_keyed_by_recipe(tiny_dir, tiny_cache):
    stamp = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert cached_tiny(False, cache_dir=tiny_cache) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_base_model("tiny://random", cache_dir=tiny_cache) == str(tiny_dir)
    assert resolve_base_model("Qwen/Qwen2.5-Coder-7B-Instruct") == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert Recipe(hidden_size=64).key() != Recipe().key()


def test_make_tiny_command(tiny_dir, tiny_cache, tmp_path):
    from typer.testing import CliRunner

    from lorafleet.cli import app

    result = CliRunner().invoke(app, ["model", "make-tiny", str(tmp_path / "m"), "--cache-dir", str(tiny_cache)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()
