"""Loading an open causal LM and its tokenizer: a local folder, a `.gguf` file, or a Hugging Face Hub id.

A GGUF file is dequantized by transformers (`gguf_file=`); its quantization record is then removed so a Trainer
accepts the model. The heavy packages come from the `train` extra; a missing one fails with the install line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.errors import DistillError

__all__ = ["INSTALL_HINT", "TrainError", "import_train_deps", "is_local_model", "load_model", "model_context"]

INSTALL_HINT = "pip install torch==2.13.0 'distill[train]' (or any torch>=2.4 first, then 'distill[train]')"


class TrainError(DistillError):
    """Local training or a local model cannot go on (missing package, bad model, bad data); the message says why."""


def import_train_deps() -> None:
    """Fail early, with the install line, when the training extra is missing."""
    missing = []
    for name in ("torch", "transformers"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise TrainError(f"local models need {', '.join(missing)}, which is not installed", hint=INSTALL_HINT)


def is_local_model(spec: str | Path) -> bool:
    """An existing model folder (with a config.json) or an existing .gguf file."""
    path = Path(spec)
    return (path.is_dir() and (path / "config.json").is_file()) or (path.is_file() and path.suffix == ".gguf")


def _where(spec: str | Path) -> tuple[str, dict[str, Any]]:
    """from_pretrained's first argument and its extra keywords for a spec."""
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TrainError(f"{path}: no such .gguf file", hint="give an existing .gguf file, a model folder or a Hub id")
        return str(path.parent.resolve()), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TrainError(f"{path}: not a model folder (no config.json)",
                             hint="give a folder written by save_pretrained (or `distill train`), a .gguf file or a Hub id")
        return str(path.resolve()), {}
    if str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1:
        raise TrainError(f"{spec}: no such model folder or file", hint="check the path")
    return str(spec), {}


def load_model(spec: str | Path, *, for_training: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) for a spec; a GGUF model is dequantized to float32 and freed of its quantization record."""
    import_train_deps()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, extra = _where(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        model = AutoModelForCausalLM.from_pretrained(where, **extra)
    except ImportError as exc:  # e.g. the gguf package for a .gguf file
        raise TrainError(f"{spec}: {exc}"[:400], hint="pip install gguf (for .gguf files), or " + INSTALL_HINT) from None
    except OSError as exc:
        raise TrainError(f"{spec}: cannot load the model: {exc}"[:400],
                         hint="a Hub id needs network access (and HF_TOKEN for gated models); "
                         "or give a local folder or .gguf file") from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and extra.get("gguf_file"):
        quantizer.remove_quantization_config(model)  # dequantized already; the Trainer refuses a "quantized" model
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not for_training:
        model.eval()
    return model, tokenizer


def model_context(model: Any, tokenizer: Any) -> int:
    """The model's context length in tokens (max_position_embeddings, else the tokenizer's limit, else 2048)."""
    value = getattr(model.config, "max_position_embeddings", None)
    if isinstance(value, int) and value > 0:
        return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 2048
