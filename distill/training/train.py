"""`distill train`: supervised fine-tuning of an open causal LM on a run's train.jsonl, on this machine.

The lines are encoded by `training.chat` (distill's own label mask from the model's chat template) and handed to
TRL's SFTTrainer pre-tokenized (`input_ids` + `labels`: TRL uses given labels as they are) with `max_length=None`,
so TRL cuts nothing (its default, 1024, truncates silently); lines over `max_tokens` are skipped and counted
instead. The output folder holds a plain model (LoRA merged), the tokenizer with its chat template and
`train.json`; checkpoints go to OUT/checkpoints/ and the same command resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.run_folder import RunFolder
from distill.training.chat import TemplateError, encode_line
from distill.training.load import INSTALL_HINT, TrainError, load_model, model_context

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """Where the trained model is and what the run measured (the figures are those of train.json)."""

    out_dir: Path
    train_json: Path
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.figures["steps"])

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.figures["data"]["skipped"])


def _data_file(run: Path) -> Path:
    path = RunFolder(run).train if run.is_dir() else run
    if not path.is_file():
        raise TrainError(f"{path}: no such file", hint="give a run folder (with train.jsonl) or a .jsonl file; "
                         "`distill generate CONFIG` writes one")
    return path


def _read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainError(f"{path} line {number}: not JSON ({exc.msg})",
                             hint=f"`distill validate {path}` names every bad line") from None
        if not isinstance(line, dict) or not isinstance(line.get("messages"), list):
            raise TrainError(f"{path} line {number}: no `messages` list", hint=f"`distill validate {path}`")
        lines.append(line)
    return lines


def _encode_all(tokenizer: Any, lines: list[dict[str, Any]], path: Path, limit: int
                ) -> tuple[list[dict[str, list[int]]], dict[str, int], dict[str, int]]:
    kept: list[dict[str, list[int]]] = []
    skipped = {"too_long": 0, "nothing_to_train": 0}
    tokens = {"total": 0, "trained": 0, "longest": 0}
    for number, line in enumerate(lines, 1):
        try:
            encoded = encode_line(tokenizer, line)
        except TemplateError as exc:
            raise TemplateError(f"{path} line {number}: {exc.message}", hint=exc.hint) from None
        if len(encoded.input_ids) > limit:
            skipped["too_long"] += 1
            continue
        if not encoded.trained:
            skipped["nothing_to_train"] += 1
            continue
        kept.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
        tokens["total"] += len(encoded.input_ids)
        tokens["trained"] += encoded.trained
        tokens["longest"] = max(tokens["longest"], len(encoded.input_ids))
    return kept, skipped, tokens


def _check_checkpoints(folder: Path, signature: dict[str, Any]) -> bool:
    """True when OUT/checkpoints holds a checkpoint of this same training (resume); refuse another training's."""
    record = folder / "distill-train.json"
    if record.is_file():
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(k for k in signature if before.get(k) != signature[k])
        if changed:
            raise TrainError(f"{folder} holds checkpoints of another training ({', '.join(changed)} differ)",
                             hint=f"give another --out, or remove {folder} to start over")
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(signature, indent=2) + "\n", encoding="utf-8")
    return any(p.is_dir() for p in folder.glob("checkpoint-*"))


