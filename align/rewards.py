"""Temporary group transforms (to be replaced by the helper's align/rewards.py)."""
from __future__ import annotations

import torch


def group_advantages(rewards, mask=None, scale="group", eps=1e-4):
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    r = torch.where(mask, rewards, 0.0)
    n = mask.sum(-1, keepdim=True).clamp(min=1)
    mean = r.sum(-1, keepdim=True) / n
    dev = torch.where(mask, rewards - mean, 0.0)
    var = (dev ** 2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
    std = var.sqrt()
    zero = (std.squeeze(-1) == 0)
    if scale == "group":
        adv = dev / (std + eps)
    elif scale == "batch":
        vals = rewards[mask]
        adv = dev / (vals.std() + eps if vals.numel() > 1 else eps)
    else:
        adv = dev
    adv = torch.where(mask & ~zero[:, None], adv, 0.0)
    return adv, zero

def rank_normalize(rewards, mask):
    mask = mask.bool()
    r = torch.where(mask, rewards, 0.0)
    below = ((r[:, :, None] > r[:, None, :]) & mask[:, None, :]).sum(-1).float()
    ties = ((r[:, :, None] == r[:, None, :]) & mask[:, None, :]).sum(-1).float() - 1
    n = mask.sum(-1, keepdim=True).float()
    rank = below + ties / 2
    return torch.where(n > 1, rank / (n - 1).clamp(min=1), torch.full_like(rank, 0.5)) * mask

def unlikeliness(rewards, mean_logps, mask=None, beta_rank=0.25):
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    lp = torch.nan_to_num(mean_logps, nan=float("-inf"))
    below = ((lp[:, :, None] > lp[:, None, :]) & mask[:, None, :]).sum(-1).float()
    ties = ((lp[:, :, None] == lp[:, None, :]) & mask[:, None, :]).sum(-1).float() - 1
    rank = below + ties / 2
    g = mask.sum(-1, keepdim=True).float()
    return rewards * (1 - beta_rank * rank / g)
