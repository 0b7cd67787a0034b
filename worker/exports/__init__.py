"""Exports: an account's transactions and activity as .xlsx or CSV, streamed."""
