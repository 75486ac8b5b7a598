"""Model families, each a PyroModule with ``.model(...)`` and ``.guide(...)``."""

from pplgen.models.categorical_vae import CategoricalVAE
from pplgen.models.hierarchical import EightSchools, MultilevelRegression
from pplgen.models.lda import LDA, ProdLDA
from pplgen.models.sbn import HelmholtzMachine, SigmoidBeliefNet
from pplgen.models.vae import VAE

__all__ = [
    "LDA",
    "VAE",
    "CategoricalVAE",
    "EightSchools",
    "HelmholtzMachine",
    "MultilevelRegression",
    "ProdLDA",
    "SigmoidBeliefNet",
]