def _peak_memory_mb() -> dict[str, float]:
    import torch

    peak = {"rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _progress_callback(progress: bool) -> Any:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """A tqdm bar over the optimizer steps with the last loss."""

        bar: Any = None
        start_tokens = 0  # what a resumed checkpoint had already seen, so tokens/s counts this session only

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start_tokens = int(state.num_input_tokens_seen or 0)
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                            disable=not progress, dynamic_ncols=True, file=sys.stderr)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return Progress()


def train(
    run: str | Path,
    *,
    base: str,
    out: str | Path | None = None,
    lora: bool = True,
    epochs: float = 1.0,
    lr: float | None = None,
    max_steps: int | None = None,
    max_tokens: int | None = None,
    grad_accum: int = 8,
    save_steps: int = 25,
    lora_rank: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune `base` on RUN/train.jsonl (or a .jsonl file) and write the model folder `out` (default
    RUN/student/); rerunning the same call resumes from the last checkpoint."""
    if epochs <= 0:
        raise TrainError(f"epochs must be above 0, got {epochs}")
    for name, value in (("grad_accum", grad_accum), ("save_steps", save_steps), ("max_steps", max_steps),
                        ("max_tokens", max_tokens), ("lora_rank", lora_rank)):
        if value is not None and value < 1:
            raise TrainError(f"{name} must be at least 1, got {value}")
    run_path = Path(run)
    data = _data_file(run_path)
    out_dir = Path(out) if out is not None else (run_path if run_path.is_dir() else run_path.parent) / "student"
    lines = _read_lines(data)
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    model, tokenizer = load_model(base, for_training=True)
    limit = max_tokens or model_context(model, tokenizer)
    examples, skipped, tokens = _encode_all(tokenizer, lines, data, limit)
    if not examples:
        raise TrainError(f"{data}: no line left to train on ({skipped['too_long']} over {limit} tokens, "
                         f"{skipped['nothing_to_train']} with no weight-1 assistant message)",
                         hint="raise --max-tokens, or generate more data")
    lr = lr if lr is not None else (2e-4 if lora else 5e-5)
    hyper = {"mode": "lora" if lora else "full", "epochs": epochs, "learning_rate": lr, "max_steps": max_steps,
             "max_tokens": limit, "micro_batch": 1, "grad_accum": grad_accum, "save_steps": save_steps, "seed": seed,
             **({"lora_rank": lora_rank, "lora_alpha": 2 * lora_rank, "lora_targets": "all-linear"} if lora else {})}
    checkpoints = out_dir / "checkpoints"
    signature = {"base": str(base), "data_hash": data_hash,
                 **{k: v for k, v in hyper.items() if k not in ("epochs", "max_steps", "save_steps")}}
    resume = _check_checkpoints(checkpoints, signature)

    try:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer
    except ImportError as exc:
        raise TrainError(f"`distill train` needs {exc.name}, which is not installed", hint=INSTALL_HINT) from None
    import torch
    from transformers import PrinterCallback

    peft_config = None
    if lora:
        try:
            from peft import LoraConfig
        except ImportError:
            raise TrainError("--lora needs peft, which is not installed", hint=INSTALL_HINT) from None
        peft_config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(checkpoints), num_train_epochs=epochs, max_steps=max_steps or -1, learning_rate=lr,
        per_device_train_batch_size=1, gradient_accumulation_steps=grad_accum, max_length=None,
        logging_steps=1, save_strategy="steps", save_steps=save_steps, save_total_limit=2, report_to="none",
        disable_tqdm=True, seed=seed, data_seed=seed, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        include_num_input_tokens_seen=True, dataset_num_proc=None, lr_scheduler_type="cosine", warmup_steps=0,
        log_level="warning", activation_checkpointing=False,
    )
    bar = _progress_callback(progress)
    with warnings.catch_warnings():  # the libraries' own deprecation notices about each other's APIs: not the user's
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Could not find a config file")  # peft, for a .gguf base folder
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                             processing_class=tokenizer, peft_config=peft_config, callbacks=[bar])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict; the bar shows the loss instead
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=True if resume else None)
        seconds = time.perf_counter() - started
    state = trainer.state
    session_tokens = int(state.num_input_tokens_seen or 0) - bar.start_tokens

    final: Any = trainer.model
    if lora:
        final = final.merge_and_unload()
    final.config.use_cache = True
    if getattr(final, "generation_config", None) is not None:
        final.generation_config.use_cache = True
    out_dir.mkdir(parents=True, exist_ok=True)
    final.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    losses = [{"step": e["step"], "loss": round(float(e["loss"]), 6)} for e in state.log_history if "loss" in e]
    figures = {
        "base_model": str(base), "data": {"file": str(data), "sha256": data_hash, "lines": len(lines),
                                          "examples": len(examples), "skipped": skipped, "tokens": tokens},
        "hyperparameters": hyper, "steps": state.global_step, "epochs_done": round(float(state.epoch or 0), 4),
        "resumed": resume, "loss_curve": losses, "final_loss": losses[-1]["loss"] if losses else None,
        "seconds": round(seconds, 2), "tokens_seen": int(state.num_input_tokens_seen),
        "tokens_per_second": round(session_tokens / seconds, 1) if seconds > 0 else None,
        "peak_memory": _peak_memory_mb(), "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
    }
    train_json = out_dir / "train.json"
    train_json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return TrainResult(out_dir, train_json, figures)

