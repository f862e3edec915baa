"""The analysis report: figures, statistics and the report's claims re-tested, in one HTML page.

It reads only the results frame (and the per-epoch history), never the store directly.
"""

from cnnsweep.report.build import ReportFiles, StudyData, build_report, study_data

__all__ = ["ReportFiles", "StudyData", "build_report", "study_data"]
