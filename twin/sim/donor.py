"""Donors: the patient's own T cells differ from one batch to the next.

Autologous starting material is the largest source of variation in CAR-T
manufacturing: the same process gives peak densities of 1.9-8.3e6/mL and
viabilities of 77-96 % across donors (J Biol Eng 2019 13:34, Table 1), CAR+
26-42 % for one lentiviral product (ARI-0001), and CD4:CD8 ratios from about
0.5 to 4 in apheresis material. A :class:`DonorProfile` carries the traits the
twin's kinetics read; :func:`draw_donor` draws one from documented distributions
by a donor seed, apart from the run's seed (which fixes only sensor noise), so
an ensemble can vary donors and noise independently.

The distributions are assumed shapes whose spreads are calibrated to the ranges
above (a test draws 400 donors and checks them): a process development group
replaces them with its own donors' fitted traits (``DonorProfile`` from the
apheresis data, or a fitted distribution).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["REFERENCE_DONOR", "DonorProfile", "draw_donor"]


@dataclass(frozen=True)
class DonorProfile:
    """What differs between donors' T cells (1.0 multipliers: the reference donor)."""

    #: Multiplies the activated cells' maximum growth rate (mu_max).
    growth_potential: float = 1.0
    #: Doublings one activation drives before the burst wanes (the culture's clock).
    division_capacity: float = 3.75
    #: Largest CAR+ fraction gene transfer reaches in these cells (transduction ceiling).
    transduction_ceiling: float = 0.40
    #: Multiplies the baseline death rate.
    death_factor: float = 1.0
    #: Viability of the selected cells on day 0 (%).
    starting_viability_pct: float = 95.0
    #: CD4+ share of the T cells on day 0.
    cd4_fraction: float = 0.6

    def as_record(self) -> dict[str, Any]:
        """The traits as the journal keeps them (rounded as a reader would quote them)."""
        return {k: round(v, 4) for k, v in asdict(self).items()}


#: The donor the twin is calibrated on: the reference process of TWIN_MODELS.md.
REFERENCE_DONOR = DonorProfile()

# Spreads of the donor distributions (assumed shapes; see the module docstring).
GROWTH_POTENTIAL_SD = 0.12  # lognormal sigma: peak density spread 1.9-8.3e6/mL with the rest
DIVISION_CAPACITY = (3.75, 0.45, 2.0, 6.0)  # normal mean, sd, clipped to [lo, hi] doublings
TRANSDUCTION = (0.40, 0.045, 0.20, 0.60)  # normal: ARI-0001 26-42 % CAR+ around MOI 5
DEATH_SD = 0.25  # lognormal sigma: end viabilities 77-96 % (J Biol Eng 2019)
VIABILITY = (93.0, 3.5, 75.0, 99.5)  # normal, %: fresh apheresis after selection
CD4_LOGIT = (0.4, 0.6)  # logit-normal: median CD4 share 0.6, CD4:CD8 about 0.5 to 4


def _clipped_normal(rng: random.Random, spec: tuple[float, float, float, float]) -> float:
    mean, sd, lo, hi = spec
    return min(hi, max(lo, rng.gauss(mean, sd)))


def draw_donor(seed: int) -> DonorProfile:
    """One donor drawn from the documented distributions (the same seed, the same donor)."""
    rng = random.Random(f"poc-twin donor {seed}")
    logit = rng.gauss(*CD4_LOGIT)
    return DonorProfile(
        growth_potential=math.exp(rng.gauss(0.0, GROWTH_POTENTIAL_SD)),
        division_capacity=_clipped_normal(rng, DIVISION_CAPACITY),
        transduction_ceiling=_clipped_normal(rng, TRANSDUCTION),
        death_factor=math.exp(rng.gauss(0.0, DEATH_SD)),
        starting_viability_pct=_clipped_normal(rng, VIABILITY),
        cd4_fraction=1.0 / (1.0 + math.exp(-logit)),
    )
