"""Peer of ``benchmarks/image_to_image_throughput.py``: Palette-style conditional pixel
diffusion (the ``image-to-image`` objective's training step and sampling) with diffusers'
``UNet2DConditionModel``, ``DDPMScheduler``, ``EMAModel`` and cosine schedule, CPU.

    python benchmarks/image_to_image_throughput.py [--task …] [--batch …] … \\
        --write-data /tmp/i2i.pt                                   # gaf venv, once
    /tmp/gaf-peers/bin/python benchmarks/image_to_image_diffusers_peer.py --data /tmp/i2i.pt
        [--threads 2] [--tune-malloc] [--fused-adamw] [--foreach-ema]

Imports only torch and diffusers (run it in the peer venv; it must not import gaf).
diffusers has no Palette / SR3 pipeline and no image-to-image *training* code for a
pixel UNet with a concatenated condition, so both halves are written here in plain
torch, the way diffusers' example training scripts and pipelines are written: the
training step as ``examples/text_to_image/train_text_to_image.py`` (without
accelerate: one process, fp32), the sampling as a hand loop over ``scheduler.step``.

The data: everything comes from the gaf script's ``--write-data`` file, so both sides
see the same work: the task and its settings, the batch, the number of steps (warm-up
included), every training batch (images, timesteps, noise, dropped captions, masks,
the captions' rows of the text states), the text states (24 tokens x 64 per distinct
caption; a frozen stand-in for the caption encoder on both sides, zeros as the null
caption), and the sampling call's sources, masks and captions. The file's record of
gaf's UNet, scheduler and training options is checked against this script's constants
(``UNET``, ``SCHEDULE``, ``TRAIN``) before anything runs.

The model (``UNET``): gaf's ``unet`` has diffusers' module layout, so the objective's
default ``I2I_UNET`` maps onto ``UNet2DConditionModel`` argument by argument:
``channels (32, 48, 64)`` -> ``block_out_channels``, one ResBlock per level ->
``layers_per_block=1`` (diffusers' up blocks get one more, as gaf's up levels), the
spatial transformer at level 2 -> ``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D``
there and ``DownBlock2D`` / ``UpBlock2D`` elsewhere, ``mid_attention`` ->
``UNetMidBlock2DCrossAttn`` (the default mid block), ``heads = 4`` ->
``attention_head_dim=4`` (in this class the number of heads), ``context_dim = 64`` ->
``cross_attention_dim=64``, ``norm_groups = 16`` -> ``norm_num_groups=16``, the time
embedding ``4 x 32`` wide (diffusers' default), and ``concat_channels = 4`` ->
``in_channels=7, out_channels=3``: the condition ``[c ; m]`` concatenated after the
noisy image. Both sides have 1,248,835 parameters, block for block the same (time
embedding 20,736; conv_in 2,048; down 263,088; mid 256,192; up 705,840; the output
norm and conv 931). With a gaf UNet's weights mapped in (q|k|v and k|v split, the
1x1 ``proj_in`` / ``proj_out`` reshaped from gaf's Linear layers) the two compute the
same function: outputs and gradients agree to float32 rounding (relative differences
of order 1e-6 in training mode, with per-row timesteps, and at inference with gaf's
cached context; a one-off check, not kept as a test: gaf and diffusers do not share a
venv).

Why not ``UNet2DModel`` (the obvious class for an unconditional-style pixel UNet): it
has no cross-attention, so it cannot take the caption that gaf's model attends to, and
its attention blocks (``AttnDownBlock2D``: GroupNorm and one attention, no
transformer MLP, no ``proj_in`` / ``proj_out``) are not gaf's spatial transformer; at
the same widths it holds 950,083 parameters, not 1,248,835. The conditional class
with ``in_channels=7`` is the like-for-like model.

The scheduler (``SCHEDULE``): ``DDPMScheduler`` configured as gaf's ``ddpm`` with the
objective's ``PIXEL_SCHEDULE``: 1000 training steps, ``scaled_linear`` betas 0.00085 to
0.012, v-prediction, ``clip_sample`` on (range 1), ``fixed_small`` variance, ``leading``
spacing, no offset (gaf's scheduler config uses diffusers' names and defaults). One
instance serves training (``add_noise``, ``get_velocity``) and sampling.

What is timed (the gaf script's docstring has its side):

* **training**, every step (the first ``warmup`` untimed), batch ``batch``:
  ``zero_grad``; ``x_t = add_noise(x, ε, t)`` with the known pixels pasted clean
  (``x_t·m + x·(1 − m)``, Palette); the states' rows gathered and the dropped ones set
  to the null; the task's condition from the clean images (inpainting / uncropping
  ``[x·(1 − m) ; m]``; super-resolution: area-downsampled to ``low_resolution``,
  upsampled back (``upsample``, ``align_corners=False``), clamped, ``[c ; 1]``;
  colourisation: the BT.601 luma quantised to ``grey_levels`` levels on every channel,
  ``[c ; 1]``); the UNet forward on ``[x_t ; c ; m]`` with ``(B,)`` timesteps and the
  states as ``encoder_hidden_states``; the v target (``get_velocity``); the masked MSE
  (per image ``Σ m (out − v)² / (C Σ m)``, then the mean); ``backward``;
  ``clip_grad_norm_`` at 1.0; ``torch.optim.AdamW`` (lr 1e-3, betas (0.9, 0.999),
  weight decay 0: gaf's ``TrainConfig`` defaults, not torch's 0.01); the cosine schedule
  with 100 warm-up steps over 2000 (``diffusers.optimization.get_scheduler``); the EMA
  (``diffusers.training_utils.EMAModel``, decay 0.999 with its default warm-up
  ``(1 + n) / (10 + n)``); ``loss.item()`` (the example script logs it every step);
* **sampling**: one call on the file's sources, after one untimed call of ``warmup``
  steps: ``set_timesteps``; initial noise, image ``i`` from a generator seeded ``i``
  (``randn_tensor`` with the list of generators, as gaf draws it); the states'
  rows gathered (the caption encoder's call); the condition from the sources (as
  above, from the low-resolution or grey source or the picture with its hole); for the
  mask tasks the known pixels pasted before the first step and after every step; per
  step one UNet call of ``sample_batch`` rows (guidance 1: no classifier-free guidance)
  and ``DDPMScheduler.step`` with the generators; the result clamped to [-1, 1] (and
  pasted), under ``torch.inference_mode``, ``unet.eval()``.

Every remaining difference (what gaf does and this side does not, as diffusers' code
is written):

* gaf's sampling projects the caption states to the cross-attention keys and values
  once per call (``UNet.cache_context``) and embeds the one shared timestep once per
  step for the batch; diffusers does both in every call, per row;
* gaf's optimiser is torch's fused AdamW kernel (``gaf.train.make_optimizer``), this
  side's the default per-tensor loop; ``--fused-adamw`` passes ``fused=True`` (the same
  update) for the ablation;
* gaf's EMA update is one ``torch._foreach_lerp_``; ``EMAModel`` loops over the
  parameters in Python unless ``--foreach-ema`` (its ``foreach=True``);
* gaf's trainer checks the loss and the gradient norm for finiteness and turns the
  metrics into floats at every step (a few scalar syncs, free on the CPU); the lr and
  EMA warm-ups count steps one apart from gaf's (the same cost);
* gaf's pipeline checks its inputs (finite pictures, exact 0/1 masks) inside the call;
* weights: gaf zero-initialises ``conv_out`` (and every ResBlock's last conv and each
  transformer's ``proj_out``); diffusers does not. The work is the same; the losses
  are not comparable after the first step, and the samples not at all.

Checks: the line carries ``check_loss``, ``check_input``, ``check_concat``,
``check_context`` (first training batch) and ``check_sample_concat`` (the sampling
call's condition), computed here with this script's own formulas; the gaf script prints
the same from gaf's functions on the same data, and the two must agree to float
rounding (they hold the noise schedule, the v target, the paste, the masked mean, the
null swap and the task's condition to gaf's).

Prints one line ``diffusers_i2i train_img_per_s=… sample_img_per_s=… params=… …``
in the gaf script's format (with the diffusers version and this script's switches).
``--tune-malloc`` applies gaf's glibc thresholds to this process
(``benchmarks/tuned_malloc.py``'s ``tune``, the same two ``mallopt`` calls).

Protocol: alternate with the gaf script (the same flags as the run that wrote the data),
at least 3 runs each, on an otherwise idle machine with the load average beside each
run, and report the ratio of the medians (the gaf script's docstring has the loop). No
timing is asserted by any test.
"""

