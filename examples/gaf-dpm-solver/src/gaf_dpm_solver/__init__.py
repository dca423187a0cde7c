"""gaf-dpm-solver: DPM-Solver++(2M) as a gaf scheduler plugin (docs/writing-plugins.md).

One entry point in ``pyproject.toml`` (group ``gaf.scheduler``, name ``dpm-solver++``)
registers :class:`DPMSolverPlusPlus2M`; gaf imports this package only when the
scheduler is built or shown. The maths and the ``new_state()`` protocol are documented
in :mod:`gaf_dpm_solver.solver`.
"""

from .solver import LOWER_ORDER_FINAL_BELOW, DPMSolverConfig, DPMSolverPlusPlus2M, half_log_snr

__all__ = ["DPMSolverConfig", "DPMSolverPlusPlus2M", "LOWER_ORDER_FINAL_BELOW", "half_log_snr"]
