"""Open and write Hugging Face GPT-2 checkpoint directories (safetensors only).

:class:`HFGPT2Loader` turns a directory written by ``GPT2LMHeadModel.save_pretrained``
(``config.json`` with ``"model_type": "gpt2"`` + ``model.safetensors``) into a
:class:`~gaf.plugins.lm.gpt2.GPT2Policy`; :func:`save_hf` writes a policy back in the
same format, so ``transformers.GPT2LMHeadModel.from_pretrained`` can open gaf models.

Weights are read with ``safetensors.torch.load_file`` only (never pickle). The
tokenizer is a :class:`~gaf.plugins.lm.tokenizer.BPETokenizer` when the directory has
``vocab.json`` and ``merges.txt``, else the byte tokenizer, which needs
``vocab_size == 259``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gaf.errors import BadData

from .gpt2 import GPT2Config, GPT2Policy
from .tokenizer import BPETokenizer, ByteTokenizer

__all__ = ["HFGPT2Loader", "save_hf", "config_from_hf", "config_to_hf"]

_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # HF's causal-mask buffers
#: HF ``GPT2Config`` defaults, used for keys a config.json leaves out.
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1,
    "embd_pdrop": 0.1, "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False, "tie_word_embeddings": True,
}
#: Settings gaf's GPT-2 cannot reproduce, with the only value it supports.
_REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
             "add_cross_attention": False, "tie_word_embeddings": True}
#: ``gelu_pytorch_tanh`` is the same function as ``gelu_new``.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def _read_config(path: Path) -> dict[str, Any]:
    file = path / _CONFIG
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadData(f"cannot read: {exc.strerror}", path=str(file)) from None
    except ValueError as exc:
        raise BadData(f"not valid JSON: {exc}", path=str(file)) from None
    if not isinstance(data, dict):
        raise BadData("expected a JSON object", path=str(file))
    return data


def config_from_hf(hf: dict[str, Any], *, source: str = _CONFIG) -> GPT2Config:
    """A :class:`GPT2Config` from an HF GPT-2 ``config.json`` mapping.

    Maps ``n_embd → d_model``, ``n_inner → mlp_ratio`` (must be a multiple of
    ``n_embd``), ``layer_norm_epsilon → layer_norm_eps`` and the largest of the three
    ``*_pdrop`` values to ``dropout``. Raises :class:`BadData` (naming ``source`` and
    the field) for a different model type, activation or attention variant.
    """
    cfg = {**_HF_DEFAULTS, **hf}

    def bad(field: str, message: str) -> BadData:
        return BadData(message, path=source, field=field)

    if hf.get("model_type") != "gpt2":
        raise bad("model_type", f"expected 'gpt2', got {hf.get('model_type')!r}")
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        value = cfg[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(field, f"expected a positive integer, got {value!r}")
    if cfg["activation_function"] not in _ACTIVATIONS:
        raise bad("activation_function", f"{cfg['activation_function']!r} is not supported; "
                  f"gaf's GPT-2 uses {' / '.join(_ACTIVATIONS)} (GELU, tanh approximation)")
    for field, wanted in _REQUIRED.items():
        if cfg[field] != wanted:
            raise bad(field, f"{cfg[field]!r} is not supported; gaf's GPT-2 needs {wanted!r}")
    d = cfg["n_embd"]
    if d % cfg["n_head"]:
        raise bad("n_head", f"n_head {cfg['n_head']} does not divide n_embd {d}")
    n_inner = cfg["n_inner"] if cfg["n_inner"] is not None else 4 * d
    if not isinstance(n_inner, int) or n_inner < d or n_inner % d:
        raise bad("n_inner", f"{n_inner!r} is not supported; it must be a multiple of n_embd ({d})")
    drops = [cfg[k] for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")]
    if not all(isinstance(p, (int, float)) and 0 <= p < 1 for p in drops):
        raise bad("resid_pdrop", f"dropout probabilities must be in [0, 1), got {drops}")
    eps = cfg["layer_norm_epsilon"]
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise bad("layer_norm_epsilon", f"expected a positive number, got {eps!r}")
    return GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["n_positions"], d_model=d,
                      n_layer=cfg["n_layer"], n_head=cfg["n_head"], mlp_ratio=n_inner // d,
                      dropout=float(max(drops)), layer_norm_eps=float(eps))


def config_to_hf(config: GPT2Config, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """The HF ``config.json`` mapping for a :class:`GPT2Config`."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.n_positions,
        "n_ctx": config.n_positions, "n_embd": config.d_model, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": config.mlp_ratio * config.d_model,
        "activation_function": "gelu_new", "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": True, "bos_token_id": bos_id, "eos_token_id": eos_id,
        "pad_token_id": pad_id, "use_cache": True,
    }


