"""Test support code: archive builders, loopback HTTP servers."""
