"""Pluggable PSP adapters: a small protocol, frozen data in and out, a registry by name."""
