"""Model families, each a PyroModule with ``.model(...)`` and ``.guide(...)``."""

from pplgen.models.hierarchical import EightSchools, MultilevelRegression
from pplgen.models.lda import LDA, ProdLDA
from pplgen.models.sbn import HelmholtzMachine, SigmoidBeliefNet
from pplgen.models.vae import VAE

__all__ = ["LDA", "VAE", "EightSchools", "HelmholtzMachine", "MultilevelRegression", "ProdLDA", "SigmoidBeliefNet"]
