"""Display currency: the ECB's euro reference rates, stored, and the rate in force at a moment.

Display only (seed: balances in EUR, shown in USD if the customer wants; always charged in
EUR): nothing here ever moves money or changes an amount on the ledger.
"""
