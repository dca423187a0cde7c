"""HF GPT-2 directories: load transformers checkpoints, write ones transformers can read."""

from __future__ import annotations

import json
import os

import pytest

import gaf
import torch
from safetensors.torch import load_file, save_file

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")

from gaf.errors import BadConfig, BadData  # noqa: E402
from gaf.plugins.lm.gpt2 import GPT2Config, GPT2Policy  # noqa: E402
from gaf.plugins.lm.hf_gpt2 import HFGPT2Loader, save_hf  # noqa: E402
from gaf.plugins.lm.samplers import Greedy  # noqa: E402
from gaf.plugins.lm.tokenizer import BPETokenizer, ByteTokenizer, bytes_to_unicode  # noqa: E402

transformers.logging.set_verbosity_error()


def _hf_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64,
                                  vocab_size=259, bos_token_id=256, eos_token_id=257, **kw)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    model = _hf_model()
    model.save_pretrained(d, safe_serialization=True)
    return d, model


def _ids(seed=1, B=3, T=20, V=259):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_accepts(hf_dir, tmp_path):
    d, _ = hf_dir
    assert HFGPT2Loader.kind == "policy"
    assert HFGPT2Loader.accepts(d)
    assert not HFGPT2Loader.accepts(tmp_path)  # empty directory
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert not HFGPT2Loader.accepts(tmp_path)
    assert not HFGPT2Loader.accepts(d / "config.json")  # a file, not a directory
    # a damaged GPT-2 directory is diagnosed, not passed over in silence
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BadData, match="config.json: not valid JSON"):
        HFGPT2Loader.accepts(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(BadData, match="model.safetensors: a Hugging Face GPT-2 directory "
                                      "without model.safetensors"):
        HFGPT2Loader.accepts(tmp_path)


def test_load_transformers_checkpoint_same_logits(hf_dir):
    d, hf = hf_dir
    policy = HFGPT2Loader.load(d)
    assert isinstance(policy, GPT2Policy)
    assert isinstance(policy.tokenizer, ByteTokenizer)
    cfg = policy.config
    assert (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.n_positions, cfg.vocab_size) == (
        32, 2, 2, 64, 259)
    policy.eval()
    ids = _ids()
    with torch.no_grad():
        want = hf(ids).logits
        got = policy.logits(policy(ids))
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_options_a_loader_does_not_take_are_a_bad_config_naming_them(hf_dir):
    d, _ = hf_dir
    with pytest.raises(BadConfig, match=r"with options \['dropout'\]: loader 'hf-gpt2' "
                                        r"reads it and its load\(\) takes no options"):
        gaf.load("policy", d, dropout=0.1)


def test_loaded_model_generates_like_transformers_greedy(hf_dir):
    d, hf = hf_dir
    policy = HFGPT2Loader.load(d)
    ids = [256, *b"hello"]
    ours = policy.generate_ids([ids], sampler=Greedy(), max_new_tokens=8)[0]
    seq = torch.tensor([ids])
    ref = []
    with torch.no_grad():
        for _ in range(len(ours)):
            logits = hf(seq).logits[0, -1]
            logits[policy.banned_ids()] = float("-inf")
            tok = int(logits.argmax())
            ref.append(tok)
            seq = torch.cat([seq, torch.tensor([[tok]])], 1)
    assert ours == ref and len(ours) > 0


def test_save_hf_opens_in_transformers_with_same_logits(tmp_path):
    torch.manual_seed(3)
    policy = GPT2Policy(GPT2Config(d_model=32, n_layer=2, n_head=2, n_positions=64))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    policy.eval()
    save_hf(policy, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = _ids(2)
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, policy.logits(policy(ids)), atol=1e-5, rtol=0)
    # and back again: the round trip is exact
    again = HFGPT2Loader.load(tmp_path / "out")
    for k, v in policy.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_keys_without_prefix_and_ignored_buffers(hf_dir, tmp_path):
    d, hf = hf_dir
    sd = load_file(str(d / "model.safetensors"))
    bare = {k.removeprefix("transformer."): v.clone() for k, v in sd.items()}
    bare["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    bare["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    bare["lm_head.weight"] = bare["wte.weight"].clone()
    save_file(bare, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    policy = HFGPT2Loader.load(tmp_path).eval()
    ids = _ids(4)
    with torch.no_grad():
        assert torch.allclose(policy.logits(policy(ids)), hf(ids).logits, atol=1e-5, rtol=0)


def _copy_with(d, tmp_path, *, config=None, tensors=None):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(config or {})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = load_file(str(d / "model.safetensors"))
    sd.update(tensors or {})
    sd = {k: v for k, v in sd.items() if v is not None}
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize("change, field", [
    ({"activation_function": "relu"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"add_cross_attention": True}, "add_cross_attention"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings"),
    ({"n_inner": 50}, "n_inner"),
    ({"n_head": 3}, "n_head"),
])
def test_unsupported_config_is_rejected_naming_file_and_field(hf_dir, tmp_path, change, field):
    d, _ = hf_dir
    path = _copy_with(d, tmp_path, config=change)
    with pytest.raises(BadData) as err:
        HFGPT2Loader.load(path)
    assert "config.json" in str(err.value) and field in str(err.value)


def test_untied_lm_head_rejected(hf_dir, tmp_path):
    d, _ = hf_dir
    wte = load_file(str(d / "model.safetensors"))["transformer.wte.weight"]
    path = _copy_with(d, tmp_path, tensors={"lm_head.weight": wte + 1})
    with pytest.raises(BadData, match="lm_head.weight"):
        HFGPT2Loader.load(path)


def test_missing_and_misshapen_tensors_rejected(hf_dir, tmp_path):
    d, _ = hf_dir
    path = _copy_with(d, tmp_path, tensors={"transformer.ln_f.bias": None})
    with pytest.raises(BadData, match="missing"):
        HFGPT2Loader.load(path)
    path = _copy_with(d, tmp_path, tensors={"transformer.ln_f.bias": torch.zeros(7)})
    with pytest.raises(BadData, match="shape"):
        HFGPT2Loader.load(path)
    path = _copy_with(d, tmp_path, tensors={"transformer.extra": torch.zeros(1)})
    with pytest.raises(BadData, match="unexpected"):
        HFGPT2Loader.load(path)


def test_big_vocab_needs_tokenizer_files(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32,
                                  vocab_size=300)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(BadData, match="vocab.json and merges.txt"):
        HFGPT2Loader.load(tmp_path)
    # with GPT-2 tokenizer files the model loads and uses BPE
    be = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(be.values())}
    vocab["Ġt"] = 256
    vocab["<|endoftext|>"] = 257
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\n", encoding="utf-8")
    policy = HFGPT2Loader.load(tmp_path)
    assert isinstance(policy.tokenizer, BPETokenizer)
    assert policy.tokenizer.eos_id == 257
    batch = policy.prepare(["a"], [" t"])
    assert batch.input_ids.tolist() == [[257, 97, 256, 257]]
    out = policy.generate(["a t"], sampler=Greedy(), max_new_tokens=3)
    assert isinstance(out[0], str)
    # save_hf writes the tokenizer files too
    save_hf(policy, tmp_path / "copy")
    assert isinstance(HFGPT2Loader.load(tmp_path / "copy").tokenizer, BPETokenizer)
    # and so does gaf's own format (gaf.save / gaf.load keep the tokenizer)
    gaf.save(gaf.load("policy", tmp_path), tmp_path / "gaf-copy")
    again = gaf.load("policy", tmp_path / "gaf-copy")
    assert isinstance(again.tokenizer, BPETokenizer)
    assert again.prepare(["a"], [" t"]).input_ids.tolist() == [[257, 97, 256, 257]]
    again.eval(), policy.eval()  # HF's default dropout is 0.1
    torch.testing.assert_close(again.logits(again(batch.input_ids)),
                               policy.logits(policy(batch.input_ids)))


def test_not_safetensors_rejected(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 259,
                                                "n_layer": 1, "n_embd": 16, "n_head": 2}))
    (d / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BadData, match="no model.safetensors"):
        HFGPT2Loader.load(d)
    (d / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BadData, match="cannot read safetensors"):
        HFGPT2Loader.load(d)


def test_sentiment_bpe_policy_exports_a_tokenizer_transformers_reads(tmp_path):
    """gpt2-tiny's learned BPE is written in GPT-2's file format: transformers' own
    GPT-2 tokenizer reads it and encodes exactly as gaf does, and it loads back."""
    policy = gaf.create("policy", "gpt2-tiny", n_layer=1, d_model=32, n_head=2)
    save_hf(policy, tmp_path / "out")
    theirs = transformers.GPT2Tokenizer(str(tmp_path / "out" / "vocab.json"),
                                        str(tmp_path / "out" / "merges.txt"))
    text = "I watched Morning Star last night and the plot was superb, truly!"
    assert theirs.encode(text) == policy.tokenizer.encode(text)
    again = HFGPT2Loader.load(tmp_path / "out")
    assert isinstance(again.tokenizer, BPETokenizer)
    assert again.tokenizer.merges == policy.tokenizer.merges
    assert again.config.vocab_size == 1122
