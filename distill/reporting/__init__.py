"""`distill report`: one self-contained report.html and report.json for a run (entry point: `report.write_report`).

`charts` (inline SVG), `html` (the page), `report` (figures read from the run folder).
"""
