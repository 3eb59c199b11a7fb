"""The two towers: an image encoder and a text encoder (lesson 03).

Each maps its input to a vector of its own width; `model.TinyCLIP` then projects both into one
shared space. Sizes default to what trains in seconds on a laptop CPU on 32x32 ShapesWorld images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ImageEncoderConfig:
    kind: str = "cnn"                    # "cnn" (default, fastest on a CPU) or "vit" (a tiny ViT)
    resolution: int = 32                 # input images are (3, resolution, resolution)
    widths: tuple[int, ...] = (32, 64, 128)  # cnn: channels of each stride-2 stage
    convs_per_stage: int = 1             # cnn: convolutions per stage (the first has stride 2; the others 3x3)
    last_kernel: int = 2                 # cnn: kernel of the last stage's stride-2 convolution: 2 merges each 2x2
                                         # patch (as ConvNeXt downsamples), 4/9 of a 3x3's work; 3 overlaps
    patch_size: int = 4                  # vit: pixels per patch side
    vit_width: int = 96                  # vit: token width
    vit_layers: int = 2                  # vit: transformer blocks
    vit_heads: int = 4                   # vit: attention heads


@dataclass
class TextEncoderConfig:
    vocab_size: int = 64                 # set from the tokenizer: len(tokenizer)
    context_length: int = 16             # tokens per caption, padding included
    width: int = 64                      # token embedding width
    layers: int = 1                      # transformer blocks
    heads: int = 4                       # attention heads
    eot_id: int = 2                      # the end-of-text token we pool at (text.Tokenizer.eot_id)


class ConvImageEncoder(nn.Module):
    """A small CNN: stride-2 conv stages (3x3, the last 2x2), then global average pooling."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        if cfg.last_kernel not in (2, 3):
            raise ValueError(f"ImageEncoderConfig.last_kernel must be 2 or 3, got {cfg.last_kernel!r}")
        if not cfg.widths or cfg.convs_per_stage < 1:
            raise ValueError(f"a CNN needs at least one stage and one convolution per stage, got widths="
                             f"{cfg.widths!r}, convs_per_stage={cfg.convs_per_stage!r}")
        layers, c_in = [], 3
        for stage, c_out in enumerate(cfg.widths):
            for k in range(cfg.convs_per_stage):
                size = cfg.last_kernel if k == 0 and stage == len(cfg.widths) - 1 else 3
                conv = nn.Conv2d(c_in, c_out, size, stride=2 if k == 0 else 1, padding=1 if size == 3 else 0, bias=False)
                layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.width = c_in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels-last (NHWC) memory: the layout oneDNN's CPU convolutions run fastest in
        # (about 10-20 % here, benchmarks/NOTES.md); the numbers are the same either way.
        x = self.net(images.contiguous(memory_format=torch.channels_last))  # (B, C, H/2^k, W/2^k)
        return x.mean(dim=(2, 3))            # (B, C)


class ViTImageEncoder(nn.Module):
    """A tiny Vision Transformer: patches -> tokens -> transformer -> the class token."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        if cfg.resolution % cfg.patch_size:
            raise ValueError(f"resolution {cfg.resolution} is not a multiple of patch_size {cfg.patch_size}")
        n_patches = (cfg.resolution // cfg.patch_size) ** 2
        self.patchify = nn.Conv2d(3, cfg.vit_width, cfg.patch_size, stride=cfg.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.vit_width))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, cfg.vit_width) * 0.02)
        block = nn.TransformerEncoderLayer(cfg.vit_width, cfg.vit_heads, 4 * cfg.vit_width,
                                           dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, cfg.vit_layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(cfg.vit_width)
        self.width = cfg.vit_width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patchify(images).flatten(2).transpose(1, 2)   # (B, P, W)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1)  # (B, P+1, W)
        x = self.blocks(x + self.pos)                          # (B, P+1, W)
        return self.ln(x[:, 0])                                # (B, W)


def image_encoder(cfg: ImageEncoderConfig) -> nn.Module:
    """The image encoder a config asks for."""
    if cfg.kind == "cnn":
        return ConvImageEncoder(cfg)
    if cfg.kind == "vit":
        return ViTImageEncoder(cfg)
    raise ValueError(f"ImageEncoderConfig.kind must be 'cnn' or 'vit', got {cfg.kind!r}")


class TextEncoder(nn.Module):
    """Token + position embeddings, a causal transformer, and the feature at the <eot> token.

    The mask is causal, as in CLIP, so only the <eot> token and the padding after it have read the
    whole caption; <eot> is the one of them every caption has, in a place training sees: that is why
    CLIP pools there rather than averaging.
    """

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        block = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(block, cfg.layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(cfg.width)
        mask = torch.triu(torch.full((cfg.context_length, cfg.context_length), float("-inf")), 1)
        self.register_buffer("attn_mask", mask, persistent=False)  # (L, L), -inf above the diagonal
        self.width = cfg.width

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raise a TypeError / ValueError naming what is wrong with `tokens`; return where each row's <eot> is: (B,).

        Cheap enough for every training step: one pass over the ids and one sync, whatever B is.
        """
        cfg = self.cfg
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a tensor of token ids (B, {cfg.context_length}) as text.Tokenizer makes, "
                            f"got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer token ids (as text.Tokenizer makes), got {tokens.dtype}")
        if tokens.ndim != 2 or tokens.shape[1] != cfg.context_length:
            raise ValueError(f"tokens must have shape (B, {cfg.context_length}), got {tuple(tokens.shape)}")
        is_eot = tokens == cfg.eot_id                                  # (B, L)
        lo, hi = tokens.aminmax(dim=1)                                 # (B,) each: smallest and largest id
        bad = ~is_eot.any(dim=1) | (lo < 0) | (hi >= cfg.vocab_size)   # (B,)
        if bool(bad.any()):                                            # the one sync
            i = int(bad.nonzero()[0])
            if lo[i] < 0 or hi[i] >= cfg.vocab_size:
                v = int(lo[i]) if lo[i] < 0 else int(hi[i])
                raise ValueError(f"row {i} of tokens holds id {v}, outside the vocabulary 0..{cfg.vocab_size - 1} "
                                 f"(vocab_size = {cfg.vocab_size}): were these tokens made by another tokenizer "
                                 "than the one the model was built for?")
            raise ValueError(f"row {i} of tokens has no <eot> (id {cfg.eot_id}): the text encoder reads each caption's "
                             "feature at its <eot>; text.Tokenizer ends every caption with one")
        return is_eot.int().argmax(dim=1)                              # (B,) the first <eot> of each row

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        eot = self.check_tokens(tokens)                                # (B,) position of <eot>
        # Under the causal mask no position reads a later one, so the padding after the batch's
        # last <eot> cannot change any <eot> feature: skip it (the same result, ~30 % less work).
        n = int(eot.max()) + 1 if len(tokens) else 1
        tokens = tokens[:, :n]                                         # (B, n)
        x = self.token_embedding(tokens) + self.positional_embedding[:n]  # (B, n, W)
        x = self.transformer(x, mask=self.attn_mask[:n, :n], is_causal=True)  # (B, n, W)
        x = self.ln_final(x)
        return x[torch.arange(len(x), device=x.device), eot]           # (B, W)
