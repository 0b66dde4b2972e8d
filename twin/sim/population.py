"""The cells and the liquid they live in: the bag's true state, kept apart from any reading."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BioreactorState", "CellSuspension", "HarvestRecord", "Inoculum"]


@dataclass
class Inoculum:
    """What goes into the bag on day 0: selected T cells in basal medium (no IL-2, no activator)."""

    volume_ml: float = 100.0
    viable_cells_per_ml: float = 1.0e6  # TWIN_MODELS: activation at 1e6 cells/mL (Zhu 2018)
    viability_pct: float = 95.0


@dataclass
class BioreactorState:
    """True state of the bag (for tests and the twin; never on the wire).

    Cells are whole-bag counts so that volume changes (feeds, samples) move cells
    and concentrations consistently; concentrations are derived.
    """

    temperature_c: float
    do_um: float  # dissolved O2, µM
    ph: float
    volume_ml: float
    viable_cells: float
    dead_cells: float
    glucose_mm: float
    lactate_mm: float
    alkalinity_mm: float  # bicarbonate + non-bicarbonate buffer base
    pco2_mmhg: float  # dissolved CO2 as partial pressure
    il2_u_per_ml: float
    stimulus: float  # 0..1, strength of the CD3/CD28 signal given
    activated: float  # 0..1, fraction of cells activated (blasts)
    transduced_fraction: float  # fraction of viable cells carrying the transgene
    transduction_target: float  # fraction the current vector doses will reach
    heater_output: float = 0.0  # 0..1 duty of the heater
    contaminant_cells: float = 0.0  # bacteria in the bag (only after a contamination event)
    glutamine_mm: float = 2.0
    ammonia_mm: float = 0.0
    burst: float = 1.0  # 0..1, what is left of the proliferative burst of the last activation
    doublings: float = 0.0  # divisions (in doublings) since the last activation
    vector_copies: float = 0.0  # integrated vector copies per viable cell (over all cells)
    copies_target: float = 0.0  # copies per cell the current vector doses will reach
    cd4_fraction: float = 0.6  # CD4+ share of the viable T cells
    #: Share of viable cells expressing cargo delivered transiently (electroporation): it fades
    #: as the cargo is degraded and diluted by division; a part integrates (transduced_fraction).
    transient_fraction: float = 0.0
    headspace_o2: float = 0.20946  # O2 fraction of the gas above the liquid
    headspace_co2: float = 0.0004  # CO2 fraction of the gas above the liquid

    @property
    def viable_cells_per_ml(self) -> float:
        """Viable cell density (cells/mL)."""
        return self.viable_cells / self.volume_ml if self.volume_ml > 0.0 else 0.0

    @property
    def viability_pct(self) -> float:
        """Viable share of all cells (%), as a cell counter reports it."""
        total = self.viable_cells + self.dead_cells
        return 100.0 * self.viable_cells / total if total > 0.0 else 0.0


@dataclass(frozen=True)
class HarvestRecord:
    """The drained product: what release testing and the dose calculation start from."""

    t_s: float
    volume_ml: float
    viable_cells: float
    dead_cells: float
    transduced_fraction: float
    vector_copies: float = 0.0  # integrated copies per viable cell (release: <= 10)
    cd4_fraction: float = 0.6  # CD4+ share of the viable T cells

    @property
    def viable_cells_per_ml(self) -> float:
        """Viable cell density of the product (cells/mL)."""
        return self.viable_cells / self.volume_ml if self.volume_ml > 0.0 else 0.0

    @property
    def viability_pct(self) -> float:
        """Viable share of the product's cells (%)."""
        total = self.viable_cells + self.dead_cells
        return 100.0 * self.viable_cells / total if total > 0.0 else 0.0


@dataclass(frozen=True)
class CellSuspension:
    """Liquid and cells moved between vessels (bag -> electroporation chamber and back)."""

    volume_ml: float
    viable_cells: float
    dead_cells: float
    transduced_fraction: float
    vector_copies: float = 0.0
    transient_fraction: float = 0.0
