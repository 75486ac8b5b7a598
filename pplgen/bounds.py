"""Bounds over K particles' log-weights: log-mean-exp, its leave-one-out form and the effective sample size."""

import torch


def log_mean_exp(log_values, dim=0):
    """log (1/K) Σ_k exp(v_k), stable."""
    count = torch.tensor(float(log_values.shape[dim]), device=log_values.device, dtype=log_values.dtype)
    return torch.logsumexp(log_values, dim=dim) - count.log()


def effective_sample_size(log_weights):
    """1 / Σ_k w̃_k² of the self-normalized weights (particles along dim 0), averaged over factors."""
    normalized = torch.softmax(log_weights.detach(), dim=0)
    return (1.0 / normalized.pow(2).sum(0)).mean()


def leave_one_out_log_mean_exp(log_values):
    """For each k, log (1/K) Σ_j exp(v_j) with v_k replaced by the mean of the others.

    The geometric mean of the other weights stands in for w_k (Mnih & Rezende
    2016), so the result does not depend on particle k. Dim 0 holds the K ≥ 2
    particles; the result has the input's shape.
    """
    count = log_values.shape[0]
    if count < 2:
        raise ValueError(f"the leave-one-out estimate needs at least 2 particles, got {count}")
    others_mean = (log_values.sum(0, keepdim=True) - log_values) / (count - 1)
    # Row k of ``swapped`` is v with its k-th entry replaced by the mean of the others.
    eye = torch.eye(count, dtype=torch.bool, device=log_values.device).reshape(
        count, count, *[1] * (log_values.dim() - 1)
    )
    swapped = torch.where(eye, others_mean.unsqueeze(1), log_values.unsqueeze(0))
    return log_mean_exp(swapped, dim=1)


#: Floating dtypes that mixed precision computes in; log-densities are taken in float32 instead.