import argparse
import resource
import sys
import time

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor

import tuned_malloc  # benchmarks/tuned_malloc.py, beside this script (no gaf import)

FORMAT = 1
#: gaf's I2I_UNET (with the 64-wide text states) as UNet2DConditionModel arguments
UNET = {"sample_size": 32, "in_channels": 7, "out_channels": 3,
        "block_out_channels": (32, 48, 64), "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 64, "attention_head_dim": 4, "norm_num_groups": 16}
#: gaf's ddpm with PIXEL_SCHEDULE and v-prediction
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "v_prediction",
            "clip_sample": True, "clip_sample_range": 1.0, "variance_type": "fixed_small",
            "timestep_spacing": "leading", "steps_offset": 0}
#: the image-to-image objective's train_defaults and EMA decay
TRAIN = {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0, "max_grad_norm": 1.0,
         "warmup_steps": 100, "steps": 2000, "schedule": "cosine", "ema_decay": 0.999}
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
MASK_TASKS = ("inpainting", "uncropping")


def check_file(data):
    """Exit unless the file's record of gaf's side is what this script builds."""
    if data.get("format") != FORMAT:
        sys.exit(f"{data.get('format')!r}: not a data file of format {FORMAT}")
    nm, sc, tr = data["unet"], data["scheduler"], data["train"]
    levels = len(nm["channels"])
    want = {"block_out_channels": tuple(nm["channels"]),
            "in_channels": nm["in_channels"] + nm["concat_channels"],
            "out_channels": nm["out_channels"] or nm["in_channels"],
            "sample_size": data["shape"][-1],
            "layers_per_block": nm["layers_per_level"] if not nm["level_layers"] else None,
            "down_block_types": tuple("CrossAttnDownBlock2D" if i in nm["attention_levels"]
                                      else "DownBlock2D" for i in range(levels)),
            "up_block_types": tuple("CrossAttnUpBlock2D" if i in nm["attention_levels"]
                                    else "UpBlock2D" for i in reversed(range(levels))),
            "cross_attention_dim": nm["context_dim"], "attention_head_dim": nm["heads"],
            "norm_num_groups": nm["norm_groups"]}
    wrong = [k for k, v in want.items() if UNET[k] != v]
    plain = (nm["mid_attention"] and nm["transformer_depth"] == 1 and nm["head_dim"] == 0
             and nm["time_embed_mult"] == 4 and nm["skip_scale"] == 1.0
             and not (nm["cond_dim"] or nm["num_classes"] or nm["pooled_context"]
                      or nm["noise_level"]) and nm["prediction_type"] == "v_prediction"
             and nm["position_embedding"] == "none")
    wrong += [k for k in SCHEDULE if sc[k] != SCHEDULE[k]]
    wrong += [k for k in TRAIN if (tuple(tr[k]) if k == "betas" else tr[k]) != TRAIN[k]]
    if wrong or not plain:
        sys.exit(f"the data file's gaf model or options differ from this script's: "
                 f"{wrong or 'unet options'}")


