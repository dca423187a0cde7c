"""gaf.plugins.clip.towers: shapes and parameter counts of both image towers at 32 and 28
pixels, the text tower's pooling over real tokens only, and the options' checks."""

from __future__ import annotations

import pytest
import torch

from gaf.errors import BadConfig
from gaf.plugins.clip.loss import INIT_LOG_SCALE
from gaf.plugins.clip.towers import CLIPConfig, CLIPModel


@pytest.mark.parametrize("tower", ["cnn", "vit"])
@pytest.mark.parametrize("resolution,channels", [(32, 3), (28, 1)])
def test_both_towers_embed_images_and_captions(tower, resolution, channels):
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(image_tower=tower, resolution=resolution,
                                 in_channels=channels, embed_dim=16))
    images = torch.rand(3, channels, resolution, resolution) * 2 - 1
    assert model.encode_image(images).shape == (3, 16)
    states, feats = model.text(["a red circle", "a large blue square in the top left", "x"])
    assert states.shape == (3, 24, 64) and feats.shape == (3, 16)
    img, txt, s = model(images, *model.tokenize(["a", "b", "c"]))
    assert img.shape == txt.shape == (3, 16) and s.item() == pytest.approx(INIT_LOG_SCALE)
    sim = model.similarity(images, ["a red circle", "a blue square"])
    assert sim.shape == (3, 2) and bool((sim.abs() <= 1 + 1e-6).all())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 50_000 < trainable < 1_000_000  # a tiny model, trained in minutes on 2 cores


def test_text_features_ignore_the_pad_states():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(embed_dim=8))
    ids, mask = model.tokenize(["a red circle"])
    states, feats = model.text_ids(ids, mask)
    real = mask[0]
    want = model.text_proj(states[0, real].mean(dim=0))
    assert torch.allclose(feats[0], want, atol=1e-6)
    assert int(real.sum()) == 3  # " a", " red", " circle": one shapes-bpe token each


def test_options_are_checked():
    with pytest.raises(BadConfig, match="patch_size"):
        CLIPConfig(image_tower="vit", resolution=28, patch_size=5)
    with pytest.raises(BadConfig, match="image_heads"):
        CLIPConfig(image_width=6, image_heads=5)


class _MHABlock(torch.nn.Module):
    """The ViT block as it was written with ``nn.MultiheadAttention`` (the reference)."""

    def __init__(self, width, heads):
        super().__init__()
        nn = torch.nn
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _mha_vit(cfg):
    """A ViT of ``_MHABlock``s, built in ViTImageTower's order, and its forward."""
    nn = torch.nn
    w, n = cfg.image_width, (cfg.resolution // cfg.patch_size) ** 2
    m = nn.Module()
    m.patch = nn.Conv2d(cfg.in_channels, w, cfg.patch_size, stride=cfg.patch_size)
    m.cls = nn.Parameter(torch.randn(1, 1, w) / w ** 0.5)
    m.position = nn.Parameter(torch.randn(n + 1, w) / w ** 0.5)
    m.blocks = nn.Sequential(*[_MHABlock(w, cfg.image_heads) for _ in range(cfg.image_layers)])
    m.norm = nn.LayerNorm(w)
    m.proj = nn.Linear(w, cfg.embed_dim)

    def forward(images):
        tokens = m.patch(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([m.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        return m.proj(m.norm(m.blocks(tokens + m.position)[:, 0]))
    return m, forward


_RENAMED = {"in_proj_weight": "qkv.weight", "in_proj_bias": "qkv.bias",
            "out_proj.weight": "proj.weight", "out_proj.bias": "proj.bias"}


def _new_name(name):
    for old, new in _RENAMED.items():
        name = name.replace(f"attn.{old}", f"attn.{new}")
    return name


def test_vit_is_the_multihead_attention_vit_it_replaced():
    """Fused qkv + SDPA and the class-token-only last block: the same initial weights
    for a seed, old state dicts load, and the same features and gradients."""
    from gaf.plugins.clip.towers import ViTImageTower

    cfg = CLIPConfig(image_tower="vit", image_width=32, image_layers=3, image_heads=4,
                     embed_dim=16)
    torch.manual_seed(3)
    ref, ref_forward = _mha_vit(cfg)
    after_ref = torch.rand(2)
    torch.manual_seed(3)
    vit = ViTImageTower(cfg)
    assert torch.equal(torch.rand(2), after_ref)  # it drew the same random numbers
    new_state = vit.state_dict()
    for name, value in ref.state_dict().items():
        assert torch.equal(new_state[_new_name(name)], value), name

    loaded = ViTImageTower(cfg)
    loaded.load_state_dict(ref.state_dict())  # a checkpoint saved before the change
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    want, got = ref_forward(images), loaded(images)
    assert torch.allclose(got, want, atol=1e-5)
    want.square().sum().backward()
    got.square().sum().backward()
    grads = dict(loaded.named_parameters())
    for name, p in ref.named_parameters():
        assert torch.allclose(grads[_new_name(name)].grad, p.grad, atol=1e-5, rtol=1e-4), name


def test_class_token_only_block_is_the_first_row_of_the_full_block():
    from gaf.plugins.clip.towers import _Block

    torch.manual_seed(0)
    block = _Block(16, 2)
    x = torch.randn(3, 10, 16)
    assert torch.allclose(block(x, cls_only=True), block(x)[:, :1], atol=1e-6)


@pytest.mark.parametrize("tower", ["cnn", "vit"])
def test_weight_decay_spares_gains_biases_and_the_temperature(tower):
    # the clip objective's groups cover every trainable parameter once (the trainer's
    # check), and one AdamW step with zero gradients shrinks exactly the decayed ones
    from gaf.plugins.clip.objective import CLIPObjective
    from gaf.train import TrainConfig, make_optimizer, resolve_param_groups

    torch.manual_seed(0)
    objective = CLIPObjective()
    objective.model = model = CLIPModel(CLIPConfig(image_tower=tower, embed_dim=8))
    cfg = TrainConfig(lr=0.1, weight_decay=0.5)
    groups = resolve_param_groups(cfg, objective.param_groups(), objective.modules())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    make_optimizer(cfg, groups).step()
    for name, p in model.named_parameters():
        shrunk = torch.allclose(p.detach(), before[name] * (1 - 0.1 * 0.5))
        if not p.requires_grad or p.dim() < 2:
            assert torch.equal(p.detach(), before[name]), name
        else:
            assert shrunk, name
    decayed, spared = ({id(p) for p in g["params"]} for g in groups)
    assert {id(model.log_scale), id(model.text_encoder.norm.bias)} <= spared
    assert id(model.text_encoder.token_embedding.weight) in decayed
