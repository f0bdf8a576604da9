"""What a finished run shows: the report (plots, HTML), comparison of runs, export.
"""

from __future__ import annotations

from evomp.reports._compare import (
    Comparison,
    RunFront,
    compare_runs,
    default_ref_point,
    format_table,
    load_run,
    metric_label,
    plot_fronts,
)
from evomp.reports._export import ExportResult, export_run, select_member
from evomp.reports._report import (
    Report,
    RunData,
    hypervolume_trace,
    load_run_data,
    pick_members,
    write_report,
)

__all__ = [
    "Comparison",
    "ExportResult",
    "Report",
    "RunData",
    "RunFront",
    "compare_runs",
    "default_ref_point",
    "export_run",
    "format_table",
    "hypervolume_trace",
    "load_run",
    "load_run_data",
    "metric_label",
    "pick_members",
    "plot_fronts",
    "select_member",
    "write_report",
]
