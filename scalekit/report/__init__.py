"""The study report drawn: the HTML page, its figures (plotly) and their computed layouts."""

from .output import ReportResult, build_figures, build_report_data, write_report

__all__ = ["ReportResult", "build_figures", "build_report_data", "write_report"]
