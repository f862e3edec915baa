"""The analysis report: figures, statistics and the study's claims re-tested, in one HTML page.

It reads only the gathered study (frame.StudyData: the results and history frames, the stored
spec), never the store.
"""

from cnnsweep.report.build import ReportFiles, build_report

__all__ = ["ReportFiles", "build_report"]
