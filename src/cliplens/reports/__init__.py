"""The eval and audit reports: ``report.json``, a per-image CSV, PNG charts and a static ``index.html``."""

from .html import write_audit_report, write_eval_report

__all__ = ["write_audit_report", "write_eval_report"]
