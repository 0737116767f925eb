"""Nsight Compute's source page as csv (`ncu -i R --page source --print-source sass --csv`,
gzipped or not), read once for sass_stalls.py and sass_exec_diff.py."""
import csv
import gzip


class SourcePage:
    """rows[0] of the file names the kernel, rows[1] the columns; one row an SASS instruction."""

    def __init__(self, path):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            rows = list(csv.reader(f))
        self.kernel = rows[0][1] if len(rows[0]) > 1 else path
        self.header, self.rows = rows[1], rows[2:]
        self.col = {h: i for i, h in enumerate(self.header)}

    def num(self, row, name):
        """A counter of one instruction: ncu writes thousands with commas, and "" or "-" for none."""
        v = row[self.col[name]].replace(",", "")
        return float(v) if v not in ("", "-") else 0.0

    def sass(self, row):
        return row[self.col["Source"]].strip()
