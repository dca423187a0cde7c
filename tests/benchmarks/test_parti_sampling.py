"""benchmarks/parti_sampling.py: its output line has its fields, and the shapes, options,
captions and parameter count that benchmarks/parti_transformers_peer.py promises are
gaf's (the peer file is read, not imported: the CI venv has no transformers); its cost
line counts a timed call's FLOPs. No timing is asserted."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

from cost_pass import CostPass, checked_cost_line, count_each_call  # tests/ on sys.path
from script_module import load_script

parti = load_script("benchmarks/parti_sampling.py")
PEER = Path(parti.__file__).with_name("parti_transformers_peer.py")


def peer_constants() -> dict[str, object]:
    """The peer's module-level constants (literal assignments, tuples unpacked)."""
    out: dict[str, object] = {}
    for node in ast.parse(PEER.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(target, ast.Name):
                out[target.id] = value
            elif isinstance(target, ast.Tuple):
                out.update({t.id: v for t, v in zip(target.elts, value, strict=True)})
    return out


@pytest.fixture(scope="module")
def model():
    return parti.build()


def test_a_timed_run_prints_its_fields(capsys, model):
    parti.main(["1", "--threads", "1", "--no-cost"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("gaf_parti ") and "\n" not in line
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert float(fields["image_tokens_per_s"]) > 0
    assert fields["runs"] == "1" and fields["threads"] == "1"
    assert int(fields["params"]) == sum(p.numel() for p in model.parameters())
    assert int(fields["image_tokens"]) == model.config.rows * model.config.cols
    assert int(fields["text_tokens"]) == model.config.text_length
    assert int(fields["batch"]) == parti.BATCH
    assert float(fields["guidance"]) == parti.GUIDANCE and int(fields["top_k"]) == parti.TOP_K
    assert 0 <= int(fields["codes_sum"]) <= parti.BATCH * 64 * (model.config.codebook - 1)


def test_the_peer_has_gafs_shapes_and_options(model):
    c, cfg = peer_constants(), model.config
    assert (c["BATCH"], c["GUIDANCE"], c["TOP_K"]) == (parti.BATCH, parti.GUIDANCE, parti.TOP_K)
    assert (c["TEXT"], c["IMAGE"], c["CODES"]) == (cfg.text_length, cfg.rows * cfg.cols,
                                                   cfg.codebook)
    assert (c["D_MODEL"], c["HEADS"], c["MLP_RATIO"]) == (cfg.d_model, cfg.n_head, cfg.mlp_ratio)
    assert (c["ENCODER_LAYERS"], c["DECODER_LAYERS"]) == (cfg.encoder_layers, cfg.n_layer)
    assert model.encoder.config.mlp_mult == c["MLP_RATIO"]  # the encoder's own MLP width
    assert c["TEXT_VOCAB"] == model.tokenizer.vocab_size
    assert c["BOS"] == cfg.codebook  # the decoder's vocabulary: the codes, then BOS


def test_the_peer_samples_the_same_captions(model):
    c = peer_constants()
    ids = model.tokenize(parti.CAPTIONS)
    pad = model.tokenizer.pad_id
    assert c["CAPTION_IDS"] == [[t for t in row if t != pad] for row in ids.tolist()]
    flat = [t for row in c["CAPTION_IDS"] for t in row]
    assert c["TEXT_PAD"] not in flat and max(flat) < c["TEXT_VOCAB"]


def test_the_parameter_count_the_peer_explains_is_gafs(model):
    doc = ast.get_docstring(ast.parse(PEER.read_text()))
    promised = re.search(r"Parameters: gaf ([\d,]+), this model ([\d,]+)", doc)
    gaf_n, peer_n = (int(g.replace(",", "")) for g in promised.groups())
    assert gaf_n == sum(p.numel() for p in model.parameters())
    gap = re.search(r"The gap of\s+([\d,]+)", doc)
    assert int(gap.group(1).replace(",", "")) == peer_n - gaf_n


@pytest.mark.benchmark  # a long check of the script's cost line: pytest -m benchmark
def test_the_cost_line_counts_a_timed_call(monkeypatch, capsys):
    """At 2 captions: the cost pass's unit has the FLOPs of the timed call."""
    cost = CostPass(monkeypatch, parti)  # records the cost pass (counts nothing itself)
    # the model's grad off first: FlopCounterMode's module hooks need it
    flops = count_each_call(monkeypatch, parti, "sample_codes", cost,
                            prepare=lambda model, *rest: model.requires_grad_(False))
    monkeypatch.setattr(parti, "BATCH", 2)
    parti.main(["1", "--threads", "1"])
    result, cost_line = capsys.readouterr().out.strip().splitlines()
    assert result.startswith("gaf_parti ")
    checked_cost_line(cost_line, "gaf_parti_cost", "call", parti.step_cost.CATEGORIES)
    (seen,) = cost.calls
    assert len(flops) == 2 and seen["units"] == 1 and seen["inference"]  # warm-up, timed
    assert math.isclose(cost.counted_flops(), flops[1], rel_tol=1e-9)
