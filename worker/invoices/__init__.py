"""Invoices: one per payment (pro-forma, final, later credit notes), gap-free numbers,
PDF and mail. Reacts to charge outcomes through the charge engine's hooks (worker/wiring.py)."""
