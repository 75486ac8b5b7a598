"""Variance of the encoder gradient: ``iwae`` standard vs ``estimator="dreg"``.

::

    python benchmarks/dreg_variance.py --repeats 100 --json dreg_variance.json

A VAE (784-400-20, tanh) is trained briefly (``--epochs`` of ``svi`` on the
embedded MNIST digits, threshold binarized) and then held fixed. On one fixed
batch the K-particle IWAE gradient is drawn ``--repeats`` times per estimator
and K, each draw ``engine(vae.model, vae.guide, x).surrogate.backward()`` with
the gradients zeroed in between (the surrogate is summed over the batch).
For the encoder (guide) parameters it reports the total variance (the sum
over parameter elements of each element's variance across draws) and the
signal-to-noise ratio |mean| / std averaged over elements (Rainforth et al.
2018). Both estimators have the same expectation, so their mean gradients
should agree (cosine near 1). Both draw the same particles (same seed per K),
and DReG changes only the guide's gradient, so the decoder's variance columns
are equal: a control.
"""

import argparse
import json

import pyro
import torch

import pplgen
import pplgen.inference
from pplgen.models import VAE

ESTIMATORS = ("standard", "dreg")


class Moments:
    """Running mean and variance of flattened gradients, element by element (in float64)."""

    def __init__(self):
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, parameters):
        grad = torch.cat([p.grad.flatten() for p in parameters]).double()
        self.count += 1
        self.total = self.total + grad
        self.squares = self.squares + grad.pow(2)

    def summary(self):
        mean = self.total / self.count
        variance = (self.squares - self.count * mean.pow(2)).clamp(min=0) / (self.count - 1)
        std = variance.sqrt()
        informative = std > 0
        return {
            "total_variance": variance.sum().item(),
            "snr": (mean.abs()[informative] / std[informative]).mean().item(),
            "mean": mean,
        }


def gradient_moments(vae, x, num_particles, estimator, repeats):
    """Moments of ``repeats`` draws of the encoder's and the decoder's gradient."""
    engine = pplgen.inference.get("iwae", num_particles=num_particles, estimator=estimator)
    encoder, decoder = Moments(), Moments()
    for _ in range(repeats):
        vae.zero_grad(set_to_none=True)
        engine(vae.model, vae.guide, x).surrogate.backward()
        encoder.add(vae.encoder.parameters())
        decoder.add(vae.decoder.parameters())
    return encoder.summary(), decoder.summary()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[5, 50], help="values of K")
    parser.add_argument("--repeats", type=int, default=100, help="gradient draws per estimator and K")
    parser.add_argument("--batch-size", type=int, default=100, help="size of the fixed batch")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of svi before the gradients are drawn")
    parser.add_argument("--json", metavar="OUT", help="write the results to this file")
    args = parser.parse_args()

    x_train = pplgen.data.load("mnist", split="train", binarize="threshold")
    torch.manual_seed(0)
    vae = VAE(784, 20, (400,))
    pplgen.fit(vae, "svi", x_train, epochs=args.epochs, seed=0)
    x = x_train[: args.batch_size]
    print(
        f"VAE 784-400-20 after {args.epochs} epoch(s) of svi; fixed batch of {len(x)}; "
        f"{args.repeats} draws per estimator; torch {torch.__version__}, pyro {pyro.__version__}"
    )

    rows = []
    for num_particles in args.particles:
        encoder, decoder = {}, {}
        for estimator in ESTIMATORS:
            pyro.set_rng_seed(num_particles)
            encoder[estimator], decoder[estimator] = gradient_moments(vae, x, num_particles, estimator, args.repeats)
        cosine = torch.nn.functional.cosine_similarity(encoder["standard"]["mean"], encoder["dreg"]["mean"], dim=0)
        rows.append(
            {
                "K": num_particles,
                **{f"encoder_variance_{e}": encoder[e]["total_variance"] for e in ESTIMATORS},
                **{f"encoder_snr_{e}": encoder[e]["snr"] for e in ESTIMATORS},
                "variance_ratio": encoder["standard"]["total_variance"] / encoder["dreg"]["total_variance"],
                "snr_ratio": encoder["dreg"]["snr"] / encoder["standard"]["snr"],
                "mean_cosine": cosine.item(),
                **{f"decoder_variance_{e}": decoder[e]["total_variance"] for e in ESTIMATORS},
            }
        )

    print(
        f"\n{'K':>3} {'enc var std':>12} {'enc var dreg':>12} {'var ratio':>10} {'SNR std':>8} {'SNR dreg':>9} "
        f"{'SNR ratio':>9} {'mean cos':>8} {'dec var std':>12} {'dec var dreg':>12}"
    )
    for row in rows:
        print(
            f"{row['K']:>3} {row['encoder_variance_standard']:>12.4g} {row['encoder_variance_dreg']:>12.4g} "
            f"{row['variance_ratio']:>10.2f} {row['encoder_snr_standard']:>8.3f} {row['encoder_snr_dreg']:>9.3f} "
            f"{row['snr_ratio']:>9.2f} {row['mean_cosine']:>8.3f} {row['decoder_variance_standard']:>12.4g} "
            f"{row['decoder_variance_dreg']:>12.4g}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"arguments": vars(args), "results": rows}, out, indent=2)


if __name__ == "__main__":
    main()
