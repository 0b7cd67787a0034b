"""Incoming bank transfers: receipt, matching to invoices (seed 002), unapplied funds,
suspense, statement import (camt.053, CSV)."""
