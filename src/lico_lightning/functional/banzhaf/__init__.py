r"""Weighted Banzhaf interactions (FIxLIP-p) as weighted least squares, in pure torch.

A game :math:`\nu: 2^N \to \mathbb{R}` over :math:`n = n_I + n_T` players (image players first,
then text players) is approximated by the 2-additive game

.. math::
    \hat\nu_e(M) = e_0 + \sum_{i \in M} e_i + \sum_{\{i,j\} \subseteq M} e_{ij},

and FIxLIP-p (Baniecki et al., Definitions 4–5) is the explanation that minimises the
p-faithfulness

.. math::
    \mathfrak{F}_p(\nu, \hat\nu_e) = \sum_{M \subseteq N} p^{|M|} (1-p)^{n-|M|}
        \bigl(\nu(M) - \hat\nu_e(M)\bigr)^2
    = \mathbb{E}_{M \sim \mathbb{P}_p}\bigl[(\nu(M) - \hat\nu_e(M))^2\bigr],

i.e. a weighted least-squares problem whose design matrix has one row per coalition and one
column per basis element (constant, players, pairs). Its pairs are the weighted Banzhaf
interaction indices :math:`\sum_{T \supseteq \{i,j\}} p^{|T|-2} a(T)` (:math:`a` = Möbius
transform), and Theorem 1 turns it into the weighted Banzhaf values
:math:`e_i + p \sum_{j \neq i} e_{ij}`.

Because :math:`\mathbb{P}_p` is a product of Bernoulli(p) distributions, it factorises over the
modalities, :math:`\mathbb{P}_p = \mathbb{P}_{p,I} \otimes \mathbb{P}_{p,T}`. The cross-modal
estimator (Definition 7) samples :math:`m_I` image and :math:`m_T` text coalitions and uses all
:math:`m_I m_T` combinations. Every basis feature is a product of an image feature
:math:`\phi_I(u) \in \{1, u_i, u_i u_j\}` and a text feature :math:`\phi_T(v)`, and the weights
are products too, so the normal equations are entries of a Kronecker product:

.. math::
    G_{(\alpha\beta),(\alpha'\beta')} = (\Phi_I^\top W_I \Phi_I)_{\alpha\alpha'}
        (\Phi_T^\top W_T \Phi_T)_{\beta\beta'}, \qquad
    r_{(\alpha\beta)} = (\Phi_I^\top W_I Y W_T \Phi_T)_{\alpha\beta},

with :math:`Y` the :math:`m_I \times m_T` matrix of game values. The dense
``(m_I·m_T) × |basis|`` design matrix is never built (:func:`kron_normal_equations`).

Sampling follows the reference implementation: a coalition's size is Binomial(n, p) and the
coalition is uniform among those of that size, which is the same as keeping every player
independently with probability p (what :func:`sample_coalitions` does). When the budget of a
modality reaches :math:`2^n` its coalitions are enumerated with their exact weights instead.

References:
    H. Baniecki et al., *Explaining Similarity in Vision–Language Encoders with Weighted
    Banzhaf Interactions* (FIxLIP), §3, Appendix A–B.
    J.-L. Marichal, P. Mathonet, *Weighted Banzhaf power and interaction indexes through
    weighted approximations of games*, EJOR 211 (2011).

Layout (as POT's ``ot/bregman``): one algorithm family per private file, every public name
re-exported here and from :mod:`lico_lightning.functional`, so import paths stay stable:
``_coalitions`` (enumeration, kernel weights, sampling, budget split), ``_least_squares``
(basis, normal equations, solve), ``_exact`` (exact fit, Theorem 1, surrogate game values),
``_subsets`` (clique selection, greedy subsets), ``_estimators`` (cross-modal and model-agnostic
estimators), ``_common`` (the result type and input checks).
"""

from __future__ import annotations

from lico_lightning.functional.banzhaf._coalitions import (
    all_coalitions,
    banzhaf_kernel_weights,
    sample_coalitions,
    split_budget,
)
from lico_lightning.functional.banzhaf._common import (
    BanzhafInteractions,
)
from lico_lightning.functional.banzhaf._estimators import (
    cross_modal_banzhaf_interactions,
    model_agnostic_banzhaf_interactions,
    required_coalitions,
)
from lico_lightning.functional.banzhaf._exact import (
    approximate_game_values,
    banzhaf_values_from_interactions,
    exact_banzhaf_interactions,
)
from lico_lightning.functional.banzhaf._least_squares import (
    interaction_pairs,
    kron_normal_equations,
    normal_equations,
    solve_interactions,
)
from lico_lightning.functional.banzhaf._subsets import greedy_subsets, select_clique

__all__ = [
    "BanzhafInteractions",
    "all_coalitions",
    "approximate_game_values",
    "banzhaf_kernel_weights",
    "banzhaf_values_from_interactions",
    "cross_modal_banzhaf_interactions",
    "exact_banzhaf_interactions",
    "greedy_subsets",
    "interaction_pairs",
    "kron_normal_equations",
    "model_agnostic_banzhaf_interactions",
    "normal_equations",
    "required_coalitions",
    "sample_coalitions",
    "select_clique",
    "solve_interactions",
    "split_budget",
]
