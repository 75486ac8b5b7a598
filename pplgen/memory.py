"""Memory a step's particles need, estimated from the probe, against what the device has free.

A step over K particles holds, per particle, every site's distribution
parameters and log-density (its full shape, batch and event dims) and every
latent's value, in the model and in the guide. The probe ran the pair once on
the first batch, so :func:`particle_bytes` reads that lower bound off its
traces. :func:`check_particle_memory` refuses particle counts whose bound
alone exceeds the memory free on the device, before anything is allocated
(the networks' activations come on top, so a count that passes may still
fail; the step then reports the allocator's refusal in one line,
:func:`out_of_memory`).
"""

import math
from pathlib import Path

import torch

from pplgen.particles import is_sample_site


def particle_bytes(probe):
    """Bytes one particle holds at least: each site's parameters (its distribution's shape) and each latent's value."""
    total = 0
    for trace in (probe.model_trace, probe.guide_trace):
        for site in trace.nodes.values():
            if not is_sample_site(site):
                continue
            value = site["value"]
            itemsize = value.element_size() if torch.is_tensor(value) and value.is_floating_point() else 4
            total += math.prod(site["fn"].shape()) * itemsize
            if not site["is_observed"] and torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def available_bytes(device):
    """Memory free on ``device``: CUDA's free memory, or Linux's MemAvailable for the CPU (None where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if device.type != "cpu" or not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def check_particle_memory(probe, num_particles, device, engine_name):
    """Refuse ``num_particles`` whose values and densities alone need more memory than ``device`` has free."""
    per_particle = particle_bytes(probe)
    free = available_bytes(device)
    needed = per_particle * num_particles
    if free is None or needed <= free:
        return
    raise ValueError(
        f"{engine_name} with num_particles={num_particles} needs at least {needed / 1e9:.1f} GB for the particles' "
        f"site values and densities alone ({per_particle / 1e6:.3g} MB per particle at this batch size), but "
        f"{free / 1e9:.1f} GB are free on {device}: use at most {max(1, free // per_particle)} particles, or a "
        "smaller batch"
    )


def out_of_memory(error):
    """Whether ``error`` is an allocator's refusal (CUDA's out-of-memory error, or the CPU allocator's)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