def _tokenizer_for(path: Path, config: GPT2Config):
    vocab, merges = path / "vocab.json", path / "merges.txt"
    if vocab.is_file() and merges.is_file():
        tok = BPETokenizer.from_files(vocab, merges)
        if tok.vocab_size > config.vocab_size:
            raise BadData(f"the tokenizer has {tok.vocab_size} ids but the model only "
                          f"{config.vocab_size}", path=str(vocab))
        return tok
    if config.vocab_size == ByteTokenizer.vocab_size:
        return ByteTokenizer()
    raise BadData(f"vocab_size is {config.vocab_size}, not the byte tokenizer's 259, so the "
                  "directory needs the GPT-2 tokenizer files vocab.json and merges.txt",
                  path=str(path))


def _state_dict(path: Path, model: GPT2Policy) -> dict[str, torch.Tensor]:
    file = path / _WEIGHTS
    try:
        raw = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types
        raise BadData(f"cannot read safetensors: {exc}", path=str(file)) from None
    lm_head = None
    state: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key == "lm_head.weight":
            lm_head = tensor
            continue
        state[key if key.startswith("transformer.") else "transformer." + key] = tensor
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise BadData(f"{len(missing)} tensors missing, e.g. {missing[:3]}", path=str(file))
    if unexpected:
        raise BadData(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}",
                      path=str(file))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise BadData(f"{key} has shape {tuple(tensor.shape)}, config.json implies "
                          f"{tuple(expected[key].shape)}", path=str(file), field=key)
    wte = state["transformer.wte.weight"]
    if lm_head is not None and (lm_head.shape != wte.shape or not torch.equal(lm_head, wte)):
        raise BadData("lm_head.weight differs from transformer.wte.weight; gaf's GPT-2 "
                      "only supports tied embeddings", path=str(file), field="lm_head.weight")
    return state


class HFGPT2Loader:
    """Loads a Hugging Face GPT-2 directory as a :class:`GPT2Policy` (float32)."""

    kind = "policy"

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """True for a directory with ``model.safetensors`` and a ``config.json`` whose
        ``model_type`` is ``"gpt2"``; False for a directory without ``config.json`` or
        whose ``model_type`` is another one. A damaged GPT-2 directory (a
        ``config.json`` that is not a JSON object, a GPT-2 config without its weights)
        raises :class:`~gaf.errors.BadData` naming the file, so that the user hears why
        it cannot be loaded."""
        path = Path(path)
        if not (path.is_dir() and (path / _CONFIG).is_file()):
            return False
        data = _read_config(path)
        if data.get("model_type") != "gpt2":
            return False
        if not (path / _WEIGHTS).is_file():
            raise BadData(f"a Hugging Face GPT-2 directory without {_WEIGHTS} (only "
                          "safetensors weights are read)", path=str(path / _WEIGHTS))
        return True

    @classmethod
    def load(cls, path: Path) -> GPT2Policy:
        """Build the policy, copy the weights in and install the tokenizer."""
        path = Path(path)
        if not (path / _WEIGHTS).is_file():
            raise BadData(f"no {_WEIGHTS} (only safetensors checkpoints are read)",
                          path=str(path))
        config = config_from_hf(_read_config(path), source=str(path / _CONFIG))
        tokenizer = _tokenizer_for(path, config)
        model = GPT2Policy(config, tokenizer)
        model.load_state_dict(_state_dict(path, model))
        return model


def save_hf(policy: GPT2Policy, path: str | Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` (and the BPE files, if the policy
    has a :class:`BPETokenizer`) in the layout ``GPT2LMHeadModel.from_pretrained`` reads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = policy.tokenizer
    hf = config_to_hf(policy.config, tok.bos_id, tok.eos_id, tok.pad_id)
    (path / _CONFIG).write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}
    save_file(tensors, str(path / _WEIGHTS), metadata={"format": "pt"})
    if isinstance(tok, BPETokenizer):
        tok.save_files(path)
