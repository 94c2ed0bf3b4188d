"""Presenting evidence and diagnoses: terminal tables now; HTML reports to come."""