def build():
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET), DDPMScheduler(**SCHEDULE)


def grey(images, levels):
    """The BT.601 luma of ``images`` in [-1, 1], quantised to ``levels`` (0 = not)."""
    if images.shape[1] == 3:
        w = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
        images = (images * w).sum(1, keepdim=True)
    if levels == 0:
        return images
    k = torch.floor(((images + 1) / 2).clamp(0, 1) * levels).clamp(max=levels - 1)
    return k / (levels - 1) * 2 - 1


def degrade(data, images):
    """The task's source of clean images."""
    if data["task"] == "super-resolution":
        size = data["low_resolution"]
        return F.interpolate(images, size=(size, size), mode="area")
    if data["task"] == "colourisation":
        return grey(images, data["grey_levels"])
    return images


def condition(data, source, masks):
    """``[c ; m]`` of the task's ``source`` (``masks``: the mask tasks only)."""
    c, h, w = data["shape"]
    n = source.shape[0]
    if data["task"] in MASK_TASKS:
        return torch.cat([source * (1 - masks), masks], 1)
    ones = torch.ones(n, 1, h, w)
    if data["task"] == "super-resolution":
        mode = data["upsample"]
        extra = {} if mode == "nearest" else {"align_corners": False}
        image = F.interpolate(source, size=(h, w), mode=mode, **extra).clamp(-1, 1)
    else:
        image = grey(source, data["grey_levels"]).expand(n, c, h, w)
    return torch.cat([image, ones], 1)


def paste(x, known, masks):
    return x * masks + known * (1 - masks)


def masked_mse(out, target, masks):
    err = F.mse_loss(out.float(), target.float(), reduction="none") * masks
    return err.flatten(1).sum(1) / (masks.flatten(1).sum(1) * out.shape[1])


def batches_of(data):
    """The training batches as dicts of tensors, in order (the data loader's work)."""
    b = data["batches"]
    return [{k: b[k][i] for k in ("z0", "t", "noise", "drop", "masks", "rows")}
            for i in range(len(b["t"]))]


def checks(data, sched, batch, states, sample_source, sample_masks):
    x0, t, noise, drop, m = (batch[k] for k in ("z0", "t", "noise", "drop", "masks"))
    target = sched.get_velocity(x0, noise, t)
    context = torch.where(drop[:, None, None], torch.zeros(()), states[batch["rows"]])
    return {"check_loss": float(masked_mse(torch.zeros_like(target), target, m).mean()),
            "check_input": float(paste(sched.add_noise(x0, noise, t), x0, m).abs().mean()),
            "check_concat": float(condition(data, degrade(data, x0), m).abs().mean()),
            "check_context": float(context.abs().mean()),
            "check_sample_concat": float(condition(data, sample_source,
                                                   sample_masks).abs().mean())}


