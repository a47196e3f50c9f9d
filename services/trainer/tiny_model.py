"""A tiny Qwen2-architecture model and its tokenizer, built locally (no hub).

`make_tiny(out)` writes a random-initialised model (fast; for tests).
`make_tiny(out, pretrain=True)` writes the CPU-pretrained demo base of
TINY_MODEL_NOTES.md. That base ships with the package (SHIPPED_DIR: safetensors,
tokenizer, config and a sha256 manifest, rebuilt by `lorafleet model build-tiny`);
it is used when its manifest names the current recipe and every file matches its
sha256. Otherwise (the recipe changed, a file is missing) it is built once and
cached under the cache dir keyed by a hash of the recipe.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lorafleet.shared.prompts import SYSTEM_PROMPT, render_messages
from lorafleet.shared import synthetic
from lorafleet.shared.settings import default_cache_dir  # noqa: F401 - also imported from here by tests

log = logging.getLogger(__name__)

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
NUMBER_TOKENS = 100

# ChatML; the assistant turn *including* <|im_end|> sits inside {% generation %},
# so assistant_only_loss trains the end-of-turn token (pad != eos keeps it in the loss).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the pretrained weights; its hash keys the cache."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 512
    pretrain_chats: int = 3000
    code_snippets: int = 2000
    steps: int = 700
    batch_size: int = 32
    learning_rate: float = 3e-3
    max_length: int = 256
    seed: int = 0
    version: int = 3  # bump when the corpus generators change (3: constants up to 40 for production)

    def key(self) -> str:
        """Hash of the recipe *and* the corpus it generates, so editing a problem family or
        the snippets (shared/synthetic.py) invalidates cached models."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for text in tokenizer_corpus(self):
            digest.update(text.encode())
        return digest.hexdigest()[:16]


def configure_cpu_threads(share: float = 0.5) -> int:
    """Torch intra-op threads for CPU training: $LORAFLEET_TORCH_THREADS, else `share` of the cores.

    Measured here (2 cores shared with other jobs): OpenMP threads spin-wait, and with
    2 threads on a contended 2-core box a tiny-model step took 3 s, with 1 thread 0.35 s.
    A job that runs alone (building the pretrained base) takes them all: on a quiet 2-core
    machine a pretraining step took 0.95 s with 1 thread, 0.52 s with 2."""
    import torch

    if torch.cuda.is_available():
        return torch.get_num_threads()
    threads = int(os.environ.get("LORAFLEET_TORCH_THREADS") or max(1, int((os.cpu_count() or 2) * share)))
    torch.set_num_threads(threads)
    return threads


def _chat_text(messages: list[dict[str, str]]) -> str:
    # Same layout as CHAT_TEMPLATE; used where a jinja render per example would be slow.
    out = []
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    return "".join(out)


def pretraining_corpus(recipe: Recipe) -> list[str]:
    """Chats of the pretraining families plus generic code snippets (full-text LM)."""
    chats = [
        _chat_text(render_messages(p.statement, code=p.solutions[0])).rstrip("\n")
        for p in synthetic.pretrain_problems(recipe.pretrain_chats, seed=recipe.seed)
    ]
    return chats + synthetic.code_snippets(recipe.code_snippets, seed=recipe.seed)


def tokenizer_corpus(recipe: Recipe) -> list[str]:
    """Text the BPE is trained on: the pretraining corpus, the LoRA statements and code of
    the *training* pairs (numbers are added as whole tokens afterwards)."""
    lora = [
        _chat_text(render_messages(p.statement, code=p.solutions[0]))
        for p in synthetic.lora_problems(None, "train")
    ]
    return pretraining_corpus(recipe) + lora * 3 + [SYSTEM_PROMPT] * 10


def train_tokenizer(recipe: Recipe):
    """Byte-level BPE trained locally; ChatML specials; pad (<|endoftext|>) != eos (<|im_end|>).

    transformers 5 loads any qwen2 checkpoint's tokenizer as Qwen2Tokenizer, which
    rebuilds Qwen's pre-tokenizer (one token per digit) whatever tokenizer.json says:
    the BPE is trained under that same pre-tokenizer so what we train is what loads.
    Whole numbers up to NUMBER_TOKENS then become single tokens as added tokens
    " 0" ... " 99" (matched before pre-tokenization, and kept by Qwen2Tokenizer).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(recipe), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, padding_side="right",
        model_max_length=recipe.max_positions,
    )
    fast.add_tokens([AddedToken(f" {n}", normalized=False, special=False) for n in range(NUMBER_TOKENS)])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(recipe: Recipe, tokenizer):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(recipe.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        intermediate_size=recipe.intermediate_size,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False,
    )
    return model


def run_pretraining(model, tokenizer, recipe: Recipe, work_dir: Path) -> dict:
    """Full-text LM on the pretraining corpus with trl's SFTTrainer (no packing)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    configure_cpu_threads(share=1.0)  # a one-off build that nothing else waits beside (the demo builds first)
    texts = pretraining_corpus(recipe)
    args = SFTConfig(
        output_dir=str(work_dir),
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        max_length=recipe.max_length,
        packing=False,
        dataset_text_field="text",
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        seed=recipe.seed,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer)
    result = trainer.train()
    return {"train_loss": result.training_loss, "steps": result.global_step}


def _save(model, tokenizer, out: Path, meta: dict) -> None:
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "lorafleet_tiny.json").write_text(json.dumps(meta, indent=2))


def _copy_into(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)


