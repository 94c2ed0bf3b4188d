"""The presentation layer: terminal tables and lines, JSON records, self-contained HTML reports, driven by schema.py."""