def train(data, unet, sched, states, batches, args):
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=TRAIN["lr"], betas=TRAIN["betas"],
                                  weight_decay=TRAIN["weight_decay"], eps=1e-8,
                                  fused=True if args.fused_adamw else None)
    lr_scheduler = get_scheduler(TRAIN["schedule"], optimizer,
                                 num_warmup_steps=TRAIN["warmup_steps"],
                                 num_training_steps=TRAIN["steps"])
    ema = EMAModel(unet.parameters(), decay=TRAIN["ema_decay"], foreach=args.foreach_ema)
    null = torch.zeros(data["batch"], *states.shape[1:])
    start, last = time.perf_counter(), float("nan")
    for step, batch in enumerate(batches, 1):
        if step == data["warmup"] + 1:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        x0, t, noise, drop, m = (batch[k] for k in ("z0", "t", "noise", "drop", "masks"))
        x_t = paste(sched.add_noise(x0, noise, t), x0, m)
        context = torch.where(drop[:, None, None], null, states[batch["rows"]])
        concat = condition(data, degrade(data, x0), m)
        out = unet(torch.cat([x_t, concat], 1), t, encoder_hidden_states=context).sample
        loss = masked_mse(out, sched.get_velocity(x0, noise, t), m).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), TRAIN["max_grad_norm"])
        optimizer.step()
        lr_scheduler.step()
        ema.step(unet.parameters())
        last = loss.item()
    return time.perf_counter() - start, last


@torch.inference_mode()
def sample(data, unet, sched, states, source, masks, rows, steps):
    n = source.shape[0]
    sched.set_timesteps(steps)
    generators = [torch.Generator().manual_seed(i) for i in range(n)]
    x = randn_tensor((n, *data["shape"]), generator=generators) * sched.init_noise_sigma
    context = states[rows]
    concat = condition(data, source, masks)
    known = source if data["task"] in MASK_TASKS else None
    if known is not None:
        x = paste(x, known, masks)
    for t in sched.timesteps:
        x_in = torch.cat([sched.scale_model_input(x, t), concat], 1)
        out = unet(x_in, t, encoder_hidden_states=context).sample
        x = sched.step(out, t, x, generator=generators).prev_sample
        if known is not None:
            x = paste(x, known, masks)
    x = x.clamp(-1, 1)
    return paste(x, known, masks) if known is not None else x


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"maxrss_mb": round(r.ru_maxrss / 1024), "minflt": r.ru_minflt,
            "sys_s": round(r.ru_stime, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the gaf script's --write-data file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tune-malloc", action="store_true",
                   help="apply gaf.tune_malloc's glibc thresholds to this process")
    p.add_argument("--fused-adamw", action="store_true",
                   help="torch's fused AdamW kernel, as gaf's make_optimizer")
    p.add_argument("--foreach-ema", action="store_true", help="EMAModel(foreach=True)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune_malloc:
        tuned_malloc.tune()
    data = torch.load(args.data, weights_only=True)
    check_file(data)
    unet, sched = build()
    states = data["states"]
    batches = batches_of(data)
    smp = data["sample"]
    masks = smp["masks"] if data["task"] in MASK_TASKS else None
    found = checks(data, sched, batches[0], states, smp["source"], masks)
    train_s, last_loss = train(data, unet, sched, states, batches, args)
    unet.eval()
    run = (data, unet, sched, states, smp["source"], masks, smp["rows"])
    if data["warmup"]:
        sample(*run, data["warmup"])
    start = time.perf_counter()
    images = sample(*run, data["sample_steps"])
    sample_s = time.perf_counter() - start
    assert images.shape == (data["sample_batch"], *data["shape"])
    n_params = sum(q.numel() for q in unet.parameters())
    if n_params != data["params"]:
        print(f"warning: {n_params} parameters here, {data['params']} in gaf's model",
              file=sys.stderr)
    result = {"train_img_per_s": data["batch"] * data["train_steps"] / train_s,
              "sample_img_per_s": data["sample_batch"] / sample_s, "params": n_params,
              "task": data["task"], "batch": data["batch"],
              "train_steps": data["train_steps"], "warmup": data["warmup"],
              "sample_batch": data["sample_batch"], "sample_steps": data["sample_steps"],
              "train_s": train_s, "sample_s": sample_s, "last_loss": last_loss, **found,
              "sample_abs": float(images.abs().mean()), "threads": torch.get_num_threads(),
              "tune_malloc": args.tune_malloc, "fused_adamw": args.fused_adamw,
              "foreach_ema": args.foreach_ema, "diffusers": diffusers.__version__,
              **usage()}
    print("diffusers_i2i " + " ".join(f"{k}={_fmt(v)}" for k, v in result.items()))
    return result


def _fmt(v):
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.7g}"
    return str(v)


if __name__ == "__main__":
    main()
