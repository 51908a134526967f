"""Figures, tables and the HTML report; they only read results, never compute attacks."""