TINY_SCHEME = "tiny://"
SHIPPED_DIR = Path(__file__).resolve().parent / "tiny_base"
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_base(recipe: Recipe | None = None, shipped_dir: Path = SHIPPED_DIR) -> Path | None:
    """The pretrained base shipped with the package, when it was built from `recipe`;
    None when none is shipped or it was built from another recipe (the caller builds).

    Every file listed in the manifest is checked against its sha256 (a few MB: milliseconds);
    a mismatch is an error, not a silent rebuild: the shipped files were damaged or edited."""
    from lorafleet.shared.errors import ConfigError

    recipe = recipe or Recipe()
    manifest_path = shipped_dir / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("recipe_key") != recipe.key():
        log.warning("the shipped tiny base (%s) was built from recipe %s, not the current %s: building it instead "
                    "(rebuild the shipped one with `lorafleet model build-tiny`)",
                    shipped_dir, manifest.get("recipe_key"), recipe.key())
        return None
    for name, want in manifest["files"].items():
        path = shipped_dir / name
        got = _sha256(path) if path.is_file() else "missing"
        if got != want:
            raise ConfigError(f"shipped tiny base {path}: sha256 {got[:16]}, manifest says {want[:16]}; restore it "
                              "(git checkout) or rebuild it with `lorafleet model build-tiny`")
    return shipped_dir


def build_shipped(out_dir: Path = SHIPPED_DIR, recipe: Recipe | None = None, threads: int = 1) -> dict:
    """Pretrain the tiny base from scratch and write it to `out_dir` with a sha256 manifest.

    Seeded (recipe.seed: tokenizer corpus, init, data order) with deterministic torch
    algorithms and a fixed thread count, so a rebuild on the same software gives the
    same weights; the manifest records the versions and the time it took. One thread:
    on a shared 2-core machine OpenMP's spinning threads made a step 9x slower with 2
    (configure_cpu_threads)."""
    import platform

    import torch
    import transformers

    recipe = recipe or Recipe()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    os.environ["LORAFLEET_TORCH_THREADS"] = str(threads)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-build-") as tmp:
        tokenizer = train_tokenizer(recipe)
        model = build_model(recipe, tokenizer)
        meta: dict = {"recipe": asdict(recipe), "pretrained": True}
        meta.update(run_pretraining(model, tokenizer, recipe, Path(tmp) / "work"))
        meta["pretrain_seconds"] = round(time.monotonic() - started, 1)
        staged = Path(tmp) / "model"
        _save(model, tokenizer, staged, meta)
        files = {p.name: _sha256(p) for p in sorted(staged.iterdir()) if p.is_file()}
        manifest = {
            "recipe_key": recipe.key(), "recipe": asdict(recipe), "files": files,
            "parameters": sum(p.numel() for p in model.parameters()),
            "build_seconds": round(time.monotonic() - started, 1), "threads": threads,
            "train_loss": meta.get("train_loss"), "steps": meta.get("steps"),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = Path(tmp) / "old"
        if out_dir.exists():
            out_dir.rename(old)
        staged.rename(out_dir)
    return manifest


def cached_tiny(pretrain: bool, recipe: Recipe | None = None, cache_dir: str | Path | None = None) -> Path:
    """The cache directory holding the tiny model of this recipe, built on first use
    (in a private temp dir, then renamed: a crash leaves nothing half-written)."""
    recipe = recipe or Recipe()
    if pretrain and (shipped := shipped_base(recipe)) is not None:
        return shipped
    kind = "base" if pretrain else "random"
    cached = Path(cache_dir or default_cache_dir()) / f"tiny-{kind}-{recipe.key()}"
    if (cached / "lorafleet_tiny.json").is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    # One builder per recipe on this machine; the others wait for its result.
    with open(cached.parent / f".{cached.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cached / "lorafleet_tiny.json").is_file():
            _build(cached, pretrain, recipe)
    return cached


def _build(cached: Path, pretrain: bool, recipe: Recipe) -> None:
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".build-") as tmp:
        tokenizer = train_tokenizer(recipe)
        model = build_model(recipe, tokenizer)
        meta: dict = {"recipe": asdict(recipe), "pretrained": pretrain}
        if pretrain:
            log.info("pretraining the tiny base (%d steps, cached at %s)", recipe.steps, cached)
            started = time.monotonic()
            meta.update(run_pretraining(model, tokenizer, recipe, Path(tmp) / "work"))
            meta["pretrain_seconds"] = round(time.monotonic() - started, 1)
        staged = Path(tmp) / "model"
        _save(model, tokenizer, staged, meta)
        try:
            staged.rename(cached)
        except OSError:  # another machine sharing the cache dir finished first
            if not (cached / "lorafleet_tiny.json").is_file():
                raise


def resolve_base_model(name: str, cache_dir: str | Path | None = None) -> str:
    """`tiny://pretrained` / `tiny://random` -> the cached local directory; anything else unchanged
    (a local path or a hub name). Trainer and evaluator both load base models through this."""
    if not name.startswith(TINY_SCHEME):
        return name
    kind = name[len(TINY_SCHEME):]
    if kind not in ("pretrained", "random"):
        from lorafleet.shared.errors import ConfigError

        raise ConfigError(f"base_model {name!r}: use tiny://pretrained or tiny://random (or a path / hub name)")
    return str(cached_tiny(kind == "pretrained", cache_dir=cache_dir))


def make_tiny(out_dir: str | Path, pretrain: bool = False, *, recipe: Recipe | None = None,
              cache_dir: str | Path | None = None) -> Path:
    """Write a tiny model + tokenizer to `out_dir` and return it.

    pretrain=False: random init (seconds). pretrain=True: the pretrained base, computed
    once per recipe and cached (a few minutes on 2 CPU cores)."""
    out = Path(out_dir)
    _copy_into(cached_tiny(pretrain, recipe, cache_dir), out)
    return out
