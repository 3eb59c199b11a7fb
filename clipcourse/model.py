"""TinyCLIP: two encoders, two projections into one space, and a temperature (lessons 03 and 06).

Names follow CLIP and open_clip: `encode_image`, `encode_text`, `logit_scale`. The forward pass
returns `(image_features, text_features, temperature)`, with both feature sets L2-normalised, so
`loss.clip_loss(*model(images, tokens))` is the whole training objective.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import ImageEncoderConfig, TextEncoderConfig, TextEncoder, image_encoder
from .temperature import INIT_TEMPERATURE, FixedTemperature, LearnableTemperature


@dataclass
class CLIPConfig:
    embed_dim: int = 64                  # width of the shared image-text space
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    temperature: float = INIT_TEMPERATURE  # the starting τ (CLIP: 0.07)
    learnable_temperature: bool = True   # learn log(1/τ) (CLIP) or keep τ fixed
    logit_bias: float | None = None      # SigLIP's learnable bias b, its start (SigLIP: -10); None: no bias


class TinyCLIP(nn.Module):
    """A small CLIP: image and text towers projected into one L2-normalised space."""

    def __init__(self, cfg: CLIPConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CLIPConfig()
        self.visual = image_encoder(cfg.image)
        self.text = TextEncoder(cfg.text)
        self.image_projection = nn.Linear(self.visual.width, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text.width, cfg.embed_dim, bias=False)
        self.temperature = (LearnableTemperature(cfg.temperature) if cfg.learnable_temperature
                            else FixedTemperature(cfg.temperature))
        if cfg.logit_bias is not None:
            if isinstance(cfg.logit_bias, bool) or not isinstance(cfg.logit_bias, (int, float)):
                raise TypeError(f"logit_bias must be a number (SigLIP starts at -10) or None, got "
                                f"{type(cfg.logit_bias).__name__}")
            if not math.isfinite(cfg.logit_bias):
                raise ValueError(f"logit_bias must be finite, got {cfg.logit_bias}")
        # SigLIP's b, added to every logit (open_clip's name); None for CLIP, which has no bias (lesson 09)
        self.logit_bias = (nn.Parameter(torch.tensor(float(cfg.logit_bias))) if cfg.logit_bias is not None
                           else None)

    @property
    def logit_scale(self) -> torch.Tensor:
        """log(1/τ), CLIP's name for what it learns."""
        return self.temperature.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images (B, 3, H, W) as floats -> features (B, embed_dim)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point (see data.to_float), got {images.dtype}")
        x = self.image_projection(self.visual(images))   # (B, D)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Token ids (B, L), integers each row ending in <eot> (see text.Tokenizer) -> features (B, embed_dim).

        Bad ids raise here (TextEncoder.check_tokens): a row without <eot> would silently be read at position 0.
        """
        x = self.text_projection(self.text(tokens))      # (B, D); the encoder checks the ids
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        """(image_features (B, D), text_features (B, D), temperature ()) — ready for clip_loss."""
        return self.encode_image(images), self.encode_text(tokens), self.temperature()

    def similarity(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image (B_i, B_t), logits_per_text (B_t, B_i)): cosine similarities / τ."""
        image_features, text_features, temperature = self(images, tokens)
        logits_per_image = image_features @ text_features.T / temperature
        return logits_per_image, logits_per_image.T


def build_model(tokenizer, *, seed: int = 0, **overrides) -> TinyCLIP:
    """A seeded TinyCLIP sized for a tokenizer; keyword overrides go to CLIPConfig."""
    cfg = CLIPConfig(**overrides)
    # copies: the caller's config objects (text=..., image=...) are left as they were
    cfg = dataclasses.replace(cfg, image=dataclasses.replace(cfg.image),
                              text=dataclasses.replace(cfg.text, vocab_size=len(tokenizer),
                                                       context_length=tokenizer.context_length,
                                                       eot_id=tokenizer.eot_id))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCLIP(cfg)
