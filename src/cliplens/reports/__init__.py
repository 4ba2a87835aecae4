"""The eval, audit and training reports: JSON, a per-image CSV, PNG charts and static HTML pages."""

from .html import write_audit_report, write_eval_report
from .training import write_train_report

__all__ = ["write_audit_report", "write_eval_report", "write_train_report"]
