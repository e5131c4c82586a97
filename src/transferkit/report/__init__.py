"""The run report: one self-contained HTML page, and the figures it inlines."""

from .figures import plot_confusion_matrix, plot_history
from .html import SECTIONS, write_report

__all__ = ["SECTIONS", "plot_confusion_matrix", "plot_history", "write_report"]
